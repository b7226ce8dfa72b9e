#!/usr/bin/env python
"""Compare models side by side on one test set: one table (Markdown + CSV), a trade-off plot.

    python tools/compare.py --configs A.yaml B.yaml ... [--weights W_A - ...] [--seeds N]
        [--test-set NAME] [--output-dir DIR] [--reference NAME]
        [--epochs E | --budget-minutes M [--budget-clock {wall,cpu}]] [--curve-points P]
        [--repeat-factor T] [--] [KEY VALUE ...]

For every config (and seed) it trains with the shared trainer (``tools/train_net.py``'s
machinery) unless a checkpoint is given ("-" = train), evaluates on the common test set
(default: the first config's first DATASETS.TEST), counts params and GFLOPs (paper convention and
fvcore) and times batch-1 inference on the current device. Outputs in ``--output-dir``:
``comparison.md`` (best bold, second-best underlined; per-class table), ``comparison.csv``,
``per_class.csv``, ``runs.csv`` (one line per seed) and ``comparison.png`` (primary metric vs.
GFLOPs, point area by params: the LMSF-A paper's Fig. 6).

Training protocol (the same for every model; the table states it):

* default: each config's ``SOLVER.MAX_ITER`` (or the one given as an override);
* ``--epochs E``: every model sees its training set E times, ``MAX_ITER = ceil(E * N_train /
  IMS_PER_BATCH)``; WARMUP_ITERS, STEPS, CHECKPOINT_PERIOD and EVAL_PERIOD move in proportion
  (the warm-up keeps at least min(WARMUP_ITERS, 100, MAX_ITER / 2) iterations, as Ultralytics');
* ``--budget-minutes M``: every model trains for M minutes of ``--budget-clock`` time ("wall",
  default; "cpu" = this process's CPU time, fair on a shared machine, with
  ``DATALOADER.NUM_WORKERS 0`` so that loading counts too); its LR schedule is planned to end
  with the budget and re-estimated as training goes (warm-up frozen at the first plan);
* ``--curve-points P``: P evaluations on the test set at even fractions of the budget (or of the
  iterations), the last being the final one; their time does not count as training time.
  Writes ``curves.csv`` and ``curves.png`` (primary metric vs training minutes, mean and
  spread over seeds);
* ``--repeat-factor T``: Detectron2's repeat-factor sampler (threshold T) for every model.

Each finished (model, seed) is saved in ``<output-dir>/runs/`` at once; rerunning the same
command skips finished runs and resumes an interrupted training from its last checkpoint, and
rerunning it with more ``--configs`` adds rows to the same table. ``--fresh`` recomputes
everything (earlier trainings are kept under a new name). Trailing ``KEY VALUE`` pairs override every config (e.g.
``SOLVER.MAX_ITER 200``); put them after ``--`` (or after any option other than ``--configs``,
``--weights`` and ``--names``, which take lists). With ``--seeds 2`` or more, a one-sided Welch t-test p-value of the
reference model (``--reference``; default: the first model whose config sets
``TEST.COMPARISON_REFERENCE True``, as LMSF-A's configs do) against each other model is added. Instance test sets get COCO mask/box AP, AR@100 and Ultralytics-protocol P/R; semantic
sets IoU/Dice; volumetric sets Dice/HD95 (chosen from the test set's evaluator type).
"""
import argparse
import logging
import os
import sys

import medseg_core  # noqa: F401  (compatibility shim before detectron2)


def _name_of(config: str) -> str:
    stem = os.path.splitext(os.path.basename(config))[0]
    return stem[: -len("_instant_test")] if stem.endswith("_instant_test") else stem


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", nargs="+", required=True, metavar="YAML", help="model configs to compare")
    p.add_argument("--weights", nargs="*", default=None, metavar="PTH",
                   help="one checkpoint per config, '-' to train that config (default: train all)")
    p.add_argument("--names", nargs="*", default=None, help="model names (default: config file names)")
    p.add_argument("--test-set", default=None, help="registered data set to evaluate every model on")
    p.add_argument("--output-dir", default="output/compare", help="where runs, tables and the plot go")
    p.add_argument("--seeds", type=int, default=1, help="train/evaluate each model with this many seeds")
    p.add_argument("--seed-base", type=int, default=0, help="first seed (seeds are base, base+1, ...)")
    p.add_argument("--reference", default=None,
                   help="model the Welch test compares against (default: the first config with TEST.COMPARISON_REFERENCE)")
    p.add_argument("--latency-runs", type=int, default=50, help="timed batch-1 runs (>= 20)")
    p.add_argument("--latency-warmup", type=int, default=10, help="untimed warm-up runs")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "fp16", "bf16"],
                   help="inference precision for latency (auto: FP16 on a GPU, FP32 on the CPU)")
    p.add_argument("--complexity-shape", default=None, metavar="C,H,W",
                   help="input shape for params/GFLOPs of every model, e.g. 3,640,640 (default: each "
                        "config's TEST.COMPLEXITY_INPUT_SHAPE)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--fresh", action="store_true", help="recompute runs that are already saved")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--epochs", type=float, default=0.0, help="train every model for E epochs of its training set")
    budget.add_argument("--budget-minutes", type=float, default=0.0, metavar="M",
                        help="train every model for M minutes (LR schedule planned to end with the budget)")
    p.add_argument("--budget-clock", default="wall", choices=["wall", "cpu"],
                   help="clock of the budget and of the reported training time (cpu: this process's CPU time)")
    p.add_argument("--curve-points", type=int, default=0, metavar="P",
                   help="learning curves: P evaluations on the test set at even fractions of training")
    p.add_argument("--repeat-factor", type=float, default=0.0, metavar="T",
                   help="repeat-factor sampler with threshold T for every model (rare classes seen more often)")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides applied to every config")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    import torch

    from detectron2.utils.logger import setup_logger

    from medseg_core.comparison import Comparison, ModelSpec, Protocol

    if args.threads:
        torch.set_num_threads(args.threads)
    setup_logger(name="detectron2")
    setup_logger(name="medseg_core")
    logging.getLogger("fvcore").setLevel(logging.WARNING)
    # no load_projects(): each model's config goes through load_config, which imports only the
    # projects that config names (lazy loading)
    opts = args.opts[1:] if args.opts[:1] == ["--"] else args.opts
    try:
        shape = [int(v) for v in args.complexity_shape.replace("x", ",").split(",")] if args.complexity_shape else None
    except ValueError:
        print(f"error: --complexity-shape {args.complexity_shape!r}: expected C,H,W (or C,D,H,W)", file=sys.stderr)
        return 2
    if len(opts) % 2:
        print(f"error: overrides must be KEY VALUE pairs, got {opts}", file=sys.stderr)
        return 2
    weights = args.weights or ["-"] * len(args.configs)
    names = args.names or [_name_of(c) for c in args.configs]
    if len(weights) != len(args.configs) or len(names) != len(args.configs):
        print("error: --weights and --names need one entry per config", file=sys.stderr)
        return 2
    for c in args.configs:
        if not os.path.isfile(c):
            print(f"error: {c}: config file does not exist", file=sys.stderr)
            return 2
    try:
        protocol = Protocol(epochs=args.epochs, budget_minutes=args.budget_minutes, clock=args.budget_clock,
                            curve_points=args.curve_points, repeat_threshold=args.repeat_factor)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    models = [ModelSpec(n, c, None if w in ("-", "", "none") else w) for n, c, w in zip(names, args.configs, weights)]
    # every config value and given checkpoint is checked before the first model trains
    from medseg_core.checkpoint import check_checkpoint_for_config
    from medseg_core.config import load_config

    for m in models:
        cfg = load_config(m.config, opts)
        if m.weights:
            check_checkpoint_for_config(cfg, m.weights)
    comp = Comparison(
        models, args.output_dir, test_set=args.test_set,
        seeds=[args.seed_base + i for i in range(max(args.seeds, 1))], opts=opts,
        reference=args.reference, latency_runs=args.latency_runs, latency_warmup=args.latency_warmup,
        precision=args.precision, complexity_shape=shape, fresh=args.fresh,
        progress=lambda msg: print(f"[compare] {msg}", flush=True), protocol=protocol,
    )
    print(f"[compare] {len(models)} models x {len(comp.seeds)} seeds on {comp.test_set} ({comp.task}); "
          f"reference: {comp.reference or 'none'}; output: {args.output_dir}", flush=True)
    print(f"[compare] protocol: {protocol.describe()}", flush=True)
    runs = comp.run()
    paths = comp.write_outputs(runs)
    with open(paths["markdown"]) as f:
        print(f.read())
    for k, v in paths.items():
        print(f"[compare] {k}: {v}")
    return 1 if comp.failed else 0


if __name__ == "__main__":
    from medseg_core.cli_errors import run_cli

    run_cli(main)

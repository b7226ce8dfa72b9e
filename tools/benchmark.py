#!/usr/bin/env python
"""Batch-1 latency / throughput of several configs on the current device, in one run.

    python tools/benchmark.py --configs configs/Endoscapes-InstanceSegmentation/lmsfa_n_640.yaml \\
        configs/Endoscapes-InstanceSegmentation/yolov8seg_n_640.yaml --size 640 640 --threads 2 \\
        --modes network e2e --variants fused unfused [--precision fp32 bf16] [--onnx] \\
        [--warmup 10 --runs 50 --repeats 3] [--json output/benchmark.json] [--opts KEY VALUE ...]

Rows, one per (config, variant, precision, mode):

* ``network``: backbone + neck + head (``complexity_forward``) on one real image (the config's
  first test image, or ``--image``) mapped by the model's test mapper, normalised and padded to
  ``--size`` (default: the largest test input, 640 x 640 for LMSF-A at 640) -- the figure the
  FLOP counts describe;
* ``e2e``: the whole Detectron2 forward ``model([inputs])`` on the same mapped image at its own
  size (the model pads it itself): pre-processing, network, decoding, NMS and masks at the
  original image size. Its cost depends on how many detections pass the model's test
  threshold (LMSF-A keeps everything above 0.001 for AP; ``--opts MODEL.LMSFA.TEST_CONF_THRESH
  0.25`` times a deployment setting), so weights matter: ``--weights`` gives one checkpoint per
  config (random weights otherwise, which the JSON records);
* ``onnx`` (``--onnx``): the fused network exported at ``--size`` (tools/export.py) and run in
  onnxruntime on the CPU with ``--threads`` intra-op threads.

Variants: ``fused`` (``model.fuse()``: Conv+BN and RepVGG re-parameterisation) and ``unfused``.
Precision: fp32 everywhere; fp16 / bf16 autocast on a GPU (bf16 also on the CPU when asked).

Timing: :func:`medseg_core.profiling.measure_latency` (no grad, warm-up, at least 20 timed runs,
CUDA-synchronised, wall clock), or with ``--clock cpu --threads 1`` the thread's CPU time per call
(steadier when other processes share the cores). Each row is measured ``--repeats`` times, the rows taking turns (order
reversed on every other repeat) so that drifting load on a shared machine hits all configs
alike; a row's statistics pool the timed runs of all repeats and its per-repeat medians are
kept. Throughput = 1000 / median latency (batch 1). ``--reference`` (default: the last config)
adds each row's latency ratio to the reference row of the same variant, precision and mode,
per repeat and pooled. Timings are never asserted in tests.
"""
from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

import medseg_core  # noqa: F401  (NumPy-2 / Pillow shim before detectron2)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
logger = logging.getLogger("medseg.benchmark")

MODES = ("network", "e2e", "onnx")


@dataclass
class Row:
    config: str
    name: str
    variant: str
    precision: str
    mode: str
    input_shape: List[int]
    params: int
    times_ms: List[float] = field(default_factory=list)
    repeat_medians_ms: List[float] = field(default_factory=list)
    extra: Dict = field(default_factory=dict)

    def key(self) -> Tuple[str, str, str]:
        return self.variant, self.precision, self.mode

    def stats(self) -> Dict[str, float]:
        t = sorted(self.times_ms)
        q4 = statistics.quantiles(t, n=4, method="inclusive")
        q20 = statistics.quantiles(t, n=20, method="inclusive")
        med = statistics.median(t)
        return {
            "median_ms": med, "mean_ms": statistics.fmean(t), "iqr_ms": q4[2] - q4[0],
            "p10_ms": q20[1], "p90_ms": q20[17], "min_ms": t[0], "max_ms": t[-1],
            "throughput_fps": 1000.0 / med if med > 0 else float("inf"), "runs": len(t),
        }


# ------------------------------------------------------------------------- measurement
def measure(fn: Callable[[], object], device: torch.device, warmup: int, runs: int,
            amp_dtype: Optional[torch.dtype], fused: bool, mode: str, clock: str = "wall") -> List[float]:
    """The one timing loop of this tool (swap here): per-call latencies in milliseconds, wall clock
    or (``clock="cpu"``, one thread on the CPU) this thread's CPU time."""
    from medseg_core.profiling import measure_latency

    return measure_latency(fn, device, warmup=warmup, runs=runs, amp_dtype=amp_dtype, fused=fused, mode=mode,
                           clock=clock).times_ms


def _amp(device: torch.device, precision: str) -> Optional[torch.dtype]:
    from medseg_core.profiling import autocast_dtype

    if precision == "fp16" and device.type != "cuda":
        raise ValueError("tools/benchmark.py: fp16 is timed on a GPU only (use fp32 or bf16 on the CPU)")
    return autocast_dtype(device, precision)


# ------------------------------------------------------------------------- setup
def fit_within(image: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Shrink a (C, h, w) image (bilinear, aspect kept) when it exceeds ``size``; else unchanged."""
    h, w = image.shape[-2:]
    r = min(size[0] / h, size[1] / w)
    if r >= 1:
        return image
    nh, nw = max(1, int(h * r)), max(1, int(w * r))
    out = torch.nn.functional.interpolate(image[None].float(), size=(nh, nw), mode="bilinear", align_corners=False)
    return out[0].round().clamp(0, 255).to(image.dtype)


def export_tool():
    """tools/export.py as a module (model building, padding, ONNX export and runtime are shared)."""
    import importlib.util

    name = "medseg_export_tool"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, "tools", "export.py"))
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
    return sys.modules[name]


def _sample_input(cfg, image: str) -> Tuple[Dict, object]:
    """One real image through the config's test mapper, and the export tool module."""
    export = export_tool()
    return export.check_images(cfg, "", [image] if image else [], 1)[0], export


def build_rows(args) -> Tuple[List[Tuple[Row, Callable[[], object], torch.device, Optional[torch.dtype], bool]], Dict]:
    from medseg_core.complexity import count_parameters
    from medseg_core.config import load_config

    weights = list(args.weights or [])
    if weights and len(weights) != len(args.configs):
        raise SystemExit("tools/benchmark.py: give one --weights entry per config (or none)")
    jobs = []
    info: Dict = {"weights": {}}
    for ci, cfg_file in enumerate(args.configs):
        opts = list(args.opts)
        if weights and weights[ci] not in ("", "none"):
            opts += ["MODEL.WEIGHTS", weights[ci]]
        if args.device:
            opts += ["MODEL.DEVICE", args.device]
        cfg = load_config(cfg_file, opts)
        name = os.path.splitext(os.path.basename(cfg_file))[0]
        info["weights"][name] = cfg.MODEL.WEIGHTS or "random initialisation"
        inputs, export = _sample_input(cfg, args.image)
        size = tuple(args.size) if args.size else export.default_input_size(cfg)
        base = export.build_eval_model(cfg, fuse=False)
        device = base.pixel_mean.device
        params = count_parameters(base)
        for variant in args.variants:
            model = copy.deepcopy(base).eval()
            if variant == "fused":
                if not callable(getattr(model, "fuse", None)):
                    logger.warning("%s has no fuse(): its 'fused' rows time the unfused model", name)
                else:
                    model.fuse()
            net = export.ExportableNetwork(model).eval()
            pad = export.raw_pad_value(model)
            images = export.pad_batch([fit_within(inputs["image"], size)], pad, size,
                                      export.size_divisibility(model)).to(device)
            for precision in args.precision:
                amp = _amp(device, precision)
                for mode in args.modes:
                    if mode == "onnx":
                        continue
                    if mode == "network":
                        fn = (lambda n=net, x=images: n(x))
                        shape = list(images.shape)
                    else:
                        batch = [dict(inputs, image=inputs["image"].to(device))]
                        fn = (lambda m=model, b=batch: m(b))
                        shape = [1] + list(inputs["image"].shape)
                    row = Row(cfg_file, name, variant, precision, mode, shape, params)
                    jobs.append((row, fn, device, amp, variant == "fused"))
            if "onnx" in args.modes and variant == "fused":
                onnx_dir = tempfile.mkdtemp(prefix="medseg-bench-onnx-")
                path = os.path.join(onnx_dir, f"{name}.onnx")
                onnx_net = export.ExportableNetwork(copy.deepcopy(model)).eval()
                export.make_export_friendly(onnx_net)
                t = time.perf_counter()
                with torch.no_grad():
                    names = export.output_names(cfg, len(onnx_net(images.cpu())))
                export.export_onnx(onnx_net.cpu(), images.cpu(), path, names, dynamic=False)
                logger.info("%s: exported ONNX in %.0fs", name, time.perf_counter() - t)
                runner = export.OnnxNetwork(path, threads=torch.get_num_threads())
                x_cpu = images.cpu()
                row = Row(cfg_file, name, "fused", "fp32", "onnx", list(images.shape), params,
                          extra={"runtime": "onnxruntime CPUExecutionProvider"})
                jobs.append((row, (lambda r=runner, x=x_cpu: r(x)), torch.device("cpu"), None, True))
    return jobs, info


# ------------------------------------------------------------------------- report
def add_ratios(rows: List[Row], reference: str) -> None:
    refs = {r.key(): r for r in rows if r.name == reference}
    for r in rows:
        ref = refs.get(r.key())
        if ref is None:
            continue
        r.extra["ratio_to_reference"] = statistics.median(r.times_ms) / statistics.median(ref.times_ms)
        r.extra["ratio_per_repeat"] = [a / b for a, b in zip(r.repeat_medians_ms, ref.repeat_medians_ms)]


def format_table(rows: List[Row], reference: str) -> str:
    head = (f"{'config':<28} {'variant':<8} {'prec':<5} {'mode':<8} {'input':<16} {'params':>9} "
            f"{'median ms':>10} {'IQR':>7} {'p10':>8} {'p90':>8} {'FPS':>7} {'x ' + reference[:14]:>17}")
    lines = [head, "-" * len(head)]
    for r in rows:
        s = r.stats()
        ratio = r.extra.get("ratio_to_reference")
        lines.append(
            f"{r.name:<28} {r.variant:<8} {r.precision:<5} {r.mode:<8} {'x'.join(map(str, r.input_shape[-2:])):<16} "
            f"{r.params:>9,} {s['median_ms']:>10.2f} {s['iqr_ms']:>7.2f} {s['p10_ms']:>8.2f} {s['p90_ms']:>8.2f} "
            f"{s['throughput_fps']:>7.2f} {('%.3f' % ratio) if ratio is not None else '-':>17}"
        )
    return "\n".join(lines)


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", nargs="+", required=True, help="config files to time")
    p.add_argument("--weights", nargs="*", default=[], help="one checkpoint per config ('none' for random weights)")
    p.add_argument("--size", nargs=2, type=int, metavar=("H", "W"), help="network input size (default: largest test input)")
    p.add_argument("--image", default="", help="image to time on (default: the first image of the config's test set)")
    p.add_argument("--modes", nargs="+", default=["network", "e2e"], choices=MODES)
    p.add_argument("--variants", nargs="+", default=["fused", "unfused"], choices=["fused", "unfused"])
    p.add_argument("--precision", nargs="+", default=None, choices=["fp32", "fp16", "bf16"],
                   help="default: fp32 on the CPU; fp32 fp16 bf16 on a GPU")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch's default)")
    p.add_argument("--device", default="", help="cpu or cuda (default: the config's MODEL.DEVICE)")
    p.add_argument("--clock", default="wall", choices=["wall", "cpu"], help="wall clock (default), or this "
                   "thread's CPU time (needs --threads 1; steadier on a shared machine)")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--runs", type=int, default=50, help="timed runs per row and repeat (>= 20)")
    p.add_argument("--repeats", type=int, default=3, help="measure every row this many times, taking turns")
    p.add_argument("--reference", default="", help="config name the ratios refer to (default: the last config)")
    p.add_argument("--json", default="", help="write the results here (default output/benchmark/<time>.json)")
    p.add_argument("--opts", default=[], nargs=argparse.REMAINDER, help="KEY VALUE overrides for every config")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="[%(asctime)s %(name)s] %(message)s", datefmt="%H:%M:%S")
    logger.setLevel(logging.INFO)
    if args.clock == "cpu" and args.threads != 1:
        raise ValueError("tools/benchmark.py: --clock cpu needs --threads 1 (thread CPU time is a latency only "
                         "when one thread does all the work)")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.repeats < 1:
        raise SystemExit("tools/benchmark.py: --repeats must be >= 1")
    if args.precision is None:
        gpu = (args.device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cuda")
        args.precision = ["fp32", "fp16", "bf16"] if gpu else ["fp32"]
    jobs, info = build_rows(args)
    reference = args.reference or os.path.splitext(os.path.basename(args.configs[-1]))[0]
    for rep in range(args.repeats):
        order = jobs if rep % 2 == 0 else list(reversed(jobs))
        for row, fn, device, amp, fused in order:
            times = measure(fn, device, args.warmup, args.runs, amp, fused, row.mode, args.clock)
            row.times_ms += times
            row.repeat_medians_ms.append(statistics.median(times))
            logger.info("repeat %d/%d %s %s %s %s: %.2f ms", rep + 1, args.repeats, row.name, row.variant,
                        row.precision, row.mode, statistics.median(times))
    rows = [j[0] for j in jobs]
    add_ratios(rows, reference)

    from medseg_core.profiling import device_description

    dev = jobs[0][2] if jobs else torch.device("cpu")
    header = (f"device: {device_description(dev)}; torch {torch.__version__}, {torch.get_num_threads()} intra-op "
              f"threads; batch 1; {args.warmup} warm-up + {args.runs} timed runs x {args.repeats} repeats per row; "
              f"{'wall-clock' if args.clock == 'wall' else 'thread-CPU-time'} latencies")
    table = format_table(rows, reference)
    print(header)
    print(table)
    for r in rows:
        if r.name != reference and "ratio_per_repeat" in r.extra:
            print(f"  {r.name} / {reference} ({r.variant}, {r.precision}, {r.mode}): pooled "
                  f"{r.extra['ratio_to_reference']:.3f}, per repeat "
                  + ", ".join(f"{x:.3f}" for x in r.extra["ratio_per_repeat"]))
    out = args.json or os.path.join(REPO, "output", "benchmark", time.strftime("%Y%m%d-%H%M%S") + ".json")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    result = {
        "device": device_description(dev), "torch": torch.__version__, "threads": torch.get_num_threads(),
        "python": platform.python_version(), "argv": list(argv) if argv is not None else sys.argv[1:],
        "warmup": args.warmup, "runs": args.runs, "repeats": args.repeats, "reference": reference,
        "clock": args.clock,
        "weights": info["weights"], "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "rows": [dict(config=r.config, name=r.name, variant=r.variant, precision=r.precision, mode=r.mode,
                      input_shape=r.input_shape, params=r.params, repeat_medians_ms=r.repeat_medians_ms,
                      **r.stats(), **r.extra) for r in rows],
    }
    with open(out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"JSON: {out}")
    return 0


if __name__ == "__main__":
    from medseg_core.cli_errors import run_cli

    run_cli(main)

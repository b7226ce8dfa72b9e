"""Running (or resuming) a comparison: train each (model, seed) under one protocol, evaluate it
on the common test set, count its params / GFLOPs and time its batch-1 inference.

Every finished run is written at once to ``<output>/runs/<model>__seed<k>.json``; a later
invocation with the same settings skips it, so a half-finished comparison resumes where it
stopped and a comparison is extended by rerunning it with more configs (an interrupted training
also resumes from its last checkpoint, its time budget and learning curve included). "The same
settings" is what each config changes from the defaults (keys added later with default values
do not invalidate saved runs), the weights, test set, seed, latency settings and protocol. A
training directory records its settings; one holding a training with other settings is never
reused or overwritten: the run fails with a message, or with ``fresh`` the old directory is
kept under a new name and the training starts again.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import time
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch

from .. import compat  # noqa: F401
from ..atomic import atomic_write_text

from ..engine.curves import plain_results
from .curves import curve_rows, summarize_curves, write_curve_csv
from .metrics import TASKS, task_of_dataset
from .plots import plot_curves, plot_tradeoff
from .protocol import Protocol, train_set_size
from .reports import render_markdown, write_csv, write_per_class_csv, write_runs_csv
from .stats import summarize, unify_flops_convention

logger = logging.getLogger("medseg_core.comparison")

__all__ = ["ModelSpec", "Comparison", "config_diff"]

@dataclass
class ModelSpec:
    name: str
    config: str
    weights: Optional[str] = None


def _sha(obj: Any) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _flatten(node, prefix: str = "") -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for k, v in node.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = list(v) if isinstance(v, tuple) else v
    return out


_DEFAULTS: Dict[str, Any] = {}


def config_diff(cfg, ignore: Sequence[str] = ("OUTPUT_DIR",)) -> Dict[str, Any]:
    """The keys whose value in ``cfg`` differs from the project defaults (what a config sets)."""
    if not _DEFAULTS:
        from ..config import get_project_cfg

        _DEFAULTS.update(_flatten(get_project_cfg()))
    return {k: v for k, v in _flatten(cfg).items()
            if k not in ignore and (k not in _DEFAULTS or _DEFAULTS[k] != v)}


class Comparison:
    """Runs (or resumes) the comparison of ``models`` on ``test_set`` into ``output_dir``.

    ``opts`` are Detectron2 ``KEY VALUE`` overrides applied to every model's config (e.g. a
    shorter ``SOLVER.MAX_ITER``). ``protocol`` is how much training every model gets (fixed
    iterations, epochs or minutes; learning curves; repeat-factor sampling).
    ``complexity_shape`` overrides TEST.COMPLEXITY_INPUT_SHAPE for all models (same counting
    input for everyone). ``reference``: the model the Welch test compares against (default: the
    first whose config sets TEST.COMPARISON_REFERENCE). ``progress`` receives one-line messages.
    """

    def __init__(
        self,
        models: List[ModelSpec],
        output_dir: str,
        test_set: Optional[str] = None,
        seeds: Sequence[int] = (0,),
        opts: Sequence[str] = (),
        reference: Optional[str] = None,
        latency_runs: int = 50,
        latency_warmup: int = 10,
        precision: str = "auto",
        complexity_shape: Optional[Sequence[int]] = None,
        fresh: bool = False,
        progress: Callable[[str], None] = print,
        protocol: Optional[Protocol] = None,
    ):
        names = [m.name for m in models]
        if len(set(names)) != len(names):
            raise ValueError(f"model names must be unique, got {names} (use --names)")
        if not models:
            raise ValueError("no model to compare")
        self.models = models
        self.output_dir = output_dir
        self.seeds = list(seeds)
        self.opts = [str(o) for o in opts]
        self.latency_runs, self.latency_warmup, self.precision = latency_runs, latency_warmup, precision
        self.complexity_shape = tuple(int(s) for s in complexity_shape) if complexity_shape else None
        self.fresh = fresh
        self.progress = progress
        self.protocol = protocol or Protocol()
        self._train_sizes: Dict[str, int] = {}
        self.failed: List[Tuple[str, int, str]] = []
        self.test_set = test_set or self._first_test_set()
        self.task = task_of_dataset(self.test_set)
        if self.protocol.repeat_threshold and self.task != "coco":
            raise ValueError(f"--repeat-factor samples by instance class; test set '{self.test_set}' is {self.task}")
        self.reference = reference if reference is not None else self._default_reference()
        if self.reference is not None and self.reference not in names:
            raise ValueError(f"reference model '{self.reference}' is not among {names}")

    # --------------------------------------------------------------- config
    def _first_test_set(self) -> str:
        cfg = self._cfg(self.models[0], 0, set_test=False)
        if not cfg.DATASETS.TEST:
            raise ValueError(f"{self.models[0].config}: DATASETS.TEST is empty; pass --test-set")
        return cfg.DATASETS.TEST[0]

    def _default_reference(self) -> Optional[str]:
        for m in self.models:
            if self._cfg(m, 0, set_test=False).TEST.COMPARISON_REFERENCE:
                return m.name
        return None

    def _cfg(self, model: ModelSpec, seed: int, set_test: bool = True, train: bool = False):
        from ..config import load_config

        opts = list(self.opts) + self.protocol.common_opts()
        opts += ["SEED", str(seed), "OUTPUT_DIR", self._train_dir(model, seed)]
        if set_test:
            opts += ["DATASETS.TEST", "()" if train else f"('{self.test_set}',)"]
        if self.complexity_shape:
            opts += ["TEST.COMPLEXITY_INPUT_SHAPE", str(self.complexity_shape)]
        cfg = load_config(model.config, opts, freeze=False)
        if train:
            cfg.merge_from_list(self.protocol.train_opts(cfg, self.test_set))
            cfg.TEST.EVAL_PERIOD = 0  # the test-set evaluation happens after training
        if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
            cfg.MODEL.DEVICE = "cpu"
        if set_test and not train:
            # every instance model also goes through the Ultralytics-protocol evaluator (P, R)
            from ..evaluation import DEFAULT_EVALUATORS_BY_TYPE, EVALUATOR_REGISTRY

            names = list(cfg.TEST.EVALUATORS) or list(DEFAULT_EVALUATORS_BY_TYPE[self.task])
            names += [n for n in TASKS[self.task].evaluators if n not in names and n in EVALUATOR_REGISTRY]
            cfg.TEST.EVALUATORS = names
        cfg.freeze()
        return cfg

    def _train_dir(self, model: ModelSpec, seed: int) -> str:
        return os.path.join(self.output_dir, "train", model.name, f"seed{seed}")

    def _run_path(self, model: ModelSpec, seed: int) -> str:
        return os.path.join(self.output_dir, "runs", f"{model.name}__seed{seed}.json")

    def _run_key(self, model: ModelSpec, seed: int) -> str:
        cfg = self._cfg(model, seed)
        weights = model.weights
        stamp = os.path.getmtime(weights) if weights and os.path.isfile(weights) else None
        return _sha({
            "cfg": config_diff(cfg), "weights": weights, "weights_mtime": stamp, "test": self.test_set,
            "seed": seed, "latency": [self.latency_runs, self.latency_warmup, self.precision],
            "protocol": None if weights else self.protocol.as_dict(),
        })

    def _train_size(self, cfg) -> int:
        key = json.dumps([list(cfg.DATASETS.TRAIN), bool(cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS)])
        if key not in self._train_sizes:
            self._train_sizes[key] = train_set_size(cfg)
        return self._train_sizes[key]

    # --------------------------------------------------------------- main loop
    def run(self) -> List[Dict[str, Any]]:
        """Compute every missing run; returns all run records (finished ones included)."""
        todo = [(m, s) for m in self.models for s in self.seeds]
        runs, failed = [], []
        for i, (m, s) in enumerate(todo, 1):
            tag = f"[{i}/{len(todo)}] {m.name} seed {s}"
            path, key = self._run_path(m, s), self._run_key(m, s)
            if not self.fresh and os.path.isfile(path):
                with open(path) as f:
                    rec = json.load(f)
                if rec.get("key") == key:
                    self.progress(f"{tag}: finished earlier, skipped ({path})")
                    runs.append(rec)
                    continue
                self.progress(f"{tag}: settings changed since the saved run, recomputing")
            t0 = time.perf_counter()
            try:
                rec = self.run_one(m, s, tag)
            except Exception as e:  # noqa: BLE001 - one failing model must not stop the others
                self.progress(f"{tag}: FAILED: {type(e).__name__}: {e}")
                logger.debug(traceback.format_exc())
                failed.append((m.name, s, f"{type(e).__name__}: {e}"))
                continue
            rec["key"] = key
            atomic_write_text(path, json.dumps(rec, indent=2, default=_json_default))
            self.progress(f"{tag}: done in {time.perf_counter() - t0:.0f} s -> {path}")
            runs.append(rec)
        self.failed = failed
        return runs

    def run_one(self, model: ModelSpec, seed: int, tag: str) -> Dict[str, Any]:
        from detectron2.modeling import build_model
        from detectron2.utils.env import seed_all_rng

        from ..engine.trainer import MedSegTrainer, load_weights_for_eval

        rec: Dict[str, Any] = {
            "name": model.name, "config": model.config, "seed": seed, "test_set": self.test_set,
            "task": self.task, "weights_given": bool(model.weights),
        }
        if not model.weights:
            rec["protocol"] = self.protocol.as_dict()
        weights = model.weights
        if not weights:
            weights, rec["train"] = self._train(model, seed, tag)
        cfg = self._cfg(model, seed)
        seed_all_rng(seed)
        net = build_model(cfg)
        load_weights_for_eval(cfg, net, weights)
        rec["weights"] = weights
        self.progress(f"{tag}: evaluating on {self.test_set} ({', '.join(cfg.TEST.EVALUATORS) or 'default'})")
        results = MedSegTrainer.test(cfg, net)
        rec["results"] = plain_results(results)
        rec["complexity"] = self._complexity(model, cfg)
        self.progress(f"{tag}: batch-1 latency ({self.latency_runs} runs after {self.latency_warmup} warm-up)")
        rec["latency"], rec["latency_network"] = self._latency(cfg, net)
        rec["env"] = {
            "torch": torch.__version__, "python": platform.python_version(),
            "threads": torch.get_num_threads(), "device": cfg.MODEL.DEVICE,
        }
        rec["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
        return rec

    def _train(self, model: ModelSpec, seed: int, tag: str) -> Tuple[str, Dict[str, Any]]:
        from detectron2.utils.env import seed_all_rng

        from ..engine.protocol import training_summary
        from ..engine.trainer import MedSegTrainer

        out = self._train_dir(model, seed)
        final = os.path.join(out, "model_final.pth")
        done = os.path.join(out, "train_time.json")
        cfg = self._cfg(model, seed, train=True)
        key = _sha(config_diff(cfg))
        self._claim_train_dir(out, key, cfg)
        if os.path.isfile(final) and os.path.isfile(done):
            with open(done) as f:
                info = json.load(f)
            self.progress(f"{tag}: training finished earlier ({final}), not repeated")
            return final, info
        seed_all_rng(seed)
        trainer = MedSegTrainer(cfg)
        trainer.resume_or_load(resume=True)
        resumed = trainer.start_iter > 0
        what = (f"for {cfg.SOLVER.BUDGET.MINUTES:g} min of {cfg.SOLVER.BUDGET.CLOCK} clock"
                if cfg.SOLVER.BUDGET.MINUTES > 0 else f"{cfg.SOLVER.MAX_ITER} iterations")
        self.progress(f"{tag}: training {what}" + (f" (resuming at {trainer.start_iter})" if resumed else "")
                      + f" into {out}")
        t0 = time.perf_counter()
        trainer.train()
        info = training_summary(trainer)
        n_train = self._train_size(cfg)
        info.update(
            wall_seconds_with_evaluations=time.perf_counter() - t0, resumed=resumed, device=cfg.MODEL.DEVICE,
            threads=torch.get_num_threads(), n_train=n_train, epochs=info["images_seen"] / max(n_train, 1),
            protocol=self.protocol.kind,
        )
        if not os.path.isfile(final):
            # a schedule whose last iteration is not saved by the periodic checkpointer
            trainer.checkpointer.save("model_final")
        atomic_write_text(done, json.dumps(info, default=_json_default))
        return final, info

    def _claim_train_dir(self, out: str, key: str, cfg) -> None:
        """Record the training settings in ``out``; a directory holding a training with other
        settings is never reused: error, or with ``fresh`` it is kept under a new name."""
        settings = os.path.join(out, "train_settings.json")
        old = None
        if os.path.isfile(settings):
            with open(settings) as f:
                old = json.load(f).get("key")
        stale = (old is not None and old != key) or (self.fresh and os.path.isdir(out) and os.listdir(out))
        if stale:
            if not self.fresh:
                raise RuntimeError(
                    f"{out}: holds a training with other settings; rerun with --fresh (the old training "
                    "is kept under another name) or choose another --output-dir"
                )
            kept = f"{out}.replaced-{time.strftime('%Y%m%d-%H%M%S')}"
            os.replace(out, kept)
            self.progress(f"{out}: earlier training kept as {kept}")
        if not os.path.isfile(settings) or stale:
            os.makedirs(out, exist_ok=True)
            atomic_write_text(settings, json.dumps({"key": key, "config_diff": config_diff(cfg)}, indent=2,
                                                   default=_json_default))

    def _complexity(self, model: ModelSpec, cfg) -> Dict[str, Any]:
        """Params/GFLOPs once per model (they do not depend on the seed), cached on disk."""
        path = os.path.join(self.output_dir, "complexity", f"{model.name}.json")
        key = _sha({"cfg": cfg.MODEL.dump(), "shape": list(cfg.TEST.COMPLEXITY_INPUT_SHAPE)})
        if os.path.isfile(path):
            with open(path) as f:
                c = json.load(f)
            if c.get("key") == key:
                return c
        try:
            from ..complexity import model_complexity

            c = model_complexity(cfg)
            c.pop("thop_ops_by_type", None)
        except Exception as e:  # noqa: BLE001 - a model the counters cannot trace still gets a row
            c = {"error": f"{type(e).__name__}: {e}"}
        c["key"] = key
        atomic_write_text(path, json.dumps(c, indent=2, default=_json_default))
        return c

    def _latency(self, cfg, net) -> Tuple[Dict[str, Any], Optional[Dict[str, Any]]]:
        from ..engine.trainer import MedSegTrainer
        from ..profiling import profile_model

        loader = MedSegTrainer.build_test_loader(cfg, self.test_set)
        sample = next(iter(loader))[0]
        lat = profile_model(net, sample, warmup=self.latency_warmup, runs=self.latency_runs, precision=self.precision)
        net_lat = None
        if callable(getattr(net, "complexity_forward", None)):
            net_lat = profile_model(net, sample, warmup=self.latency_warmup, runs=self.latency_runs,
                                    precision=self.precision, mode="network").as_dict()
        d = lat.as_dict()
        d["image_size"] = list(sample["image"].shape[-2:])
        return d, net_lat

    # --------------------------------------------------------------- outputs
    def info(self, runs: List[Dict[str, Any]]) -> Dict[str, Any]:
        lat = next((r["latency"] for r in runs if r.get("latency")), {})
        comp = next((r["complexity"] for r in runs if r.get("complexity", {}).get("convention")), {})
        clock = self.protocol.clock
        return {
            "protocol": self.protocol.describe(),
            "protocol_short": self.protocol.short(),
            "training": (
                f"train time = minutes of the {clock} clock"
                + (" (this process's CPU time)" if clock == "cpu" else "")
                + ", learning-curve evaluations excluded; images seen = iterations x IMS_PER_BATCH "
                "(a mosaic counts once); epochs = images seen / training images"
            ),
            "clock": clock,
            "test_set": self.test_set,
            "device": f"{lat.get('device', '?')} ({lat.get('device_name', '?')})",
            "threads": lat.get("threads", torch.get_num_threads()),
            "latency": (
                f"batch 1, whole model forward incl. its post-processing (data loading excluded), median of "
                f"{lat.get('runs', '?')} runs after {lat.get('warmup', '?')} warm-up, {lat.get('dtype', '?')}, "
                "fused where the model supports it"
            ),
            "complexity": (
                f"params and GFLOPs at input {_complexity_shapes(runs)}; paper convention = "
                f"{comp.get('convention', '?')}"
            ),
            "convention": comp.get("convention", "paper convention"),
            "seeds": ", ".join(str(s) for s in self.seeds),
            "torch": torch.__version__,
            "date": time.strftime("%Y-%m-%d %H:%M"),
        }

    def write_outputs(self, runs: List[Dict[str, Any]]) -> Dict[str, str]:
        """comparison.md, comparison.csv, per_class.csv, runs.csv and comparison.png."""
        order = [m.name for m in self.models]
        wanted = {(m.name, s) for m in self.models for s in self.seeds}
        runs = unify_flops_convention([r for r in runs if (r["name"], r["seed"]) in wanted], self.reference)
        summaries = summarize(runs, self.task, order, self.reference)
        info = self.info(runs)
        paths = {k: os.path.join(self.output_dir, f) for k, f in (
            ("markdown", "comparison.md"), ("csv", "comparison.csv"), ("per_class", "per_class.csv"),
            ("runs", "runs.csv"), ("plot", "comparison.png"), ("curves_csv", "curves.csv"),
            ("curves_plot", "curves.png"))}
        md = render_markdown(summaries, self.task, info, self.reference)
        if getattr(self, "failed", None):
            md += "\nFailed runs (rerun the same command to retry):\n" + "".join(
                f"- `{n}` seed {s}: {e}\n" for n, s, e in self.failed)
        atomic_write_text(paths["markdown"], md)
        write_csv(summaries, self.task, paths["csv"], info)
        write_per_class_csv(summaries, paths["per_class"])
        write_runs_csv(runs, self.task, paths["runs"])
        plot_tradeoff(summaries, self.task, paths["plot"], info)
        rows = curve_rows(runs, self.task, self.protocol.clock)
        if rows:
            write_curve_csv(rows, self.task, paths["curves_csv"])
            plot_curves(summarize_curves(rows, self.task, order), self.task, paths["curves_plot"], info)
        else:
            paths.pop("curves_csv")
            paths.pop("curves_plot")
        return paths


def _complexity_shapes(runs: List[Dict[str, Any]]) -> str:
    """The counting input shape: one for all models, or each model's own (e.g. 3D patches)."""
    shapes = {}
    for r in runs:
        shape = (r.get("complexity") or {}).get("input_shape")
        if shape:
            shapes.setdefault(r["name"], tuple(shape))
    if len(set(shapes.values())) <= 1:
        return str(next(iter(shapes.values()), ()))
    return "each model's own (" + ", ".join(f"{n} {s}" for n, s in shapes.items()) + ")"


def _json_default(o: Any) -> Any:
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, (set, tuple)):
        return list(o)
    return str(o)

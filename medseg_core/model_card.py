"""Model cards: what a config builds, what it costs, what it was trained on, and how it scores.

:func:`build_card` measures, for one config (and optionally one checkpoint):

* the architecture: every registry name the config selects (meta-architecture, backbone, heads,
  network, mapper, evaluators) and the parameters of each top-level module;
* size and cost: parameters unfused and fused, GFLOPs in the model's paper convention, as
  2 x legacy-thop ops and as fvcore MACs (``medseg_core.complexity``);
* the data: training and test sets with their image counts; the checkpoint's iteration;
* with a checkpoint: the metrics of the config's test sets (the trainer's own evaluation) and
  the batch-1 latency of the fused model on the first test image (``medseg_core.profiling``).

:func:`card_markdown` renders it, with the exact command that reproduces each number.
"""
from __future__ import annotations

import os
import shlex
import time
from typing import Any, Dict, List, Optional, Sequence

import torch

from .complexity import model_complexity
from .config_keys import config_value
from .projects import REGISTRY_KEYS

__all__ = ["build_card", "card_markdown"]


def _command(tool: str, config_file: str, args: Sequence[str] = (), opts: Sequence[str] = ()) -> str:
    parts = ["python", tool, "--config-file", config_file, *args, *[str(o) for o in opts]]
    return " ".join(shlex.quote(p) for p in parts)


def _architecture(cfg, model: torch.nn.Module) -> Dict[str, Any]:
    selected = []
    for key, _, _ in REGISTRY_KEYS:
        value = config_value(cfg, key)
        if value not in (None, "", [], ()):
            selected.append((key, ", ".join(value) if isinstance(value, (list, tuple)) else str(value)))
    parts = [(name, type(m).__name__, sum(p.numel() for p in m.parameters()))
             for name, m in model.named_children()]
    return {"selected": selected, "parts": parts}


def _dataset_rows(names: Sequence[str]) -> List[Dict[str, Any]]:
    from detectron2.data import DatasetCatalog, MetadataCatalog

    import medseg_core.data  # noqa: F401  (registers the data sets)

    rows = []
    for name in names:
        row: Dict[str, Any] = {"name": name}
        try:
            dicts = DatasetCatalog.get(name)
            row["images"] = len(dicts)
            if dicts and "annotations" in dicts[0]:
                row["instances"] = sum(len(d.get("annotations", [])) for d in dicts)
            meta = MetadataCatalog.get(name)
            row["evaluator_type"] = getattr(meta, "evaluator_type", "")
            classes = getattr(meta, "thing_classes", None) or getattr(meta, "stuff_classes", None)
            if classes:
                row["classes"] = list(classes)
        except (KeyError, OSError, ValueError) as e:
            row["error"] = str(e).splitlines()[0]
        rows.append(row)
    return rows


def _checkpoint_iteration(path: str) -> Optional[int]:
    from .checkpoint import safe_torch_load

    if not path.endswith((".pth", ".pt")):
        return None
    it = safe_torch_load(path).get("iteration")
    return int(it) if it is not None else None


def _flatten_metrics(results: Dict[str, Any], prefix: str = "") -> List[tuple]:
    rows = []
    for k, v in results.items():
        if isinstance(v, dict):
            rows += _flatten_metrics(v, f"{prefix}{k}/")
        elif isinstance(v, (int, float)):
            rows.append((f"{prefix}{k}", float(v)))
    return rows


def _latency(cfg, model, runs: int, warmup: int) -> Dict[str, Any]:
    from detectron2.data import DatasetCatalog

    from .data.mappers import build_dataset_mapper
    from .profiling import profile_model

    name = cfg.DATASETS.TEST[0]
    inputs = build_dataset_mapper(cfg, False, name)(DatasetCatalog.get(name)[0])
    result = profile_model(model, inputs, warmup=warmup, runs=runs, fuse=True, mode="model")
    return {"dataset": name, **result.as_dict()}


def build_card(
    cfg,
    config_file: str,
    opts: Sequence[str] = (),
    weights: Optional[str] = None,
    evaluate: bool = True,
    latency: bool = True,
    latency_runs: int = 20,
    latency_warmup: int = 3,
    with_fvcore: bool = True,
) -> Dict[str, Any]:
    """Measure the card of ``cfg`` (built from ``config_file`` + ``opts``), with the metrics and
    latency of ``weights`` when given. Evaluation uses the config's ``DATASETS.TEST``."""
    from detectron2.modeling import build_model

    from .engine.trainer import MedSegTrainer, load_weights_for_eval

    card: Dict[str, Any] = {"config_file": config_file, "opts": list(opts), "weights": weights,
                            "meta_architecture": cfg.MODEL.META_ARCHITECTURE}
    model = build_model(cfg)
    card["architecture"] = _architecture(cfg, model)
    card["complexity"] = model_complexity(cfg, fused=False, with_fvcore=with_fvcore)
    card["data"] = {"train": _dataset_rows(cfg.DATASETS.TRAIN), "test": _dataset_rows(cfg.DATASETS.TEST)}
    card["training"] = {"max_iter": cfg.SOLVER.MAX_ITER, "ims_per_batch": cfg.SOLVER.IMS_PER_BATCH,
                        "base_lr": cfg.SOLVER.BASE_LR, "optimizer": cfg.SOLVER.OPTIMIZER}
    if weights:
        card["training"]["checkpoint_iteration"] = _checkpoint_iteration(weights)
        load_weights_for_eval(cfg, model, weights)
        model.eval()
        if evaluate and cfg.DATASETS.TEST:
            t0 = time.perf_counter()
            results = MedSegTrainer.test(cfg, model)
            card["metrics"] = {"rows": _flatten_metrics(results), "seconds": time.perf_counter() - t0}
        if latency and cfg.DATASETS.TEST:
            try:
                card["latency"] = _latency(cfg, model, latency_runs, latency_warmup)
            except (ValueError, KeyError, RuntimeError) as e:  # e.g. a model this protocol cannot time
                card["latency"] = {"error": str(e).splitlines()[0]}
    return card


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1000 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def card_markdown(card: Dict[str, Any]) -> str:
    """The card as Markdown, each number with the command that reproduces it."""
    cfg_file, opts, weights = card["config_file"], card["opts"], card["weights"]
    c = card["complexity"]
    shape = "x".join(str(s) for s in c["input_shape"])
    size_cmd = _command("tools/model_card.py", cfg_file, [], opts)
    lines = [f"# Model card: `{os.path.basename(cfg_file)}`", "",
             f"Config `{cfg_file}`" + (f" with overrides `{' '.join(map(str, opts))}`" if opts else "")
             + f"; meta-architecture `{card['meta_architecture']}`.", ""]

    lines += ["## Architecture", "", "| config key | selects |", "|---|---|"]
    lines += [f"| `{k}` | `{v}` |" for k, v in card["architecture"]["selected"]]
    lines += ["", "| module | type | params |", "|---|---|---|"]
    lines += [f"| `{n}` | {t} | {p:,} |" for n, t, p in card["architecture"]["parts"]]

    fv = c.get("gflops_fvcore")
    lines += ["", "## Size and cost", "",
              f"At input {shape} (`TEST.COMPLEXITY_INPUT_SHAPE`), unfused model, as papers report it.", "",
              "| quantity | value | convention |", "|---|---|---|",
              f"| params | {c['params']:,} | all parameters |",
              f"| params (fused) | {c['params_fused']:,} | after `fuse()`" + ("" if c["has_fuse"] else " (model has none)") + " |",
              f"| GFLOPs (paper) | {c['gflops_paper']:.3f} | `{c['convention']}` (`MODEL.FLOPS_CONVENTION`) |",
              f"| GFLOPs thop2x | {c['gflops_thop2x']:.3f} | 2 x legacy-thop ops (Ultralytics' GFLOPs) |",
              f"| GMACs thop | {c['gmacs_thop']:.3f} | legacy-thop ops = multiply-accumulates |",
              f"| GFLOPs fvcore | " + (f"{fv:.3f}" if fv is not None else "not counted") + " | fvcore, one per MAC |",
              "", f"Command: `{size_cmd}`", ""]

    lines += ["## Data", ""]
    for split in ("train", "test"):
        rows = card["data"][split]
        lines += [f"{split.capitalize()} sets:", "", "| data set | images | instances | type | classes |",
                  "|---|---|---|---|---|"]
        for r in rows:
            if "error" in r:
                lines.append(f"| `{r['name']}` | not available: {r['error']} | | | |")
                continue
            classes = r.get("classes", [])
            shown = ", ".join(classes[:8]) + (f", ... ({len(classes)})" if len(classes) > 8 else "")
            lines.append(f"| `{r['name']}` | {r['images']:,} | {_fmt(r.get('instances', ''))} | "
                         f"{r.get('evaluator_type', '')} | {shown} |")
        lines.append("")
    t = card["training"]
    lines += [f"Training schedule of the config: {t['max_iter']:,} iterations of {t['ims_per_batch']} images, "
              f"{t['optimizer']} at base lr {t['base_lr']:g}: "
              f"`{_command('tools/train_net.py', cfg_file, [], opts)}`."]
    if weights:
        it = t.get("checkpoint_iteration")
        lines.append(f"Checkpoint `{weights}`" + (f": saved at iteration {it:,}." if it is not None else "."))
    lines.append("")

    lines += ["## Metrics", ""]
    if not weights:
        lines += ["No checkpoint given (`--weights`): nothing measured.", ""]
    elif "metrics" in card:
        m = card["metrics"]
        eval_cmd = _command("tools/train_net.py", cfg_file, ["--eval-only"], list(opts) + ["MODEL.WEIGHTS", weights])
        lines += [f"On `{', '.join(r['name'] for r in card['data']['test'])}` with the config's evaluators "
                  f"({m['seconds']:.0f} s):", "", "| metric | value |", "|---|---|"]
        lines += [f"| `{k}` | {v:.4g} |" for k, v in m["rows"]]
        lines += ["", f"Command: `{eval_cmd}`", ""]

    lines += ["## Latency", ""]
    lat = card.get("latency")
    if not weights:
        lines += ["No checkpoint given (`--weights`): nothing measured.", ""]
    elif lat is None:
        lines += ["Not measured (`--no-latency` or no test set).", ""]
    elif "error" in lat:
        lines += [f"Not measured: {lat['error']}", ""]
    else:
        card_cmd = _command("tools/model_card.py", cfg_file, ["--markdown", "--weights", weights], opts)
        lines += [f"Batch 1, whole forward (pre/post-processing included), fused = {lat['fused']}, "
                  f"{lat['dtype']}, {lat['threads']} thread(s) on {lat['device_name']}, first image of "
                  f"`{lat['dataset']}`, {lat['runs']} runs after {lat['warmup']} warm-up:", "",
                  "| median ms | IQR ms | min ms | max ms | FPS |", "|---|---|---|---|---|",
                  f"| {lat['median_ms']:.2f} | {lat['iqr_ms']:.2f} | {lat['min_ms']:.2f} | "
                  f"{lat['max_ms']:.2f} | {lat['fps']:.1f} |", "",
                  f"Command: `{card_cmd}` (wall clock; compare models with `tools/benchmark.py`, "
                  "which times them in turns).", ""]
    return "\n".join(lines)

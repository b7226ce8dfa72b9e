"""Side-by-side comparison of models on one test set (the engine of ``tools/compare.py``).

For each model (a config, optionally a trained checkpoint) and each seed, one *run*: train with
the shared trainer unless weights are given, evaluate on the common test set, count parameters
and GFLOPs (:func:`medseg_core.complexity.model_complexity`) and time batch-1 inference
(:mod:`medseg_core.profiling`). Every finished run is written at once to
``<output>/runs/<model>__seed<k>.json``; a later invocation with the same settings skips it, so
a half-finished comparison resumes where it stopped (an interrupted training also resumes from
its last checkpoint).

The table is built from the persisted runs only, and the metric columns are data-driven: the
test set's ``evaluator_type`` picks a :class:`TaskSpec` (instances: COCO mask/box AP, AR@100 and
the Ultralytics-protocol precision/recall at the best-F1 confidence; semantic: IoU/Dice;
volumes: Dice/HD95), and each column names where in the evaluators' results its value is read.
Best and second-best values of every ranked column are marked as in the LMSF-A paper's tables
(bold / underlined). With two or more seeds, each model's primary metric is compared with the
reference model (LMSF-A) by a one-sided Welch t-test.
"""
from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import os
import platform
import statistics
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch

from . import compat  # noqa: F401

logger = logging.getLogger("medseg_core.comparison")

__all__ = [
    "Column", "TaskSpec", "TASKS", "EFFICIENCY_COLUMNS", "precision_recall_at_best_f1", "extract_metrics",
    "rank_marks", "welch_one_sided_p", "summarize", "render_markdown", "write_csv", "plot_tradeoff",
    "ModelSpec", "Comparison", "task_of_dataset", "unify_flops_convention",
]

NAN = float("nan")


# ---------------------------------------------------------------------------------------------
# columns
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Column:
    """One table column: where its value comes from and which direction is better.

    ``sources``: candidate (section, key) paths into a run record, the first one present wins:
    "results.<section>" reads the evaluators' output, "complexity" / "latency" / "train" the
    run's own measurements. ``fn`` instead computes the value from the whole run record.
    ``higher_is_better`` None leaves the column unranked.
    """

    key: str
    header: str
    sources: Tuple[Tuple[str, str], ...] = ()
    higher_is_better: Optional[bool] = True
    fmt: str = "{:.1f}"
    scale: float = 1.0
    fn: Optional[Callable[[Dict[str, Any]], float]] = None
    # False for numbers that cannot vary between seeds (params, FLOPs): shown without "± 0"
    per_seed: bool = True

    def read(self, run: Dict[str, Any]) -> float:
        if self.fn is not None:
            v = self.fn(run)
            return float(v) * self.scale if _is_number(v) else NAN
        for section, name in self.sources:
            node: Any = run
            for part in section.split("."):
                node = node.get(part) if isinstance(node, dict) else None
            if isinstance(node, dict) and name in node and _is_number(node[name]):
                return float(node[name]) * self.scale
        return NAN


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def precision_recall_at_best_f1(results: Dict[str, Any]) -> Tuple[float, float]:
    """Precision and recall (percent) at the confidence maximising F1.

    The one place these two numbers come from: the Ultralytics-protocol evaluator
    ("ultralytics_segm", mask task), which the LMSF-A paper's P / R columns follow. NaN when
    that evaluator did not run.
    """
    u = results.get("ultralytics_segm") if isinstance(results, dict) else None
    if not isinstance(u, dict):
        return NAN, NAN
    return float(u.get("P", NAN)), float(u.get("R", NAN))


def _pr_column(key: str, header: str, index: int) -> Column:
    return Column(key, header, fn=lambda run: precision_recall_at_best_f1(run.get("results", {}))[index])


@dataclass(frozen=True)
class TaskSpec:
    """Metric columns, primary metric and per-class keys of one kind of test set."""

    name: str
    metric_columns: Tuple[Column, ...]
    primary: str
    # (results section, key prefix) whose "<prefix><class>" entries give the per-class table
    per_class: Tuple[Tuple[str, str], ...]
    per_class_header: str
    evaluators: Tuple[str, ...]


def _r(*paths: str) -> Tuple[Tuple[str, str], ...]:
    out = []
    for p in paths:
        section, key = p.split(":", 1)
        out.append(("results." + section, key))
    return tuple(out)


TASKS: Dict[str, TaskSpec] = {
    "coco": TaskSpec(
        name="instance segmentation",
        metric_columns=(
            Column("mask_map50", "mask mAP50", _r("segm:AP50")),
            Column("mask_map", "mask mAP50-95", _r("segm:AP")),
            Column("box_map", "box mAP50-95", _r("bbox:AP")),
            _pr_column("precision", "P", 0),
            _pr_column("recall", "R", 1),
            Column("ar100", "AR@100", _r("segm:AR@100")),
        ),
        primary="mask_map",
        per_class=(("segm", "AP-"),),
        per_class_header="mask AP (COCO, IoU 0.50:0.95) per class",
        evaluators=("coco", "ultralytics_segm"),
    ),
    "sem_seg": TaskSpec(
        name="semantic segmentation",
        metric_columns=(
            Column("iou", "IoU", _r("sem_seg:per_image_IoU@model_res", "sem_seg:per_image_mIoU@model_res", "sem_seg:mIoU")),
            Column("dice", "Dice", _r("sem_seg:per_image_F1@model_res", "sem_seg:per_image_mDice@model_res",
                                      "sem_seg:dataset_mDice@orig_res", "sem_seg:mDice")),
            Column("dataset_iou", "IoU (dataset)", _r("sem_seg:dataset_IoU@orig_res", "sem_seg:dataset_mIoU@orig_res",
                                                      "sem_seg:mIoU")),
            Column("dataset_dice", "Dice (dataset)", _r("sem_seg:dataset_Dice@orig_res", "sem_seg:dataset_mDice@orig_res",
                                                        "sem_seg:mDice")),
        ),
        primary="iou",
        per_class=(("sem_seg", "per_image_IoU@model_res-"), ("sem_seg", "IoU-")),
        per_class_header="IoU per class",
        evaluators=("sem_seg",),
    ),
    "volume": TaskSpec(
        name="volumetric segmentation",
        metric_columns=(
            Column("dice", "mDice", _r("volume:mDice")),
            Column("hd95", "mHD95", _r("volume:mHD95"), higher_is_better=False, fmt="{:.2f}"),
        ),
        primary="dice",
        per_class=(("volume", "Dice-"),),
        per_class_header="Dice per class",
        evaluators=("volume",),
    ),
}

EFFICIENCY_COLUMNS: Tuple[Column, ...] = (
    Column("params_m", "Params (M)", (("complexity", "params"),), False, "{:.2f}", 1e-6, per_seed=False),
    Column("gflops_paper", "GFLOPs (paper conv.)", (("complexity", "gflops_paper"),), False, "{:.1f}", per_seed=False),
    Column("gflops_fvcore", "GFLOPs (fvcore)", (("complexity", "gflops_fvcore"),), False, "{:.1f}", per_seed=False),
    Column("latency_ms", "Latency (ms)", (("latency", "median_ms"),), False, "{:.1f}"),
    Column("fps", "FPS", (("latency", "fps"),), True, "{:.1f}"),
    # network alone (complexity_forward: no pre/post-processing) where a model defines it, the
    # scope of the LMSF-A paper's FPS ("excludes data loading and postprocessing")
    Column("net_latency_ms", "Net latency (ms)", (("latency_network", "median_ms"),), False, "{:.1f}"),
    Column("train_min", "Train time (min)", (("train", "seconds"),), None, "{:.1f}", 1 / 60.0),
)


def task_of_dataset(dataset_name: str) -> str:
    from detectron2.data import MetadataCatalog

    etype = MetadataCatalog.get(dataset_name).get("evaluator_type", None)
    if etype not in TASKS:
        raise ValueError(
            f"test set '{dataset_name}' has evaluator_type {etype!r}; the comparison supports {sorted(TASKS)}"
        )
    return etype


def extract_metrics(run: Dict[str, Any], task: str) -> Dict[str, float]:
    """Every column's value for one run record (NaN where a source is missing)."""
    cols = list(TASKS[task].metric_columns) + list(EFFICIENCY_COLUMNS)
    return {c.key: c.read(run) for c in cols}


def per_class_values(run: Dict[str, Any], task: str) -> Dict[str, float]:
    res = run.get("results", {})
    for section, prefix in TASKS[task].per_class:
        sec = res.get(section)
        if isinstance(sec, dict):
            vals = {k[len(prefix):]: float(v) for k, v in sec.items() if k.startswith(prefix) and _is_number(v)}
            if vals:
                return vals
    return {}


# ---------------------------------------------------------------------------------------------
# ranking and statistics
# ---------------------------------------------------------------------------------------------
def rank_marks(values: Sequence[float], higher_is_better: Optional[bool]) -> List[str]:
    """"best" / "second" / "" per value (ties share a mark; NaN is never marked; a column where
    every row has the same value is not marked).

    As in the paper's tables: the best value bold, the second-best underlined. An unranked
    column (``higher_is_better`` None) gets no marks.
    """
    marks = [""] * len(values)
    if higher_is_better is None:
        return marks
    finite = sorted({v for v in values if _is_number(v) and math.isfinite(v)}, reverse=bool(higher_is_better))
    if not finite:
        return marks
    if len(finite) == 1 and sum(1 for v in values if _is_number(v) and math.isfinite(v)) > 1:
        return marks  # all rows tie: nothing to single out
    best = finite[0]
    second = finite[1] if len(finite) > 1 else None
    for i, v in enumerate(values):
        if _is_number(v) and math.isfinite(v):
            if v == best:
                marks[i] = "best"
            elif second is not None and v == second:
                marks[i] = "second"
    return marks


def welch_one_sided_p(reference: Sequence[float], other: Sequence[float]) -> float:
    """p-value of the one-sided Welch t-test "mean(reference) > mean(other)".

    NaN with fewer than two values on either side or when both samples have zero variance.
    """
    from scipy import stats

    a = [float(v) for v in reference if math.isfinite(float(v))]
    b = [float(v) for v in other if math.isfinite(float(v))]
    if len(a) < 2 or len(b) < 2:
        return NAN
    if statistics.variance(a) == 0 and statistics.variance(b) == 0:
        return NAN
    return float(stats.ttest_ind(a, b, equal_var=False, alternative="greater").pvalue)


@dataclass
class ModelSummary:
    name: str
    config: str
    n: int
    mean: Dict[str, float]
    std: Dict[str, float]
    values: Dict[str, List[float]]
    per_class: Dict[str, float]
    p_value: float = NAN
    notes: List[str] = field(default_factory=list)


def summarize(runs: List[Dict[str, Any]], task: str, order: Sequence[str], reference: Optional[str]) -> List[ModelSummary]:
    """Group run records by model (in ``order``), mean/std over seeds, Welch p vs ``reference``."""
    by_model: Dict[str, List[Dict[str, Any]]] = {}
    for r in runs:
        by_model.setdefault(r["name"], []).append(r)
    out = []
    primary = TASKS[task].primary
    for name in order:
        rs = sorted(by_model.get(name, []), key=lambda r: r["seed"])
        if not rs:
            continue
        vals: Dict[str, List[float]] = {}
        for r in rs:
            for k, v in extract_metrics(r, task).items():
                vals.setdefault(k, []).append(v)
        mean = {k: _nanmean(v) for k, v in vals.items()}
        std = {k: (statistics.stdev([x for x in v if math.isfinite(x)]) if sum(math.isfinite(x) for x in v) > 1 else NAN)
               for k, v in vals.items()}
        pcs: Dict[str, List[float]] = {}
        for r in rs:
            for c, v in per_class_values(r, task).items():
                pcs.setdefault(c, []).append(v)
        notes = []
        if any(r.get("train", {}).get("resumed") for r in rs):
            notes.append("training resumed from a checkpoint: time covers the last part only")
        if any(r.get("weights_given") for r in rs):
            notes.append("given checkpoint (not trained here)")
        if any(r.get("complexity", {}).get("error") for r in rs):
            notes.append("complexity: " + rs[0]["complexity"]["error"])
        out.append(ModelSummary(name, rs[0]["config"], len(rs), mean, std, vals,
                                {c: _nanmean(v) for c, v in pcs.items()}, notes=notes))
    if reference is not None:
        ref = next((s for s in out if s.name == reference), None)
        if ref is not None:
            for s in out:
                if s is not ref:
                    s.p_value = welch_one_sided_p(ref.values.get(primary, []), s.values.get(primary, []))
    return out


def _nanmean(v: Sequence[float]) -> float:
    f = [x for x in v if _is_number(x) and math.isfinite(x)]
    return statistics.fmean(f) if f else NAN


# ---------------------------------------------------------------------------------------------
# output
# ---------------------------------------------------------------------------------------------
def _columns(task: str) -> List[Column]:
    return list(TASKS[task].metric_columns) + list(EFFICIENCY_COLUMNS)


def _fmt(col: Column, mean: float, std: float, n: int) -> str:
    if not math.isfinite(mean):
        return "–"
    s = col.fmt.format(mean)
    if n > 1 and col.per_seed and math.isfinite(std):
        s += " ± " + col.fmt.format(std)
    return s


def render_markdown(summaries: List[ModelSummary], task: str, info: Dict[str, Any], reference: Optional[str]) -> str:
    """The comparison as a Markdown document: header, main table (marks), per-class table."""
    cols = _columns(task)
    marks = {c.key: rank_marks([s.mean.get(c.key, NAN) for s in summaries], c.higher_is_better) for c in cols}
    show_p = reference is not None and any(math.isfinite(s.p_value) for s in summaries)
    lines = [f"# Model comparison: {TASKS[task].name} on `{info.get('test_set', '?')}`", ""]
    for k in ("device", "threads", "latency", "complexity", "seeds", "torch", "date"):
        if k in info:
            lines.append(f"- **{k}**: {info[k]}")
    lines += [
        "- **marks**: **bold** = best, <u>underlined</u> = second best (ties share a mark; train time unranked)",
    ]
    if any(s.n > 1 for s in summaries):
        lines.append("- values are mean ± sample std over the seeds")
    if show_p:
        lines.append(
            f"- **p**: one-sided Welch t-test that `{reference}` has a higher "
            f"{next(c.header for c in cols if c.key == TASKS[task].primary)} than the row's model"
        )
    lines.append("")
    header = ["Model", "Seeds"] + [c.header for c in cols] + (["p"] if show_p else [])
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|")
    for i, s in enumerate(summaries):
        cells = [s.name + (" (ref.)" if s.name == reference and show_p else ""), str(s.n)]
        for c in cols:
            text = _fmt(c, s.mean.get(c.key, NAN), s.std.get(c.key, NAN), s.n)
            m = marks[c.key][i]
            cells.append(f"**{text}**" if m == "best" else f"<u>{text}</u>" if m == "second" else text)
        if show_p:
            cells.append("–" if not math.isfinite(s.p_value) else f"{s.p_value:.3g}")
        lines.append("| " + " | ".join(cells) + " |")
    notes = [f"- `{s.name}`: {n}" for s in summaries for n in s.notes]
    if notes:
        lines += ["", "Notes:"] + notes
    classes = list(dict.fromkeys(c for s in summaries for c in s.per_class))  # data set order
    if classes:
        lines += ["", f"## {TASKS[task].per_class_header}", ""]
        lines.append("| Model | " + " | ".join(classes) + " |")
        lines.append("|---|" + "|".join(["---:"] * len(classes)) + "|")
        pc_marks = {c: rank_marks([s.per_class.get(c, NAN) for s in summaries], True) for c in classes}
        for i, s in enumerate(summaries):
            cells = []
            for c in classes:
                v = s.per_class.get(c, NAN)
                text = "–" if not math.isfinite(v) else f"{v:.1f}"
                m = pc_marks[c][i]
                cells.append(f"**{text}**" if m == "best" else f"<u>{text}</u>" if m == "second" else text)
            lines.append(f"| {s.name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_csv(summaries: List[ModelSummary], task: str, path: str, info: Dict[str, Any]) -> None:
    """One row per model: every column's mean and std, the p-value and the measurement context."""
    cols = _columns(task)
    header = ["model", "config", "seeds"]
    for c in cols:
        header += [c.key, c.key + "_std"]
    header += ["p_value_vs_reference", "test_set", "device", "threads"]
    _atomic_write(path, _csv_text([header] + [
        [s.name, s.config, s.n]
        + [x for c in cols for x in (_num(s.mean.get(c.key, NAN)), _num(s.std.get(c.key, NAN)))]
        + [_num(s.p_value), info.get("test_set", ""), info.get("device", ""), info.get("threads", "")]
        for s in summaries
    ]))


def write_per_class_csv(summaries: List[ModelSummary], path: str) -> None:
    classes = list(dict.fromkeys(c for s in summaries for c in s.per_class))
    _atomic_write(path, _csv_text([["model"] + classes] + [
        [s.name] + [_num(s.per_class.get(c, NAN)) for c in classes] for s in summaries
    ]))


def write_runs_csv(runs: List[Dict[str, Any]], task: str, path: str) -> None:
    cols = _columns(task)
    rows = [["model", "seed"] + [c.key for c in cols]]
    for r in sorted(runs, key=lambda r: (r["name"], r["seed"])):
        m = extract_metrics(r, task)
        rows.append([r["name"], r["seed"]] + [_num(m[c.key]) for c in cols])
    _atomic_write(path, _csv_text(rows))


def _num(v: float) -> str:
    return "" if not (_is_number(v) and math.isfinite(v)) else f"{v:.10g}"


def _csv_text(rows: List[List[Any]]) -> str:
    import io

    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()


def _atomic_write(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def plot_tradeoff(summaries: List[ModelSummary], task: str, path: str, info: Dict[str, Any]) -> bool:
    """Primary metric against GFLOPs (paper convention), point area by parameter count (the
    LMSF-A paper's Fig. 6). Returns False when no model has both numbers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    primary = TASKS[task].primary
    ycol = next(c for c in TASKS[task].metric_columns if c.key == primary)
    pts = [(s.name, s.mean.get("gflops_paper", NAN), s.mean.get(primary, NAN), s.mean.get("params_m", NAN))
           for s in summaries]
    pts = [p for p in pts if math.isfinite(p[1]) and math.isfinite(p[2])]
    fig, ax = plt.subplots(figsize=(7, 5), dpi=120)
    if pts:
        pmax = max((p[3] for p in pts if math.isfinite(p[3])), default=1.0) or 1.0
        for i, (name, x, y, params) in enumerate(sorted(pts, key=lambda p: p[1])):
            size = 40 + 1500 * (params / pmax if math.isfinite(params) else 0.0)
            ax.scatter([x], [y], s=size, alpha=0.55, edgecolors="black", zorder=2)
            label = f"{name}\n{params:.1f} M" if math.isfinite(params) else name
            # alternate above/below so that neighbours' labels do not overlap
            r = math.sqrt(size) / 2 + 3  # marker radius in points (s is the area in points^2)
            ax.annotate(label, (x, y), textcoords="offset points", xytext=(0, r if i % 2 == 0 else -r),
                        ha="center", va="bottom" if i % 2 == 0 else "top", fontsize=7, zorder=3)
        xs, ys = [p[1] for p in pts], [p[2] for p in pts]
        if min(xs) > 0 and max(xs) / min(xs) > 20:
            ax.set_xscale("log")
            ax.set_xlim(min(xs) / 2.0, max(xs) * 2.0)
        else:
            span = (max(xs) - min(xs)) or max(abs(max(xs)), 1.0)
            ax.set_xlim(min(xs) - 0.25 * span, max(xs) + 0.25 * span)
        yspan = (max(ys) - min(ys)) or max(abs(max(ys)), 1.0)
        ax.set_ylim(min(ys) - 0.25 * yspan, max(ys) + 0.25 * yspan)
    ax.set_xlabel(f"GFLOPs ({info.get('convention', 'paper convention')})")
    ax.set_ylabel(ycol.header)
    ax.set_title(f"{ycol.header} vs. GFLOPs on {info.get('test_set', '')} (area ~ params)", fontsize=10)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return bool(pts)


# ---------------------------------------------------------------------------------------------
# running
# ---------------------------------------------------------------------------------------------
@dataclass
class ModelSpec:
    name: str
    config: str
    weights: Optional[str] = None


def _sha(obj: Any) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


class Comparison:
    """Runs (or resumes) the comparison of ``models`` on ``test_set`` into ``output_dir``.

    ``opts`` are Detectron2 ``KEY VALUE`` overrides applied to every model's config (e.g. a
    shorter ``SOLVER.MAX_ITER``). ``complexity_shape`` overrides TEST.COMPLEXITY_INPUT_SHAPE for
    all models (same counting input for everyone). ``progress`` receives one-line messages.
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
        self.test_set = test_set or self._first_test_set()
        self.task = task_of_dataset(self.test_set)
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
            if "lmsfa" in m.name.lower():
                return m.name
        return None

    def _cfg(self, model: ModelSpec, seed: int, set_test: bool = True, train: bool = False):
        from .config import load_config

        opts = list(self.opts) + ["SEED", str(seed), "OUTPUT_DIR", self._train_dir(model, seed)]
        if set_test:
            opts += ["DATASETS.TEST", "()" if train else f"('{self.test_set}',)"]
        if train:
            opts += ["TEST.EVAL_PERIOD", "0"]
        if self.complexity_shape:
            opts += ["TEST.COMPLEXITY_INPUT_SHAPE", str(self.complexity_shape)]
        cfg = load_config(model.config, opts, freeze=False)
        if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
            cfg.MODEL.DEVICE = "cpu"
        if set_test and not train:
            # every instance model also goes through the Ultralytics-protocol evaluator (P, R)
            from .evaluation import DEFAULT_EVALUATORS_BY_TYPE, EVALUATOR_REGISTRY

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
            "cfg": cfg.dump(), "weights": weights, "weights_mtime": stamp, "test": self.test_set,
            "seed": seed, "latency": [self.latency_runs, self.latency_warmup, self.precision],
        })

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
            _atomic_write(path, json.dumps(rec, indent=2, default=_json_default))
            self.progress(f"{tag}: done in {time.perf_counter() - t0:.0f} s -> {path}")
            runs.append(rec)
        self.failed = failed
        return runs

    def run_one(self, model: ModelSpec, seed: int, tag: str) -> Dict[str, Any]:
        from detectron2.modeling import build_model
        from detectron2.utils.env import seed_all_rng

        from .engine.trainer import MedSegTrainer, load_weights_for_eval

        rec: Dict[str, Any] = {
            "name": model.name, "config": model.config, "seed": seed, "test_set": self.test_set,
            "task": self.task, "weights_given": bool(model.weights),
        }
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
        rec["results"] = _plain(results)
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

        from .engine.trainer import MedSegTrainer

        out = self._train_dir(model, seed)
        final = os.path.join(out, "model_final.pth")
        done = os.path.join(out, "train_time.json")
        if os.path.isfile(final) and os.path.isfile(done):
            with open(done) as f:
                info = json.load(f)
            self.progress(f"{tag}: training finished earlier ({final}), not repeated")
            return final, info
        cfg = self._cfg(model, seed, train=True)
        os.makedirs(out, exist_ok=True)
        seed_all_rng(seed)
        trainer = MedSegTrainer(cfg)
        trainer.resume_or_load(resume=True)
        resumed = trainer.start_iter > 0
        self.progress(
            f"{tag}: training {cfg.SOLVER.MAX_ITER} iterations"
            + (f" (resuming at {trainer.start_iter})" if resumed else "") + f" into {out}"
        )
        t0 = time.perf_counter()
        trainer.train()
        info = {"seconds": time.perf_counter() - t0, "iterations": int(cfg.SOLVER.MAX_ITER),
                "resumed": resumed, "device": cfg.MODEL.DEVICE, "threads": torch.get_num_threads()}
        if not os.path.isfile(final):
            # a schedule whose last iteration is not saved by the periodic checkpointer
            trainer.checkpointer.save("model_final")
        _atomic_write(done, json.dumps(info))
        return final, info

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
            from .complexity import model_complexity

            c = model_complexity(cfg)
            c.pop("thop_ops_by_type", None)
        except Exception as e:  # noqa: BLE001 - a model the counters cannot trace still gets a row
            c = {"error": f"{type(e).__name__}: {e}"}
        c["key"] = key
        _atomic_write(path, json.dumps(c, indent=2, default=_json_default))
        return c

    def _latency(self, cfg, net) -> Tuple[Dict[str, Any], Optional[Dict[str, Any]]]:
        from .engine.trainer import MedSegTrainer
        from .profiling import profile_model

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
        return {
            "test_set": self.test_set,
            "device": f"{lat.get('device', '?')} ({lat.get('device_name', '?')})",
            "threads": lat.get("threads", torch.get_num_threads()),
            "latency": (
                f"batch 1, whole model forward incl. its post-processing (data loading excluded), median of "
                f"{lat.get('runs', '?')} runs after {lat.get('warmup', '?')} warm-up, {lat.get('dtype', '?')}, "
                "fused where the model supports it"
            ),
            "complexity": (
                f"params and GFLOPs at input {tuple(comp.get('input_shape', []))}; paper convention = "
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
            ("runs", "runs.csv"), ("plot", "comparison.png"))}
        md = render_markdown(summaries, self.task, info, self.reference)
        if getattr(self, "failed", None):
            md += "\nFailed runs (rerun the same command to retry):\n" + "".join(
                f"- `{n}` seed {s}: {e}\n" for n, s, e in self.failed)
        _atomic_write(paths["markdown"], md)
        write_csv(summaries, self.task, paths["csv"], info)
        write_per_class_csv(summaries, paths["per_class"])
        write_runs_csv(runs, self.task, paths["runs"])
        plot_tradeoff(summaries, self.task, paths["plot"], info)
        return paths


_CONVENTION_KEYS = {"thop2x": "gflops_thop2x", "thop": "gmacs_thop", "fvcore": "gflops_fvcore"}


def unify_flops_convention(runs: List[Dict[str, Any]], reference: Optional[str] = None) -> List[Dict[str, Any]]:
    """Copies of ``runs`` whose "paper convention" GFLOPs all follow one convention: the
    reference model's (else the first counted model's) MODEL.FLOPS_CONVENTION, so that a column
    never mixes 2 x MACs (YOLO papers) with MACs (LGMSNet)."""
    counted = [r for r in runs if r.get("complexity", {}).get("convention") in _CONVENTION_KEYS]
    if not counted:
        return runs
    ref = next((r for r in counted if r["name"] == reference), counted[0])
    conv = ref["complexity"]["convention"]
    out = []
    for r in runs:
        c = r.get("complexity", {})
        if c.get("convention") in _CONVENTION_KEYS and c["convention"] != conv:
            r = dict(r, complexity=dict(c, convention=conv, gflops_paper=c.get(_CONVENTION_KEYS[conv])))
        out.append(r)
    return out


def _plain(obj: Any) -> Any:
    """Evaluator results (OrderedDicts, numpy scalars) as plain JSON-able values."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):
        try:
            return obj.item()
        except (ValueError, RuntimeError):
            return str(obj)
    return obj


def _json_default(o: Any) -> Any:
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, (set, tuple)):
        return list(o)
    return str(o)

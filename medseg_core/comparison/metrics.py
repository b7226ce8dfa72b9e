"""What a comparison table shows: its columns, and where in a run record each value is read.

The metric columns are data-driven: the test set's ``evaluator_type`` picks a :class:`TaskSpec`
(instances: COCO mask/box AP, AR@100 and the Ultralytics-protocol precision/recall at the
best-F1 confidence; semantic: IoU/Dice; volumes: Dice/HD95), and each column names where in the
evaluators' results its value is read. Efficiency columns (params, GFLOPs, latency, training
time) and the training-protocol columns (images seen, epochs) read the run's own measurements.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

__all__ = [
    "NAN", "Column", "TaskSpec", "TASKS", "EFFICIENCY_COLUMNS", "TRAINING_COLUMNS", "is_number",
    "precision_recall_at_best_f1", "extract_metrics", "per_class_values", "task_of_dataset",
    "table_columns",
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
            return float(v) * self.scale if is_number(v) else NAN
        for section, name in self.sources:
            node: Any = run
            for part in section.split("."):
                node = node.get(part) if isinstance(node, dict) else None
            if isinstance(node, dict) and name in node and is_number(node[name]):
                return float(node[name]) * self.scale
        return NAN


def is_number(v: Any) -> bool:
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
    # minutes of the protocol's clock (wall or CPU), learning-curve evaluations excluded
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
    cols = list(TASKS[task].metric_columns) + list(EFFICIENCY_COLUMNS) + list(TRAINING_COLUMNS)
    return {c.key: c.read(run) for c in cols}


def per_class_values(run: Dict[str, Any], task: str) -> Dict[str, float]:
    res = run.get("results", {})
    for section, prefix in TASKS[task].per_class:
        sec = res.get(section)
        if isinstance(sec, dict):
            vals = {k[len(prefix):]: float(v) for k, v in sec.items() if k.startswith(prefix) and is_number(v)}
            if vals:
                return vals
    return {}


# training-protocol columns, shown only when some run has them (not for given checkpoints)
TRAINING_COLUMNS: Tuple[Column, ...] = (
    Column("images_seen", "Images seen", (("train", "images_seen"),), None, "{:.0f}"),
    Column("epochs", "Epochs", (("train", "epochs"),), None, "{:.1f}"),
)


def table_columns(task: str, runs: Optional[List[Dict[str, Any]]] = None) -> List[Column]:
    """Metric + efficiency columns of ``task``, then the training columns some run has."""
    cols = list(TASKS[task].metric_columns) + list(EFFICIENCY_COLUMNS)
    for c in TRAINING_COLUMNS:
        if runs is None or any(math.isfinite(c.read(r)) for r in runs):
            cols.append(c)
    return cols

"""Statistics over a comparison's runs: best / second-best marks, mean and spread over seeds,
the one-sided Welch test against the reference model, one FLOP convention per table."""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

from .metrics import NAN, TASKS, extract_metrics, is_number, per_class_values

__all__ = ["rank_marks", "welch_one_sided_p", "ModelSummary", "summarize", "nanmean", "unify_flops_convention"]


def rank_marks(values: Sequence[float], higher_is_better: Optional[bool]) -> List[str]:
    """"best" / "second" / "" per value (ties share a mark; NaN is never marked; a column where
    every row has the same value is not marked).

    As in the paper's tables: the best value bold, the second-best underlined. An unranked
    column (``higher_is_better`` None) gets no marks.
    """
    marks = [""] * len(values)
    if higher_is_better is None:
        return marks
    finite = sorted({v for v in values if is_number(v) and math.isfinite(v)}, reverse=bool(higher_is_better))
    if not finite:
        return marks
    if len(finite) == 1 and sum(1 for v in values if is_number(v) and math.isfinite(v)) > 1:
        return marks  # all rows tie: nothing to single out
    best = finite[0]
    second = finite[1] if len(finite) > 1 else None
    for i, v in enumerate(values):
        if is_number(v) and math.isfinite(v):
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
        mean = {k: nanmean(v) for k, v in vals.items()}
        std = {k: (statistics.stdev([x for x in v if math.isfinite(x)]) if sum(math.isfinite(x) for x in v) > 1 else NAN)
               for k, v in vals.items()}
        pcs: Dict[str, List[float]] = {}
        for r in rs:
            for c, v in per_class_values(r, task).items():
                pcs.setdefault(c, []).append(v)
        notes = []
        if any(r.get("train", {}).get("resumed") for r in rs):
            notes.append("training resumed from a checkpoint: the work lost after its last checkpoint is not counted")
        if any(r.get("weights_given") for r in rs):
            notes.append("given checkpoint (not trained here)")
        if any(r.get("complexity", {}).get("error") for r in rs):
            notes.append("complexity: " + rs[0]["complexity"]["error"])
        out.append(ModelSummary(name, rs[0]["config"], len(rs), mean, std, vals,
                                {c: nanmean(v) for c, v in pcs.items()}, notes=notes))
    if reference is not None:
        ref = next((s for s in out if s.name == reference), None)
        if ref is not None:
            for s in out:
                if s is not ref:
                    s.p_value = welch_one_sided_p(ref.values.get(primary, []), s.values.get(primary, []))
    return out


def nanmean(v: Sequence[float]) -> float:
    f = [x for x in v if is_number(x) and math.isfinite(x)]
    return statistics.fmean(f) if f else NAN


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

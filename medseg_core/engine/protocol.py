"""The hooks of the training protocols (time budget, learning curves) and what they measured.

:func:`build_protocol_hooks` gives the trainer a :class:`~.budget.TrainingClock` (always: it
costs nothing and measures training time without evaluations), a
:class:`~.budget.TrainingBudgetHook` when ``SOLVER.BUDGET.MINUTES > 0`` and a
:class:`~.curves.LearningCurveHook` when ``TEST.CURVE.POINTS > 0``.
:func:`training_summary` reads them back after ``train()``.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional

from .. import compat  # noqa: F401

from detectron2.engine import HookBase

from ..errors import ConfigError
from .budget import TrainingBudgetHook, TrainingClock
from .curves import LearningCurveHook

__all__ = ["build_protocol_hooks", "training_summary", "find_hook"]


def build_protocol_hooks(cfg, clock_sources=None) -> List[HookBase]:
    """[clock, budget?, curve?] for ``cfg`` (``clock_sources`` replaces the real clocks in tests)."""
    b, c = cfg.SOLVER.BUDGET, cfg.TEST.CURVE
    clock = TrainingClock(clock_sources)
    if b.CLOCK not in clock.sources:
        raise ConfigError(f"SOLVER.BUDGET.CLOCK must be one of {sorted(clock.sources)}, got {b.CLOCK!r}")
    out: List[HookBase] = [clock]
    if b.MINUTES > 0:
        out.append(TrainingBudgetHook(cfg, clock, b.MINUTES, b.CLOCK, b.REPLAN_PERIOD, b.CHECKPOINT_MINUTES))
    elif b.MINUTES < 0:
        raise ConfigError(f"SOLVER.BUDGET.MINUTES must be >= 0 (0 = train SOLVER.MAX_ITER iterations), got {b.MINUTES}")
    if c.POINTS:
        dataset = c.DATASET or (cfg.DATASETS.TEST[0] if cfg.DATASETS.TEST else "")
        if not dataset:
            raise ConfigError("TEST.CURVE.POINTS > 0 needs TEST.CURVE.DATASET or a DATASETS.TEST entry")
        out.append(LearningCurveHook(cfg, clock, c.POINTS, dataset, max(b.MINUTES, 0.0), b.CLOCK))
    return out


def find_hook(trainer, kind: type) -> Optional[HookBase]:
    return next((h for h in trainer._hooks if isinstance(h, kind)), None)


def training_summary(trainer) -> Dict[str, Any]:
    """Training time (per clock, evaluations excluded), iterations, images seen, budget outcome."""
    cfg = trainer.cfg
    clock = find_hook(trainer, TrainingClock)
    budget = find_hook(trainer, TrainingBudgetHook)
    curve = find_hook(trainer, LearningCurveHook)
    iters = int(min(trainer.iter, trainer.max_iter))
    out: Dict[str, Any] = {
        "iterations": iters,
        "images_seen": iters * int(cfg.SOLVER.IMS_PER_BATCH),
        "clock": cfg.SOLVER.BUDGET.CLOCK,
    }
    if clock is not None:
        out["seconds_by_clock"] = {k: clock.seconds(k) for k in clock.sources}
        out["eval_seconds_by_clock"] = {k: clock.paused_seconds(k) for k in clock.sources}
        out["seconds"] = clock.seconds(cfg.SOLVER.BUDGET.CLOCK)
    if budget is not None:
        out.update(budget_minutes=float(cfg.SOLVER.BUDGET.MINUTES), planned_iterations=budget.plan,
                   warmup_iters=budget.warmup_iters, stopped_by=budget.stopped_by or "plan")
    if curve is not None:
        out["curve"] = list(curve.records)
    return out

"""Rescaling an iteration-valued training schedule to another length.

A config's schedule is written for its ``SOLVER.MAX_ITER``; the equal-compute protocols of
``tools/compare.py`` train each model for another number of iterations (E epochs of its training
set, or as many as fit in a time budget). :func:`rescaled_schedule` moves every iteration-valued
key in proportion, so that the schedule keeps its shape: ``SOLVER.WARMUP_ITERS``, ``SOLVER.STEPS``
(LR drops), ``SOLVER.CHECKPOINT_PERIOD`` and ``TEST.EVAL_PERIOD`` become
``round(value * max_iter / SOLVER.MAX_ITER)`` (periods at least 1, a period of 0 stays 0).
"""
from __future__ import annotations

from typing import Dict, Optional

__all__ = ["rescaled_schedule", "schedule_opts", "SCALED_KEYS"]

SCALED_KEYS = ("SOLVER.WARMUP_ITERS", "SOLVER.STEPS", "SOLVER.CHECKPOINT_PERIOD", "TEST.EVAL_PERIOD")


def rescaled_schedule(cfg, max_iter: int, warmup_iters: Optional[int] = None) -> Dict[str, object]:
    """The schedule keys for ``max_iter`` iterations ({"SOLVER.MAX_ITER": ..., ...}).

    ``warmup_iters`` fixes the warm-up instead of scaling it (the time budget freezes it once).
    """
    if max_iter < 1:
        raise ValueError(f"a schedule needs at least 1 iteration, got {max_iter}")
    old = max(int(cfg.SOLVER.MAX_ITER), 1)
    r = max_iter / old

    def period(v: int) -> int:
        return 0 if v <= 0 else max(1, round(v * r))

    warm = round(cfg.SOLVER.WARMUP_ITERS * r) if warmup_iters is None else int(warmup_iters)
    return {
        "SOLVER.MAX_ITER": int(max_iter),
        "SOLVER.WARMUP_ITERS": min(warm, int(max_iter)),
        "SOLVER.STEPS": tuple(min(round(s * r), int(max_iter)) for s in cfg.SOLVER.STEPS),
        "SOLVER.CHECKPOINT_PERIOD": period(int(cfg.SOLVER.CHECKPOINT_PERIOD)),
        "TEST.EVAL_PERIOD": period(int(cfg.TEST.EVAL_PERIOD)),
    }


def schedule_opts(values: Dict[str, object]) -> list:
    """``rescaled_schedule`` output as Detectron2 ``KEY VALUE`` overrides."""
    out = []
    for k, v in values.items():
        out += [k, str(tuple(v)) if isinstance(v, tuple) else str(v)]
    return out

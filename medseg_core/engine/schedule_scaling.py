"""Rescaling an iteration-valued training schedule to another length.

A config's schedule is written for its ``SOLVER.MAX_ITER``; the equal-compute protocols of
``tools/compare.py`` train each model for another number of iterations (E epochs of its training
set, or as many as fit in a time budget). :func:`rescaled_schedule` moves every key listed in
:data:`ITERATION_KEYS` in proportion, ``round(value * max_iter / SOLVER.MAX_ITER)``, so that the
schedule keeps its shape, except the warm-up: it keeps at least :data:`MIN_WARMUP_ITERS`
iterations (:func:`scaled_warmup`). A new iteration-valued config key is made to follow the protocols by
adding one line to that table; keys a config does not have are skipped.
"""
from __future__ import annotations

from typing import Dict, Optional

from ..config_keys import config_value

__all__ = ["ITERATION_KEYS", "MIN_WARMUP_ITERS", "rescaled_schedule", "scaled_warmup", "schedule_opts"]

# Iteration-valued keys and how each one scales:
#   "span":   a number of iterations (clipped to [0, max_iter]);
#   "points": a tuple of iteration indices (each clipped to max_iter);
#   "period": every N iterations (at least 1; 0, "never", stays 0);
#   "warmup": the LR warm-up (scaled_warmup).
ITERATION_KEYS: Dict[str, str] = {
    "SOLVER.WARMUP_ITERS": "warmup",
    "SOLVER.STEPS": "points",
    "SOLVER.CHECKPOINT_PERIOD": "period",
    "TEST.EVAL_PERIOD": "period",
    "DATALOADER.FINAL_PHASE_ITERS": "span",   # the last N iterations' data pipeline (close mosaic)
}


# A warm-up scaled down with a short schedule can shrink to a few iterations: too few for a network
# from random weights (YOLACT R50 at a 15-minute CPU budget: 3 warm-up iterations, NaN loss at
# iteration 11). Ultralytics keeps at least 100 (max(warmup_epochs * batches, 100)); so does this,
# but never more than the config's own warm-up nor more than half of the schedule.
MIN_WARMUP_ITERS = 100


def scaled_warmup(cfg, max_iter: int) -> int:
    """``SOLVER.WARMUP_ITERS`` for a schedule of ``max_iter`` iterations: in proportion, but at
    least ``min(WARMUP_ITERS, MIN_WARMUP_ITERS, max_iter // 2)``."""
    warmup = int(cfg.SOLVER.WARMUP_ITERS)
    scaled = round(warmup * max_iter / max(int(cfg.SOLVER.MAX_ITER), 1))
    floor = min(warmup, MIN_WARMUP_ITERS, max_iter // 2)
    return min(max(scaled, floor, 0), max_iter)


def rescaled_schedule(cfg, max_iter: int, warmup_iters: Optional[int] = None) -> Dict[str, object]:
    """The schedule keys for ``max_iter`` iterations ({"SOLVER.MAX_ITER": ..., ...}).

    ``warmup_iters`` fixes the warm-up instead of scaling it (the time budget freezes it once).
    """
    if max_iter < 1:
        raise ValueError(f"a schedule needs at least 1 iteration, got {max_iter}")
    max_iter = int(max_iter)
    r = max_iter / max(int(cfg.SOLVER.MAX_ITER), 1)
    out: Dict[str, object] = {"SOLVER.MAX_ITER": max_iter}
    for key, kind in ITERATION_KEYS.items():
        value = config_value(cfg, key)
        if value is None:
            continue
        if kind == "points":
            out[key] = tuple(min(round(s * r), max_iter) for s in value)
        elif kind == "period":
            out[key] = 0 if value <= 0 else max(1, round(value * r))
        elif kind == "span":
            out[key] = min(max(round(value * r), 0), max_iter)
        elif kind == "warmup":
            out[key] = scaled_warmup(cfg, max_iter) if warmup_iters is None else min(int(warmup_iters), max_iter)
        else:
            raise ValueError(f"ITERATION_KEYS[{key!r}]: unknown kind {kind!r}")
    return out


def schedule_opts(values: Dict[str, object]) -> list:
    """``rescaled_schedule`` output as Detectron2 ``KEY VALUE`` overrides."""
    out = []
    for k, v in values.items():
        out += [k, str(tuple(v)) if isinstance(v, tuple) else str(v)]
    return out

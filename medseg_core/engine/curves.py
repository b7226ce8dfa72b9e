"""Learning curves: evaluations at evenly spaced points of a training run (``TEST.CURVE``).

:class:`LearningCurveHook` evaluates the model used for evaluation (the weight average when
enabled) on ``TEST.CURVE.DATASET`` at ``POINTS - 1`` points during training: at k / POINTS of the
time budget (``SOLVER.BUDGET.MINUTES``, on its clock) or, without a budget, after
k / POINTS of ``SOLVER.MAX_ITER`` iterations, k = 1 ... POINTS - 1. The last point is the end of
training: the trainer's own final evaluation (``DATASETS.TEST``) when it runs one, which the hook
records as it is, else whoever evaluates the final model appends it (``tools/compare.py`` does).
Evaluations run inside :meth:`TrainingClock.paused`, so they do not count as training time.

Every point is written at once to ``OUTPUT_DIR/curve.json`` (a list of
``{"point", "iteration", "images_seen", "seconds": {"wall", "cpu"}, "results"}``) and kept in the
hook's checkpointed state, so a resumed run continues its curve.
"""
from __future__ import annotations

import logging
import math
import os
from typing import Any, Dict, List, Optional

from .. import compat  # noqa: F401

from detectron2.engine import HookBase
from detectron2.utils import comm

from ..atomic import atomic_write_json
from .budget import TrainingClock, rank0_value

logger = logging.getLogger(__name__)

__all__ = ["LearningCurveHook", "plain_results"]


def plain_results(obj: Any) -> Any:
    """Evaluator results (OrderedDicts, numpy scalars) as plain JSON / checkpoint values."""
    if isinstance(obj, dict):
        return {str(k): plain_results(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain_results(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):
        try:
            return obj.item()
        except (ValueError, RuntimeError):
            return str(obj)
    return obj




class LearningCurveHook(HookBase):
    """Evaluates on ``dataset`` at ``points - 1`` evenly spaced points of training (module doc)."""

    def __init__(self, cfg, clock: TrainingClock, points: int, dataset: str,
                 budget_minutes: float = 0.0, kind: str = "wall") -> None:
        if points < 2:
            raise ValueError(f"TEST.CURVE.POINTS must be 0 (off) or >= 2, got {points}")
        self.cfg, self.clock, self.points, self.dataset = cfg, clock, int(points), dataset
        self.budget_s = 60.0 * float(budget_minutes)
        self.kind = kind
        self.records: List[Dict[str, Any]] = []
        self.path = os.path.join(cfg.OUTPUT_DIR, "curve.json")

    # ------------------------------------------------------------------ when
    def _due_point(self) -> Optional[int]:
        """The latest point k (1 ... points - 1) reached and not yet evaluated, else None."""
        done = max((r["point"] for r in self.records), default=0)
        if self.budget_s > 0:
            reached = math.floor(self.clock.seconds(self.kind) / self.budget_s * self.points + 1e-9)
        else:
            reached = math.floor((self.trainer.iter + 1) * self.points / max(self.trainer.max_iter, 1) + 1e-9)
        k = min(reached, self.points - 1)
        return k if k > done else None

    def after_step(self) -> None:
        if self.trainer.iter + 1 >= self.trainer.max_iter:
            return  # the end of training is the final evaluation's point
        k = rank0_value(self._due_point())
        if k is not None:
            self._evaluate(k)

    def after_train(self) -> None:
        t = self.trainer
        final = getattr(t, "_last_eval_results", None)
        if t.iter >= t.max_iter and final and self.cfg.DATASETS.TEST and self.cfg.DATASETS.TEST[0] == self.dataset:
            self._record(self.points, final)

    # ------------------------------------------------------------------ what
    def _evaluate(self, k: int) -> None:
        t = self.trainer
        cfg = self.cfg.clone()
        cfg.defrost()
        cfg.DATASETS.TEST = (self.dataset,)
        cfg.freeze()
        with self.clock.paused():
            logger.info("Learning curve: point %d/%d at iteration %d", k, self.points, t.iter + 1)
            results = t.test(cfg, t.eval_model())
            self._record(k, results)

    def _record(self, k: int, results: Dict[str, Any]) -> None:
        t = self.trainer
        done = t.iter + 1 if t.iter < t.max_iter else t.iter
        self.records.append({
            "point": int(k), "iteration": int(done),
            "images_seen": int(done * self.cfg.SOLVER.IMS_PER_BATCH),
            "seconds": {c: float(self.clock.seconds(c)) for c in self.clock.sources},
            "results": plain_results(results),
        })
        if comm.is_main_process():
            atomic_write_json(self.path, self.records, indent=2)

    def state_dict(self) -> Dict[str, Any]:
        return {"records": self.records} if self.records else {}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.records = list(state.get("records", []))

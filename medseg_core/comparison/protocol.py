"""The training protocol of a comparison: how much compute every model gets.

* **iterations** (default): each config's own ``SOLVER.MAX_ITER`` (or the one given as an
  override for all), the protocol of earlier versions of this tool.
* **epochs E** (the LMSF-A paper's protocol): every model sees its training set E times:
  ``MAX_ITER = ceil(E * N_train / IMS_PER_BATCH)``, with N_train the number of images its data
  loader draws from (after ``DATALOADER.FILTER_EMPTY_ANNOTATIONS``); the iteration-valued keys
  (``WARMUP_ITERS``, ``STEPS``, ``CHECKPOINT_PERIOD``, ``EVAL_PERIOD``) move in proportion,
  the warm-up keeping at least ``min(WARMUP_ITERS, 100, MAX_ITER / 2)`` iterations
  (:mod:`medseg_core.engine.schedule_scaling`).
* **minutes M**: every model trains for M minutes of the chosen clock, its LR schedule planned
  to end with the budget and re-estimated as training goes (:mod:`medseg_core.engine.budget`).

An epoch is N_train training samples whatever the sampler: with the repeat-factor sampler
(``repeat_threshold``) rare-class images fill more of those samples, so E epochs cost the same
compute with or without it, and "images seen" is always iterations x IMS_PER_BATCH (a mosaic
of four images counts once). Learning-curve points (``curve_points``) are evaluations at even
fractions of the budget (minutes) or of the iterations; they do not count as training time.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Dict, List

from ..engine.schedule_scaling import rescaled_schedule, schedule_opts

__all__ = ["Protocol", "train_set_size"]


def train_set_size(cfg) -> int:
    """Images the training loader of ``cfg`` draws from (Detectron2's own list of dicts)."""
    from detectron2.data import get_detection_dataset_dicts

    return len(get_detection_dataset_dicts(list(cfg.DATASETS.TRAIN),
                                           filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS))


@dataclass(frozen=True)
class Protocol:
    epochs: float = 0.0
    budget_minutes: float = 0.0
    clock: str = "wall"
    curve_points: int = 0
    repeat_threshold: float = 0.0

    def __post_init__(self) -> None:
        if self.epochs < 0 or self.budget_minutes < 0:
            raise ValueError("--epochs and --budget-minutes must be positive")
        if self.epochs and self.budget_minutes:
            raise ValueError("choose one protocol: --epochs or --budget-minutes, not both")
        if self.clock not in ("wall", "cpu"):
            raise ValueError(f"--budget-clock must be 'wall' or 'cpu', got {self.clock!r}")
        if self.curve_points == 1 or self.curve_points < 0:
            raise ValueError(f"--curve-points must be 0 (none) or >= 2, got {self.curve_points}")
        if self.repeat_threshold < 0:
            raise ValueError(f"--repeat-factor must be > 0, got {self.repeat_threshold}")

    @property
    def kind(self) -> str:
        return "minutes" if self.budget_minutes else "epochs" if self.epochs else "iterations"

    def as_dict(self) -> Dict[str, Any]:
        return dict(asdict(self), kind=self.kind)

    def describe(self) -> str:
        if self.kind == "minutes":
            s = f"equal time: {self.budget_minutes:g} min of {self.clock} clock per model, LR schedule planned to end with it"
        elif self.kind == "epochs":
            s = f"equal epochs: {self.epochs:g} passes over each model's training set, schedules rescaled in proportion"
        else:
            s = "fixed iterations: each config's SOLVER.MAX_ITER (and the overrides given)"
        if self.repeat_threshold:
            s += f"; repeat-factor sampler (threshold {self.repeat_threshold:g}) for every model"
        if self.curve_points:
            s += f"; {self.curve_points}-point learning curves (their evaluations excluded from training time)"
        return s

    def short(self) -> str:
        """A few words for a plot title."""
        if self.kind == "minutes":
            return f"{self.budget_minutes:g} min of {self.clock} clock per model"
        if self.kind == "epochs":
            return f"{self.epochs:g} epochs per model"
        return "fixed iterations"

    def common_opts(self) -> List[str]:
        """Overrides for every config of the comparison (training and evaluation)."""
        if not self.repeat_threshold:
            return []
        return ["DATALOADER.SAMPLER_TRAIN", "RepeatFactorTrainingSampler",
                "DATALOADER.REPEAT_THRESHOLD", str(float(self.repeat_threshold))]

    def train_opts(self, cfg, curve_dataset: str) -> List[str]:
        """Overrides of the training config ``cfg`` (user overrides already merged)."""
        opts = ["SOLVER.BUDGET.CLOCK", self.clock]
        if self.kind == "epochs":
            n = train_set_size(cfg)
            max_iter = max(1, math.ceil(self.epochs * n / int(cfg.SOLVER.IMS_PER_BATCH)))
            opts += schedule_opts(rescaled_schedule(cfg, max_iter))
        elif self.kind == "minutes":
            opts += ["SOLVER.BUDGET.MINUTES", str(float(self.budget_minutes))]
        if self.curve_points:
            opts += ["TEST.CURVE.POINTS", str(int(self.curve_points)), "TEST.CURVE.DATASET", curve_dataset]
        return opts

"""Training hooks shared by every project: weight EMA and momentum warm-up."""
from __future__ import annotations

import copy
import logging
import math
from typing import Dict

import torch

from .. import compat  # noqa: F401

from detectron2.engine import HookBase

logger = logging.getLogger(__name__)

__all__ = ["ModelEMA", "ModelEMAHook", "MomentumWarmupHook", "unwrap_model"]


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model


class ModelEMA:
    """Exponential moving average of a model's weights and buffers (as in YOLO trainers).

    ``decay_n = DECAY * (1 - exp(-n / TAU))`` after ``n`` updates, so early averages follow
    the fast-changing weights closely. Floating-point entries of the state dict are averaged;
    integer buffers (BatchNorm's ``num_batches_tracked``) are copied.
    """

    def __init__(self, model: torch.nn.Module, decay: float = 0.9999, tau: float = 2000.0):
        self.module = copy.deepcopy(unwrap_model(model)).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay, self.tau, self.updates = decay, tau, 0

    def current_decay(self) -> float:
        return self.decay * (1 - math.exp(-self.updates / self.tau))

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.updates += 1
        d = self.current_decay()
        src = unwrap_model(model).state_dict()
        for k, v in self.module.state_dict().items():
            if v.dtype.is_floating_point:
                v.mul_(d).add_(src[k].detach(), alpha=1 - d)
            else:
                v.copy_(src[k])

    def state_dict(self) -> Dict:
        return {"model": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: Dict) -> None:
        self.module.load_state_dict(state["model"])
        self.updates = int(state["updates"])


class ModelEMAHook(HookBase):
    """Updates a :class:`ModelEMA` after every optimizer step of the trainer."""

    def __init__(self, ema: ModelEMA):
        self.ema = ema

    def after_step(self):
        # the step loop (StepTrainer, DefaultTrainer's ``_trainer``) knows whether the optimizer
        # stepped; with gradient accumulation most iterations leave the weights unchanged
        step_loop = getattr(self.trainer, "_trainer", self.trainer)
        if getattr(step_loop, "stepped_this_iter", True):
            self.ema.update(self.trainer.model)


class MomentumWarmupHook(HookBase):
    """Ramp SGD momentum linearly from ``start`` to the configured value over warm-up
    (Ultralytics' warmup_momentum 0.8 -> 0.937)."""

    def __init__(self, start: float, end: float, warmup_iters: int):
        self.start, self.end, self.warmup_iters = start, end, max(int(warmup_iters), 1)

    def before_step(self):
        it = self.trainer.iter
        m = self.end if it >= self.warmup_iters else self.start + (self.end - self.start) * it / self.warmup_iters
        for group in self.trainer.optimizer.param_groups:
            if "momentum" in group:
                group["momentum"] = m

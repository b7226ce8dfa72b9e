"""Training hooks shared by every project: weight EMA and momentum warm-up."""
from __future__ import annotations

import copy
import logging
import math
from typing import Callable, Dict, Iterable, Sequence

import torch

from .. import compat  # noqa: F401

from detectron2.engine import HookBase

logger = logging.getLogger(__name__)

__all__ = ["ModelEMA", "ModelEMAHook", "MomentumWarmupHook", "FinalDataPhaseHook"]


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model


class ModelEMA:
    """Exponential moving average of a model's weights and buffers (as in YOLO trainers).

    ``decay_n = DECAY * (1 - exp(-n / TAU))`` after ``n`` updates, so early averages follow
    the fast-changing weights closely. Floating-point entries of the state dict are averaged;
    integer buffers (BatchNorm's ``num_batches_tracked``) are copied.
    """

    def __init__(self, model: torch.nn.Module, decay: float = 0.9999, tau: float = 2000.0):
        self.module = copy.deepcopy(_unwrap(model)).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay, self.tau, self.updates = decay, tau, 0

    def current_decay(self) -> float:
        return self.decay * (1 - math.exp(-self.updates / self.tau))

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.updates += 1
        d = self.current_decay()
        src = _unwrap(model).state_dict()
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
        if getattr(self.trainer, "stepped_this_iter", True):
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


class FinalDataPhaseHook(HookBase):
    """Switches the training data pipeline for the last ``final_iters`` iterations.

    At iteration ``max_iter - final_iters`` (also when a run resumes past that point) the train
    loader is rebuilt from a copy of the config with ``opts`` applied (``KEY VALUE`` pairs, e.g.
    mosaic off: Ultralytics' ``close_mosaic``). Rebuilding the loader, rather than flipping a flag
    on the mapper, also reaches mappers that live in data-loader worker processes.
    """

    def __init__(self, cfg, final_iters: int, opts: Sequence[str],
                 build_loader: Callable[[object], Iterable]) -> None:
        if len(opts) % 2:
            raise ValueError(f"DATALOADER.FINAL_PHASE_OPTS must be KEY VALUE pairs, got {list(opts)}")
        self.cfg, self.final_iters, self.opts = cfg, int(final_iters), [str(o) for o in opts]
        self.build_loader = build_loader
        self.switched = False

    def switch_iter(self, max_iter: int) -> int:
        return max(int(max_iter) - self.final_iters, 0)

    def before_step(self) -> None:
        if self.switched or self.trainer.iter < self.switch_iter(self.trainer.max_iter):
            return
        cfg = self.cfg.clone()
        cfg.defrost()
        cfg.merge_from_list(self.opts)
        cfg.freeze()
        loader = self.build_loader(cfg)
        inner = self.trainer._trainer
        old = inner.data_loader
        inner.data_loader, inner._data_loader_iter = loader, iter(loader)
        del old  # lets worker processes of the previous loader exit
        self.switched = True
        logger.info("Final data phase from iteration %d: train loader rebuilt with %s",
                    self.trainer.iter, self.opts)

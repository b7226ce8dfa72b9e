"""Optimizers and LR schedules shared by every project.

Detectron2 v0.6 builds SGD only, with "WarmupMultiStepLR" / "WarmupCosineLR". The papers here
need more: LMSF-A (Ultralytics recipe) uses Nesterov SGD with weight decay on weights only and a
linear decay to ``lr * lrf``; LGMSNet uses SGD with a poly schedule; the 3D recipes use AdamW.
"""
from __future__ import annotations

import torch
from fvcore.common.param_scheduler import ParamScheduler

from .. import compat  # noqa: F401

from detectron2.solver import build_lr_scheduler as d2_build_lr_scheduler
from detectron2.solver.build import (
    _generate_optimizer_class_with_gradient_clipping,
    get_default_optimizer_params,
    maybe_add_gradient_clipping,
)
from detectron2.solver.lr_scheduler import LRMultiplier, WarmupParamScheduler

__all__ = ["build_optimizer", "build_lr_scheduler", "PolyParamScheduler", "LinearToParamScheduler"]


class PolyParamScheduler(ParamScheduler):
    """``(1 - t) ** power * (1 - end) + end`` for training progress t in [0, 1]."""

    def __init__(self, power: float, end: float = 0.0):
        self.power, self.end = power, end

    def __call__(self, where: float) -> float:
        return (1.0 - where) ** self.power * (1.0 - self.end) + self.end


class LinearToParamScheduler(ParamScheduler):
    """Linear from 1 to ``end`` over training (Ultralytics ``lf = (1 - t)(1 - lrf) + lrf``)."""

    def __init__(self, end: float):
        self.end = end

    def __call__(self, where: float) -> float:
        return (1.0 - where) * (1.0 - self.end) + self.end


def _with_clipping(cfg, optimizer_type):
    """Detectron2's per-parameter clipping ("value"/"norm"), plus "full_model": one norm over
    all gradients together (what YOLO trainers do: clip_grad_norm_(params, 10.0))."""
    clip = cfg.SOLVER.CLIP_GRADIENTS
    if clip.ENABLED and clip.CLIP_TYPE == "full_model":
        def global_clipper(params):
            torch.nn.utils.clip_grad_norm_(list(params), clip.CLIP_VALUE, clip.NORM_TYPE)

        return _generate_optimizer_class_with_gradient_clipping(optimizer_type, global_clipper=global_clipper)
    return maybe_add_gradient_clipping(cfg, optimizer_type)


def build_optimizer(cfg, model: torch.nn.Module) -> torch.optim.Optimizer:
    """SGD (optionally Nesterov) or AdamW; norm and bias decay from WEIGHT_DECAY_NORM/BIAS."""
    params = get_default_optimizer_params(
        model,
        base_lr=cfg.SOLVER.BASE_LR,
        weight_decay_norm=cfg.SOLVER.WEIGHT_DECAY_NORM,
        bias_lr_factor=cfg.SOLVER.BIAS_LR_FACTOR,
        weight_decay_bias=cfg.SOLVER.WEIGHT_DECAY_BIAS,
    )
    name = cfg.SOLVER.OPTIMIZER.upper()
    if name == "SGD":
        return _with_clipping(cfg, torch.optim.SGD)(
            params, lr=cfg.SOLVER.BASE_LR, momentum=cfg.SOLVER.MOMENTUM,
            nesterov=cfg.SOLVER.NESTEROV, weight_decay=cfg.SOLVER.WEIGHT_DECAY,
        )
    if name == "ADAMW":
        return _with_clipping(cfg, torch.optim.AdamW)(
            params, lr=cfg.SOLVER.BASE_LR, weight_decay=cfg.SOLVER.WEIGHT_DECAY,
        )
    raise ValueError(f"SOLVER.OPTIMIZER must be SGD or ADAMW, got {cfg.SOLVER.OPTIMIZER!r}")


def build_lr_scheduler(cfg, optimizer: torch.optim.Optimizer):
    name = cfg.SOLVER.LR_SCHEDULER_NAME
    if name == "WarmupPolyLR":
        sched = PolyParamScheduler(cfg.SOLVER.POLY_LR_POWER, cfg.SOLVER.END_LR_FACTOR)
    elif name == "WarmupLinearLR":
        sched = LinearToParamScheduler(cfg.SOLVER.END_LR_FACTOR)
    else:
        return d2_build_lr_scheduler(cfg, optimizer)
    if cfg.SOLVER.WARMUP_ITERS > 0:
        sched = WarmupParamScheduler(
            sched, cfg.SOLVER.WARMUP_FACTOR,
            min(cfg.SOLVER.WARMUP_ITERS / max(cfg.SOLVER.MAX_ITER, 1), 1.0),
            cfg.SOLVER.WARMUP_METHOD,
        )
    return LRMultiplier(optimizer, multiplier=sched, max_iter=cfg.SOLVER.MAX_ITER)

"""What makes a DDP training step equal to one process's step on the same global batch.

DDP averages gradients over ranks, so a step on W ranks equals the one-process step on the
global batch exactly when every rank's loss ``L_r`` satisfies ``mean_r L_r = L`` (``L``: the
loss one process computes on the whole batch). A mean over images or pixels has that property
when every rank holds the same number of them; statistics of the whole batch do not. The
helpers below give them the property:

* a **count normaliser** (Ultralytics' target-score sum, the number of positives, the number of
  valid pixels): divide each rank's *sum* by :func:`count_normalizer` of its count, the global
  count divided by the number of ranks;
* a **batch sum inside a non-linear term** (nnU-Net's batch Dice): :func:`sum_over_ranks`, an
  all-reduce whose backward all-reduces the gradients too (as torch's SyncBatchNorm does), so
  that after DDP's averaging each rank's share is the one-process gradient;
* **BatchNorm statistics**: :func:`convert_sync_batchnorm` (torch's ``SyncBatchNorm`` on
  GPUs; on CPUs, where torch's runs nowhere, :class:`CPUSyncBatchNorm2d` and friends).

In one process every helper is the identity (bit-identical results).
"""
from __future__ import annotations

import logging
from typing import Optional

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = [
    "world_size", "mean_over_ranks", "count_normalizer", "sum_over_ranks", "convert_sync_batchnorm",
    "CPUSyncBatchNorm1d", "CPUSyncBatchNorm2d", "CPUSyncBatchNorm3d", "CPUSyncBatchNorm",
]

logger = logging.getLogger(__name__)


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def mean_over_ranks(x: Tensor) -> Tensor:
    """The mean of ``x`` over ranks, without gradient (a count normaliser); ``x`` in one process."""
    if world_size() == 1:
        return x
    y = x.detach().to(torch.float32 if not x.is_floating_point() else x.dtype).clone()
    dist.all_reduce(y)
    return y / world_size()


def count_normalizer(count: Tensor, minimum: float = 1.0) -> Tensor:
    """``max(sum over ranks of count, minimum) / number of ranks`` (no gradient).

    A rank's loss ``sum_r / count_normalizer(count_r)`` averages over ranks to
    ``sum / max(count, minimum)`` of the global batch; in one process it is ``count.clamp(min=minimum)``."""
    w = world_size()
    c = count.detach().float() if not count.is_floating_point() else count.detach()
    if w == 1:
        return c.clamp(min=minimum)
    return (mean_over_ranks(c) * w).clamp(min=minimum) / w


def sum_over_ranks(x: Tensor) -> Tensor:
    """The sum of ``x`` over ranks; differentiable (the backward sums the ranks' gradients)."""
    if world_size() == 1:
        return x
    from torch.distributed.nn.functional import all_reduce

    return all_reduce(x)


class _CPUSyncBatchNormMixin:
    """Training-mode BatchNorm whose mean and variance cover every rank's batch.

    Two all-reduces (the sum, then the sum of squared deviations from the global mean: the
    two-pass variance, as accurate as one process's BatchNorm), through :func:`sum_over_ranks`
    so that gradients flow to every rank's inputs. Running statistics are updated with the
    unbiased variance of the global batch, as one process would. Evaluation mode and a single
    process use the plain BatchNorm path.
    """

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        bn_training = self.training or self.running_mean is None
        if not (bn_training and self.training and world_size() > 1):
            return super().forward(x)  # type: ignore[misc]
        self._check_input_dim(x)
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            momentum = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        dims = [0] + list(range(2, x.dim()))
        shape = [1, -1] + [1] * (x.dim() - 2)
        count = torch.tensor([x.numel() // x.shape[1]], dtype=torch.float64, device=x.device)
        dist.all_reduce(count)
        n = float(count.item())
        if n <= 1:
            raise ValueError(f"CPUSyncBatchNorm: expected more than 1 value per channel over all ranks, got {n:.0f}")
        xf = x.float()
        mean = sum_over_ranks(xf.sum(dims)) / n
        centred = xf - mean.view(shape)
        var = sum_over_ranks((centred * centred).sum(dims)) / n
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.running_mean.mul_(1 - momentum).add_(mean.detach().to(self.running_mean.dtype), alpha=momentum)
                unbiased = var.detach() * (n / (n - 1))
                self.running_var.mul_(1 - momentum).add_(unbiased.to(self.running_var.dtype), alpha=momentum)
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)


class CPUSyncBatchNorm1d(_CPUSyncBatchNormMixin, nn.BatchNorm1d):
    """``BatchNorm1d`` synchronised over ranks on CPU (gloo) processes."""


class CPUSyncBatchNorm2d(_CPUSyncBatchNormMixin, nn.BatchNorm2d):
    """``BatchNorm2d`` synchronised over ranks on CPU (gloo) processes (still a BatchNorm2d, so
    Conv+BN folding sees it)."""


class CPUSyncBatchNorm3d(_CPUSyncBatchNormMixin, nn.BatchNorm3d):
    """``BatchNorm3d`` synchronised over ranks on CPU (gloo) processes."""


class CPUSyncBatchNorm(_CPUSyncBatchNormMixin, _BatchNorm):
    """Any-dimension replacement of ``nn.SyncBatchNorm`` (a model built with "SyncBN") on CPU."""

    def _check_input_dim(self, x: Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {x.dim()}D input)")


_CPU_CLASSES = (
    (nn.SyncBatchNorm, CPUSyncBatchNorm),
    (nn.BatchNorm3d, CPUSyncBatchNorm3d),
    (nn.BatchNorm2d, CPUSyncBatchNorm2d),
    (nn.BatchNorm1d, CPUSyncBatchNorm1d),
)


def _cpu_class(module: nn.Module) -> Optional[type]:
    if isinstance(module, _CPUSyncBatchNormMixin):
        return None
    for base, cls in _CPU_CLASSES:
        if isinstance(module, base):
            return cls
    return None


def _convert_cpu(module: nn.Module) -> nn.Module:
    cls = _cpu_class(module)
    out = module
    if cls is not None:
        out = cls(module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats)
        if module.affine:
            with torch.no_grad():
                out.weight = module.weight
                out.bias = module.bias
        out.running_mean = module.running_mean
        out.running_var = module.running_var
        out.num_batches_tracked = module.num_batches_tracked
        out.train(module.training)
    for name, child in module.named_children():
        out.add_module(name, _convert_cpu(child))
    return out


def convert_sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Every BatchNorm of ``module`` synchronised over ranks: torch's ``SyncBatchNorm`` for a
    CUDA model, the ``CPUSyncBatchNorm*`` classes for a CPU one. Parameters and buffers are
    kept (same tensors), so optimizers, checkpoints and state-dict keys are unaffected."""
    before = sum(isinstance(m, _BatchNorm) for m in module.modules())
    if torch.device(device).type == "cuda":
        module = nn.SyncBatchNorm.convert_sync_batchnorm(module)
    else:
        module = _convert_cpu(module)
    logger.info("Synchronised %d BatchNorm layers across ranks", before)
    return module

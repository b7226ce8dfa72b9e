"""Convolution building blocks of LMSF-A (paper §III-A/§III-D; docs/lmsfa.md, "Modules").

* :class:`ConvBNAct` — the YOLOv8 "CBS" unit (Conv2d without bias -> BatchNorm -> SiLU) that
  every stage of the CSP-Darknet backbone and the neck is built from (paper §III-A, "streamlined
  CSPDarknet53"). The paper's prose mentions GroupNorm in the backbone and depthwise stride-2
  downsampling (§IV-F), but neither appears in the released YAML nor in the reported 1.8 M /
  8.8 GFLOPs, so the backbone keeps BatchNorm and plain 3x3 stride-2 CBS (docs/lmsfa.md, choice #6).
* :class:`ConvGNAct` — Conv -> GroupNorm(16) -> SiLU, the normalisation LMSH uses "to stabilise
  batch-1 training" (paper §III-A "Head", §III-D; 16 groups). GroupNorm cannot be folded.
* :class:`Scale` — the per-level learnable scalar (init 1.0) of LMSH on the box logits.
* :class:`DWConv`, :class:`DSConv` — depthwise and depthwise-separable CBS (used by the LADH
  comparator head of Table VIII).

BatchNorm uses YOLOv8's ``eps=1e-3, momentum=0.03`` (Ultralytics sets these on every
BatchNorm2d of a model at build time); :func:`yolo_bn_defaults` applies them to a whole module.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import torch
from torch import Tensor, nn
from medseg_core.errors import ConfigError, here

__all__ = [
    "autopad", "make_divisible", "fold_bn", "fold_own_bn", "yolo_bn_defaults",
    "ConvBNAct", "ConvGNAct", "DWConv", "DSConv", "Scale",
]

IntOrPair = Union[int, Sequence[int]]


def autopad(k: IntOrPair, p: Optional[IntOrPair] = None, d: int = 1) -> IntOrPair:
    """'Same' padding for an odd kernel (with dilation ``d``)."""
    if d > 1:
        k = d * (k - 1) + 1 if isinstance(k, int) else [d * (x - 1) + 1 for x in k]
    if p is None:
        p = k // 2 if isinstance(k, int) else [x // 2 for x in k]
    return p


def make_divisible(x: float, divisor: int = 8) -> int:
    """Smallest multiple of ``divisor`` that is >= x (YOLOv8 channel rounding)."""
    return int(math.ceil(x / divisor) * divisor)


def yolo_bn_defaults(module: nn.Module) -> nn.Module:
    """Set eps=1e-3, momentum=0.03 on every BatchNorm2d in ``module`` (YOLOv8's initialize_weights)."""
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eps = 1e-3
            m.momentum = 0.03
    return module


@torch.no_grad()
def fold_bn(conv: nn.Module, bn: nn.Module) -> None:
    """Fold an eval-mode BatchNorm into the preceding conv (in place; the conv gains a bias).

    W' = W * gamma / sigma,  b' = beta + (b - mu) * gamma / sigma,  sigma = sqrt(var + eps).
    Works for Conv1d/2d/3d (output channels on dim 0).
    """
    std = (bn.running_var + bn.eps).sqrt()
    gamma = bn.weight if bn.weight is not None else torch.ones_like(std)
    beta = bn.bias if bn.bias is not None else torch.zeros_like(std)
    factor = gamma / std
    conv.weight.mul_(factor.view(-1, *([1] * (conv.weight.dim() - 1))))
    b = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    new_bias = beta + (b - bn.running_mean) * factor
    if conv.bias is None:
        conv.bias = nn.Parameter(new_bias)
    else:
        conv.bias.copy_(new_bias)


@torch.no_grad()
def fold_own_bn(module: nn.Module, conv: nn.Module) -> None:
    """Fold ``module.bn`` into ``conv`` and replace it by ``nn.Identity`` (a no-op once folded)."""
    if isinstance(module.bn, (nn.BatchNorm2d, nn.BatchNorm3d)):
        fold_bn(conv, module.bn)
        module.bn = nn.Identity()


def _act(act: Union[bool, nn.Module]) -> nn.Module:
    if act is True:
        return nn.SiLU(inplace=True)
    if isinstance(act, nn.Module):
        return act
    return nn.Identity()


class ConvBNAct(nn.Module):
    """Conv2d(bias=False) -> BatchNorm2d -> SiLU ("CBS"). ``act=False`` drops the activation.

    Params: c1/g * c2 * k^2 + 2 * c2. ``switch_to_deploy()`` folds the BatchNorm into the conv.
    """

    def __init__(
        self, c1: int, c2: int, k: IntOrPair = 1, s: int = 1, p: Optional[IntOrPair] = None,
        g: int = 1, d: int = 1, act: Union[bool, nn.Module] = True,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, autopad(k, p, d), groups=g, dilation=d, bias=False)
        self.bn: nn.Module = nn.BatchNorm2d(c2)
        self.act = _act(act)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.bn(self.conv(x)))

    def switch_to_deploy(self) -> None:
        fold_own_bn(self, self.conv)


class ConvGNAct(nn.Module):
    """Conv2d(bias=False) -> GroupNorm(num_groups) -> SiLU (LMSH's ``Conv_GN``; not foldable)."""

    def __init__(
        self, c1: int, c2: int, k: int = 1, s: int = 1, g: int = 1, gn_groups: int = 16,
        act: Union[bool, nn.Module] = True,
    ) -> None:
        super().__init__()
        if c2 % gn_groups:
            raise ConfigError(
                here() + f"GroupNorm with {gn_groups} groups needs channels divisible "
                f"by it, got {c2} (set MODEL.LMSFA.HEAD_GN_GROUPS or the head width)"
            )
        self.conv = nn.Conv2d(c1, c2, k, s, autopad(k), groups=g, bias=False)
        self.gn = nn.GroupNorm(gn_groups, c2)
        self.act = _act(act)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.gn(self.conv(x)))


class DWConv(ConvBNAct):
    """Depthwise CBS (groups = gcd(c1, c2))."""

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1, d: int = 1,
                 act: Union[bool, nn.Module] = True) -> None:
        super().__init__(c1, c2, k, s, g=math.gcd(c1, c2), d=d, act=act)


class DSConv(nn.Module):
    """Depthwise-separable conv: depthwise CBS k x k, then pointwise CBS 1x1 (LADH's ``DSConv``)."""

    def __init__(self, c1: int, c2: int, k: int = 3, s: int = 1) -> None:
        super().__init__()
        self.dwconv = DWConv(c1, c1, k, s)
        self.pwconv = ConvBNAct(c1, c2, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.pwconv(self.dwconv(x))


class Scale(nn.Module):
    """Learnable scalar multiplier (one per pyramid level in LMSH; init 1.0)."""

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(float(scale)))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale

"""Small 3D building blocks shared by the LightMedSeg modules (not paper components).

Normalisation defaults to GroupNorm: the paper does not name one, training batches of 3D crops
are tiny (1-2), and GroupNorm behaves identically in training and sliding-window inference.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["norm3d", "act", "ConvNormAct", "SqueezeExcite3D", "resize_to"]


def norm3d(kind: str, channels: int, groups: int = 4) -> nn.Module:
    """"GN" (GroupNorm with gcd(groups, channels) groups), "IN" (affine InstanceNorm) or "BN"."""
    if kind == "GN":
        return nn.GroupNorm(math.gcd(int(groups), channels), channels)
    if kind == "IN":
        return nn.InstanceNorm3d(channels, affine=True)
    if kind == "BN":
        return nn.BatchNorm3d(channels)
    raise ValueError(f"MODEL.LIGHTMEDSEG.NORM must be GN, IN or BN, got {kind!r}")


def act(kind: str) -> nn.Module:
    """"GELU", "SiLU" or "ReLU"."""
    table = {"GELU": nn.GELU, "SiLU": nn.SiLU, "ReLU": nn.ReLU}
    if kind not in table:
        raise ValueError(f"activation must be one of {sorted(table)}, got {kind!r}")
    return table[kind]()


class ConvNormAct(nn.Sequential):
    """Conv3d (no bias, "same" padding) -> norm -> optional activation."""

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel: int = 1,
        stride: int = 1,
        groups: int = 1,
        dilation: int = 1,
        norm: str = "GN",
        norm_groups: int = 4,
        activation: str = "GELU",
    ):
        layers = [
            nn.Conv3d(cin, cout, kernel, stride, padding=dilation * (kernel // 2), dilation=dilation,
                      groups=groups, bias=False),
            norm3d(norm, cout, norm_groups),
        ]
        if activation:
            layers.append(act(activation))
        super().__init__(*layers)


class SqueezeExcite3D(nn.Module):
    """Channel re-weighting: global average pool -> 1x1 (C -> C/r) -> SiLU -> 1x1 -> sigmoid."""

    def __init__(self, channels: int, reduction: int = 4):
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.fc1 = nn.Conv3d(channels, hidden, 1)
        self.fc2 = nn.Conv3d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = x.mean(dim=(2, 3, 4), keepdim=True)
        return x * torch.sigmoid(self.fc2(F.silu(self.fc1(w))))


def resize_to(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Resize the last three axes: area averaging when shrinking by integer factors (no
    aliasing), trilinear otherwise."""
    size = tuple(int(s) for s in size)
    cur = tuple(x.shape[-3:])
    if cur == size:
        return x
    if all(c >= s and c % s == 0 for c, s in zip(cur, size)):
        return F.avg_pool3d(x, kernel_size=tuple(c // s for c, s in zip(cur, size)))
    return F.interpolate(x, size=size, mode="trilinear", align_corners=False)

"""SOLOv2's heads (Wang et al. 2020, Sec. 3.2-3.3, Fig. 3-4).

* :class:`SOLOv2InstanceHead`: per FPN level the feature is resized to S x S (bilinear) and fed
  to two branches of ``num_convs`` 3x3 conv + GN + ReLU layers (512 channels for R50), shared
  over the levels:

  - **category branch** -> S x S x C sigmoid scores (bias at the focal-loss prior);
  - **kernel branch** (input concatenated with two normalised x / y coordinate channels, as
    CoordConv, so the kernels know their position) -> S x S x D kernel weights,
    D = E * k^2 (E = mask feature channels, k = 1: dynamic 1x1 convs, the paper's best).

* :class:`SOLOv2MaskFeatureHead`: the unified, high-resolution mask feature F (Fig. 4): level
  P_{2+i} goes through i repeats of (3x3 conv + GN + ReLU, x2 bilinear upsampling) (one conv
  and no upsampling for P2), the deepest level with the coordinate channels concatenated first;
  the sum goes through a 1x1 conv + GN + ReLU to E channels at 1/4 of the input.

Initialisation as the reference code (the paper does not say): conv weights N(0, 0.01), zero
biases, the category bias at -log((1 - p) / p), p = 0.01.
"""
from __future__ import annotations

import math
from typing import List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import medseg_core  # noqa: F401  (compatibility shim before detectron2)

from detectron2.layers import Conv2d, get_norm

__all__ = ["coord_features", "SOLOv2InstanceHead", "SOLOv2MaskFeatureHead"]


def coord_features(x: Tensor) -> Tensor:
    """(B, 2, H, W) x and y coordinates in [-1, 1] for the grid of ``x``."""
    b, _, h, w = x.shape
    xs = torch.linspace(-1, 1, w, device=x.device, dtype=x.dtype)
    ys = torch.linspace(-1, 1, h, device=x.device, dtype=x.dtype)
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([xx, yy])[None].expand(b, 2, h, w)


def _conv_norm_relu(cin: int, cout: int, k: int, norm: str) -> Conv2d:
    return Conv2d(cin, cout, k, padding=k // 2, bias=not norm, norm=get_norm(norm, cout), activation=F.relu)


def _normal_init(module: nn.Module, std: float = 0.01) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class SOLOv2InstanceHead(nn.Module):
    """FPN levels -> per level category logits (B, C, S, S) and kernels (B, D, S, S)."""

    def __init__(
        self, in_channels: int, num_classes: int, num_grids: Sequence[int], kernel_dim: int,
        channels: int = 512, num_convs: int = 4, norm: str = "GN", prior_prob: float = 0.01,
    ) -> None:
        super().__init__()
        self.num_grids = [int(s) for s in num_grids]
        self.cate_tower = nn.Sequential(
            *[_conv_norm_relu(in_channels if i == 0 else channels, channels, 3, norm) for i in range(num_convs)]
        )
        self.kernel_tower = nn.Sequential(
            *[_conv_norm_relu(in_channels + 2 if i == 0 else channels, channels, 3, norm) for i in range(num_convs)]
        )
        self.cate_pred = nn.Conv2d(channels, num_classes, 3, padding=1)
        self.kernel_pred = nn.Conv2d(channels, kernel_dim, 3, padding=1)
        _normal_init(self)
        nn.init.constant_(self.cate_pred.bias, -math.log((1 - prior_prob) / prior_prob))

    def forward(self, features: List[Tensor]) -> Tuple[List[Tensor], List[Tensor]]:
        if len(features) != len(self.num_grids):
            raise ValueError(f"SOLOv2: {len(features)} feature levels but {len(self.num_grids)} grid numbers")
        cate, kernel = [], []
        for x, s in zip(features, self.num_grids):
            x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False)
            kernel.append(self.kernel_pred(self.kernel_tower(torch.cat([x, coord_features(x)], 1))))
            cate.append(self.cate_pred(self.cate_tower(x)))
        return cate, kernel


class SOLOv2MaskFeatureHead(nn.Module):
    """FPN levels P2..P5 -> mask feature F (B, E, H/4, W/4)."""

    def __init__(self, in_channels: int, num_levels: int, channels: int, out_channels: int, norm: str = "GN") -> None:
        super().__init__()
        self.levels = nn.ModuleList()
        for i in range(num_levels):
            deepest = i == num_levels - 1
            layers: List[nn.Module] = []
            for j in range(max(i, 1)):
                cin = (in_channels + (2 if deepest else 0)) if j == 0 else channels
                layers.append(_conv_norm_relu(cin, channels, 3, norm))
                if i > 0:
                    layers.append(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False))
            self.levels.append(nn.Sequential(*layers))
        self.out = _conv_norm_relu(channels, out_channels, 1, norm)
        _normal_init(self)

    def forward(self, features: List[Tensor]) -> Tensor:
        if len(features) != len(self.levels):
            raise ValueError(f"SOLOv2 mask feature branch: {len(features)} levels given, {len(self.levels)} built")
        total = None
        for i, (x, level) in enumerate(zip(features, self.levels)):
            if i == len(self.levels) - 1:
                x = torch.cat([x, coord_features(x)], 1)
            y = level(x)
            if total is not None and y.shape[-2:] != total.shape[-2:]:
                y = F.interpolate(y, size=total.shape[-2:], mode="bilinear", align_corners=False)
            total = y if total is None else total + y
        return self.out(total)

"""Learned multi-scale skip router (LightMedSeg, abstract: "multi-scale features are adaptively
fused via a learned skip router"; Fig. 1: "(iii) multi-scale learned skip fusion").

Chosen (docs/lightmedseg.md, design item 6), UNet 3+ / UCTransNet-style full-scale skips made
input-adaptive: every encoder output E_1..E_4 is projected to ``router_channels`` (1x1 + norm)
at its own resolution; for each decoder level, all four are resized to that level (area
averaging when shrinking, trilinear when enlarging), a 1x1 convolution over their concatenation
gives **per-voxel softmax weights over the sources**, and the weighted sum goes through a 1x1
(+ norm, activation) to the level's width.
"""
from __future__ import annotations

from typing import List, Sequence

import torch
from torch import nn

from .layers import ConvNormAct, resize_to

__all__ = ["MultiScaleSkipRouter"]


class MultiScaleSkipRouter(nn.Module):
    """Encoder features [E_1..E_n] -> one routed skip per decoder level (``level_channels``)."""

    def __init__(
        self,
        encoder_channels: Sequence[int],
        level_channels: Sequence[int],
        router_channels: int = 32,
        norm: str = "GN",
        norm_groups: int = 4,
    ):
        super().__init__()
        n = len(encoder_channels)
        self.proj = nn.ModuleList(
            [ConvNormAct(c, router_channels, 1, norm=norm, norm_groups=norm_groups, activation="")
             for c in encoder_channels]
        )
        self.gates = nn.ModuleList([nn.Conv3d(n * router_channels, n, 1) for _ in level_channels])
        self.out = nn.ModuleList(
            [ConvNormAct(router_channels, c, 1, norm=norm, norm_groups=norm_groups) for c in level_channels]
        )

    def forward(self, feats: Sequence[torch.Tensor], sizes: Sequence[Sequence[int]]) -> List[torch.Tensor]:
        projected = [p(f) for p, f in zip(self.proj, feats)]
        skips = []
        for gate, out, size in zip(self.gates, self.out, sizes):
            srcs = [resize_to(p, size) for p in projected]
            w = gate(torch.cat(srcs, dim=1)).softmax(1)  # (B, n, ...)
            fused = sum(w[:, i : i + 1] * s for i, s in enumerate(srcs))
            skips.append(out(fused))
        return skips

"""Texture-aware routing (LightMedSeg, abstract: "texture-aware routing dynamically allocate[s]
representational capacity to boundary-rich regions"; Fig. 1: "texture-routed processing at
every encoder stage").

Chosen (docs/lightmedseg.md, design item 5): two depthwise 3^3 paths, a local "detail" path and a
dilation-2 "context" path, mixed per voxel by the texture map resized to the stage:
y = T * detail(x) + (1 - T) * context(x). Boundary-rich voxels (T near 1) get the fine path,
flat regions the wide one. Used as a residual branch inside each encoder stage.
"""
from __future__ import annotations

import torch
from torch import nn

from .layers import ConvNormAct, resize_to

__all__ = ["TextureRouting"]


class TextureRouting(nn.Module):
    """(x, T) -> T * detail(x) + (1 - T) * context(x), with T resized to x."""

    def __init__(self, channels: int, dilation: int = 2, norm: str = "GN", norm_groups: int = 4):
        super().__init__()
        self.detail = ConvNormAct(channels, channels, 3, groups=channels, norm=norm, norm_groups=norm_groups,
                                  activation="")
        self.context = ConvNormAct(channels, channels, 3, groups=channels, dilation=dilation, norm=norm,
                                   norm_groups=norm_groups, activation="")

    def forward(self, x: torch.Tensor, texture: torch.Tensor) -> torch.Tensor:
        t = resize_to(texture, x.shape[2:])
        return t * self.detail(x) + (1 - t) * self.context(x)

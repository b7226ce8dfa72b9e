"""Adaptive feature mixing (LightMedSeg, Fig. 1 caption: the priors "guide (i) adaptive feature
mixing before the encoder").

The paper names the step only. Chosen (docs/lightmedseg.md, item 4): two cheap branches of the
stem features f, a pointwise 1x1 and a depthwise 3^3 convolution (each with norm and
activation), blended per voxel by softmax gates alpha computed by a 1x1 convolution over [f, T]
(the texture map is the prior that guides the mix): f' = f + alpha_1 * b_1 + alpha_2 * b_2.
"""
from __future__ import annotations

import torch
from torch import nn

from .layers import ConvNormAct

__all__ = ["AdaptiveFeatureMixing"]


class AdaptiveFeatureMixing(nn.Module):
    """(f, T) -> f + sum_i alpha_i(f, T) * branch_i(f)."""

    def __init__(self, channels: int, norm: str = "GN", norm_groups: int = 4):
        super().__init__()
        self.pointwise = ConvNormAct(channels, channels, 1, norm=norm, norm_groups=norm_groups)
        self.depthwise = ConvNormAct(channels, channels, 3, groups=channels, norm=norm, norm_groups=norm_groups)
        self.gate = nn.Conv3d(channels + 1, 2, 1)

    def forward(self, f: torch.Tensor, texture: torch.Tensor) -> torch.Tensor:
        alpha = self.gate(torch.cat([f, texture], dim=1)).softmax(1)
        return f + alpha[:, :1] * self.pointwise(f) + alpha[:, 1:] * self.depthwise(f)

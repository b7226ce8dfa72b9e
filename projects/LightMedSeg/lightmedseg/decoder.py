"""Adaptive decoder stage (LightMedSeg, Fig. 1: "(iv) an adaptive decoder with content-tied
spatial position bias"; abstract: "adaptive context modeling").

Chosen (docs/lightmedseg.md, design item 7), per decoder level:

1. a 1x1 convolution (+ norm) to the level width, then trilinear x2 to the skip's size (the
   1x1 is applied before the up-sampling: both are linear and commute, and the low-resolution
   order is 8x cheaper);
2. plus the anchor-relative position bias;
3. concatenation with the routed skip and a 1x1 fuse (+ norm, activation);
4. a three-branch block - depthwise 3^3, GhostConv3D and pointwise 1x1 - blended by per-voxel
   softmax weights pi (a 1x1 to 3 channels), added as a residual, then squeeze-and-excitation.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .ghost import GhostConv3D
from .layers import ConvNormAct, SqueezeExcite3D
from .position_bias import AnchorRelativePositionBias

__all__ = ["AdaptiveDecoderStage"]


class AdaptiveDecoderStage(nn.Module):
    """x (B, Cin, ...), routed skip (B, C, ...x2), anchors (B, K, 3) -> (B, C, ...x2)."""

    def __init__(
        self,
        cin: int,
        cout: int,
        num_anchors: int,
        se_reduction: int = 4,
        position_distance: bool = True,
        norm: str = "GN",
        norm_groups: int = 4,
    ):
        super().__init__()
        self.up_proj = ConvNormAct(cin, cout, 1, norm=norm, norm_groups=norm_groups, activation="")
        self.position = AnchorRelativePositionBias(num_anchors, cout, position_distance)
        self.fuse = ConvNormAct(2 * cout, cout, 1, norm=norm, norm_groups=norm_groups)
        self.branch_dw = ConvNormAct(cout, cout, 3, groups=cout, norm=norm, norm_groups=norm_groups)
        self.branch_ghost = GhostConv3D(cout, cout, 3, norm=norm, norm_groups=norm_groups)
        self.branch_pw = ConvNormAct(cout, cout, 1, norm=norm, norm_groups=norm_groups)
        self.pi = nn.Conv3d(cout, 3, 1)
        self.se = SqueezeExcite3D(cout, se_reduction)

    def forward(self, x: torch.Tensor, skip: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
        size = skip.shape[2:]
        x = F.interpolate(self.up_proj(x), size=size, mode="trilinear", align_corners=False)
        x = x + self.position(anchors, size)
        x = self.fuse(torch.cat([x, skip], dim=1))
        pi = self.pi(x).softmax(1)
        y = pi[:, 0:1] * self.branch_dw(x) + pi[:, 1:2] * self.branch_ghost(x) + pi[:, 2:3] * self.branch_pw(x)
        return self.se(x + y)

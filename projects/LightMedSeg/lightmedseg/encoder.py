"""Anchor-conditioned, texture-routed encoder stage (LightMedSeg, Fig. 1: "(ii) anchor-conditioned,
texture-routed processing at every encoder stage"; abstract: "Computational redundancy is
minimized through ghost and depthwise convolutions").

The paper gives no stage layout. Chosen (docs/lightmedseg.md, design item 5), per stage:

1. GhostConv3D to the stage width (stride 2 for stages 2-4: the down-sampling);
2. FiLM from the anchors S (zero-initialised, so identity at start);
3. texture routing as a residual: x + T * detail(x) + (1 - T) * context(x) (depthwise 3^3 and
   dilated depthwise 3^3);
4. a pointwise MLP (expansion ``mlp_ratio``, GELU) as a residual;
5. squeeze-and-excitation (reduction ``se_reduction``).

Four stages with widths (24, 48, 72, 112) at D/2, D/4, D/8, D/16 (the calibrated design).
"""
from __future__ import annotations

import torch
from torch import nn

from .film import AnchorFiLM
from .ghost import GhostConv3D
from .layers import ConvNormAct, SqueezeExcite3D
from .routing import TextureRouting

__all__ = ["EncoderStage"]


class EncoderStage(nn.Module):
    """x (B, Cin, ...), anchors (B, K, 3), texture (B, 1, ...) -> (B, Cout, .../stride)."""

    def __init__(
        self,
        cin: int,
        cout: int,
        stride: int,
        num_anchors: int,
        mlp_ratio: float = 2.0,
        se_reduction: int = 4,
        context_dilation: int = 2,
        norm: str = "GN",
        norm_groups: int = 4,
    ):
        super().__init__()
        self.ghost = GhostConv3D(cin, cout, 3, stride, norm=norm, norm_groups=norm_groups)
        self.film = AnchorFiLM(num_anchors, cout)
        self.route = TextureRouting(cout, context_dilation, norm=norm, norm_groups=norm_groups)
        hidden = int(round(cout * mlp_ratio))
        self.mlp = nn.Sequential(
            ConvNormAct(cout, hidden, 1, norm=norm, norm_groups=norm_groups),
            ConvNormAct(hidden, cout, 1, norm=norm, norm_groups=norm_groups, activation=""),
        )
        self.se = SqueezeExcite3D(cout, se_reduction)

    def forward(self, x: torch.Tensor, anchors: torch.Tensor, texture: torch.Tensor) -> torch.Tensor:
        x = self.film(self.ghost(x), anchors)
        x = x + self.route(x, texture)
        x = x + self.mlp(x)
        return self.se(x)

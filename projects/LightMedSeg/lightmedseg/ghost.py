"""GhostConv3D (LightMedSeg, Fig. 1 and abstract).

Realises: "The input volume is first embedded by a stride-2 GhostConv3D stem" (Fig. 1 caption)
and the "ghost ... convolutions" by which "Computational redundancy is minimized" (abstract).

The paper gives no formula; this follows GhostNet (Han et al., CVPR 2020) in 3D, as
docs/lightmedseg.md (item 1) calibrates it: a primary k^3 convolution produces ceil(C_out / ratio)
"intrinsic" channels (stride applied here), a cheap depthwise k^3 convolution derives the
remaining "ghost" channels from them, and the two are concatenated. Ratio 2 (GhostNet's
default); each convolution is followed by the norm and activation.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .layers import ConvNormAct

__all__ = ["GhostConv3D"]


class GhostConv3D(nn.Module):
    """Primary k^3 conv (stride s) to C/ratio channels + depthwise "cheap" conv to the rest."""

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel: int = 3,
        stride: int = 1,
        ratio: int = 2,
        cheap_kernel: int = 3,
        norm: str = "GN",
        norm_groups: int = 4,
        activation: str = "GELU",
    ):
        super().__init__()
        if ratio < 2:
            raise ValueError(f"GhostConv3D ratio must be >= 2, got {ratio}")
        self.cout = cout
        init = math.ceil(cout / ratio)
        self.primary = ConvNormAct(cin, init, kernel, stride, norm=norm, norm_groups=norm_groups, activation=activation)
        self.cheap = ConvNormAct(
            init, init * (ratio - 1), cheap_kernel, groups=init, norm=norm, norm_groups=norm_groups, activation=activation
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.primary(x)
        return torch.cat([y, self.cheap(y)], dim=1)[:, : self.cout]

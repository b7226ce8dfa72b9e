"""Local Structural Prior Module (LightMedSeg, Fig. 1 caption: "the Local Structural Prior
Module (LSPM) extract[s] ... a texture routing map T from the stem features"; abstract: "a local
structural prior module and texture-aware routing dynamically allocate representational
capacity to boundary-rich regions").

Not specified further by the paper. Chosen (docs/lightmedseg.md, design item 3): a learned high-pass
magnitude, T = sigmoid(1x1(|f - DW_k(f)|)) with a depthwise k^3 (k = 5) filter and a single
output channel, so T in [0, 1] is high at boundaries and texture and low in flat regions.
The depthwise filter starts as a box (mean) filter, so at initialisation |f - DW(f)| is exactly
the deviation from the local mean (a true high-pass), and it uses replicate padding so that the
volume border does not look like an edge.
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["LocalStructuralPriorModule"]


class LocalStructuralPriorModule(nn.Module):
    """Stem features (B, C, ...) -> texture routing map T (B, 1, ...) in [0, 1]."""

    def __init__(self, channels: int, kernel: int = 5):
        super().__init__()
        self.smooth = nn.Conv3d(channels, channels, kernel, padding=kernel // 2, groups=channels,
                                bias=False, padding_mode="replicate")
        nn.init.constant_(self.smooth.weight, 1.0 / kernel**3)
        self.proj = nn.Conv3d(channels, 1, 1)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.proj((f - self.smooth(f)).abs()))

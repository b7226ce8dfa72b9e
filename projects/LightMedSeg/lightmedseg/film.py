"""Anchor-conditioned FiLM (LightMedSeg, abstract: "Anchor-conditioned FiLM modulation enables
anatomy-aware feature calibration"; Fig. 1: "anchor-conditioned ... processing at every encoder
stage").

FiLM (Perez et al., AAAI 2018) scales and shifts channels from a conditioning vector. The paper
does not give the conditioning network; chosen (docs/lightmedseg.md, item 5): the flattened anchors
S (3K numbers) through one Linear to (gamma, beta) in R^{2C}, applied as x * (1 + gamma) + beta.
The Linear is zero-initialised, so every stage starts as the identity and learns how much the
anchor positions should recalibrate it.
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["AnchorFiLM"]


class AnchorFiLM(nn.Module):
    """x (B, C, ...), anchors (B, K, 3) -> x * (1 + gamma(S)) + beta(S)."""

    def __init__(self, num_anchors: int, channels: int):
        super().__init__()
        self.fc = nn.Linear(3 * num_anchors, 2 * channels)
        nn.init.zeros_(self.fc.weight)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.fc(anchors.flatten(1)).chunk(2, dim=1)
        shape = gamma.shape + (1,) * (x.ndim - 2)
        return x * (1 + gamma.view(shape)) + beta.view(shape)

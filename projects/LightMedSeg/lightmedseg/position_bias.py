"""Anchor-relative spatial position bias (LightMedSeg, abstract: "... a learned skip router with
anchor-relative spatial position bias"; Fig. 1: "(iv) an adaptive decoder with content-tied
spatial position bias").

Chosen (docs/lightmedseg.md, item 7): for every voxel p (normalised voxel-centre coordinates in
(0, 1)) and anchor s_k, the offsets p - s_k (3K channels) are mapped by a 1x1 convolution to a
bias added to the decoder features. "Content-tied" because S is predicted from the image,
"relative" because only offsets to the anchors enter.

Deviation from the note, on purpose: a 1x1 convolution of the offsets alone is linear,
sum_k W_k (p - s_k) = (sum_k W_k) p - sum_k W_k s_k, i.e. an absolute-position ramp plus a
per-volume constant, so nothing anchor-relative would survive. The Euclidean distances
|p - s_k| (K more channels) make the bias a non-linear, genuinely anchor-centred field
(``MODEL.LIGHTMEDSEG.POSITION_BIAS_DISTANCE``, on by default).
"""
from __future__ import annotations

import torch
from torch import nn

from .anchors import normalized_grid

__all__ = ["AnchorRelativePositionBias"]


class AnchorRelativePositionBias(nn.Module):
    """anchors (B, K, 3), spatial size -> bias (B, C, *size)."""

    def __init__(self, num_anchors: int, channels: int, use_distance: bool = True):
        super().__init__()
        self.use_distance = bool(use_distance)
        cin = num_anchors * (4 if self.use_distance else 3)
        self.proj = nn.Conv3d(cin, channels, 1)

    def forward(self, anchors: torch.Tensor, size) -> torch.Tensor:
        grid = normalized_grid(size, anchors.device, anchors.dtype)  # (3, D, H, W)
        offsets = grid[None, None] - anchors[..., None, None, None]  # (B, K, 3, D, H, W)
        feats = [offsets.flatten(1, 2)]
        if self.use_distance:
            feats.append(offsets.pow(2).sum(2).add(1e-8).sqrt())
        return self.proj(torch.cat(feats, dim=1))

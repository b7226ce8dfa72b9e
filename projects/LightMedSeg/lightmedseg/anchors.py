"""Global Anchor Detector (LightMedSeg, Fig. 1 caption: "The Global Anchor Detector ... extract[s]
spatial anchors S ... from the stem features"; title: "Learned Spatial Anchors").

The paper does not say how S is computed. Chosen (docs/lightmedseg.md, item 2): K heatmaps at D/4
from the stem features (depthwise 3^3 stride 2 -> norm -> SiLU -> 1x1 to K), a spatial softmax
per heatmap, and a **soft-argmax**: each anchor is the expected normalised (z, y, x) voxel-centre
coordinate under its heatmap, so S lies in [0, 1]^{K x 3}. This is differentiable, ties each
anchor to where the image evidence is (content-tied) and costs about C*K parameters; the
alternative of a pooled MLP regressing 3K numbers ignores where the evidence lies. K = 8
(a summary of the paper mentions 8 anchors); the softmax temperature is a config key.
"""
from __future__ import annotations

from typing import Sequence, Tuple

import torch
from torch import nn

from .layers import ConvNormAct

__all__ = ["GlobalAnchorDetector", "normalized_grid", "soft_argmax_3d"]


def normalized_grid(size: Sequence[int], device=None, dtype=torch.float32) -> torch.Tensor:
    """(3, D, H, W) voxel-centre coordinates (i + 0.5) / n per axis, in (0, 1)."""
    axes = [(torch.arange(n, device=device, dtype=dtype) + 0.5) / n for n in size]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=0)


def soft_argmax_3d(logits: torch.Tensor, temperature: float = 1.0) -> Tuple[torch.Tensor, torch.Tensor]:
    """(B, K, D, H, W) heatmap logits -> expected normalised coordinates (B, K, 3) and the
    per-heatmap spatial softmax (B, K, D, H, W)."""
    b, k = logits.shape[:2]
    size = logits.shape[2:]
    prob = (logits.flatten(2) / temperature).softmax(-1)  # (B, K, N)
    grid = normalized_grid(size, logits.device, prob.dtype).flatten(1)  # (3, N)
    return torch.einsum("bkn,cn->bkc", prob, grid), prob.view(b, k, *size)


class GlobalAnchorDetector(nn.Module):
    """Stem features (B, C, D/2, ...) -> anchors S (B, K, 3) in [0, 1] and heatmaps (B, K, D/4, ...)."""

    def __init__(
        self,
        channels: int,
        num_anchors: int = 8,
        temperature: float = 1.0,
        norm: str = "GN",
        norm_groups: int = 4,
    ):
        super().__init__()
        self.reduce = ConvNormAct(channels, channels, 3, stride=2, groups=channels, norm=norm,
                                  norm_groups=norm_groups, activation="SiLU")
        self.heatmap = nn.Conv3d(channels, num_anchors, 1)
        self.num_anchors = num_anchors
        self.temperature = float(temperature)

    def forward(self, f: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        return soft_argmax_3d(self.heatmap(self.reduce(f)), self.temperature)

"""EMA: Efficient Multi-scale Attention with cross-spatial learning (Ouyang et al., ICASSP 2023).

The attention inside C2f-Pro (paper §III-B, "EMA replaces SE"). The paper's eq. 8-9 describe an
SE-like "GAP + MLP + optional spatial gate"; that is not what EMA computes and not what the
released model uses, so this file implements the real EMA (Ouyang et al., ICASSP 2023), with the
group factor G = 8 of the community code LMSF-A was built from (the official default 32 would
not divide the 16-channel blocks at n-scale; docs/lmsfa.md, choice #8).

For x (B, C, H, W), cg = C / G, group_x = x viewed as (B*G, cg, H, W):
1. 1x1 branch: average along W -> (cg, H, 1) and along H -> (cg, W, 1); concatenate along the
   spatial axis, shared 1x1 conv (cg -> cg, bias), split, sigmoid; re-weight group_x by both
   (coordinate-attention style), then GroupNorm(cg, cg) -> x1.
2. 3x3 branch: 3x3 conv (cg -> cg, bias) on group_x -> x2.
3. cross-spatial learning: softmax over channels of GAP(x1) and of GAP(x2);
   weights = softmax(GAP(x1))^T . x2 + softmax(GAP(x2))^T . x1  -> (B*G, 1, H*W).
4. out = group_x * sigmoid(weights), viewed back as (B, C, H, W).

Params = 10 cg^2 + 4 cg (conv1x1 cg^2 + cg, conv3x3 9 cg^2 + cg, GroupNorm 2 cg).
The pools and the softmax are modules (not functional calls) so that module-hook FLOP counters
see them, as the counter behind the paper's numbers did.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from medseg_core.errors import ConfigError, here

__all__ = ["EMA"]


class EMA(nn.Module):
    """Efficient Multi-scale Attention; ``channels`` must be divisible by ``factor``."""

    def __init__(self, channels: int, factor: int = 8) -> None:
        super().__init__()
        if factor < 1 or channels % factor:
            raise ConfigError(
                here() + f"EMA needs channels divisible by the group factor, "
                f"got channels={channels}, factor={factor} (MODEL.LMSFA.EMA_FACTOR)"
            )
        self.groups = factor
        cg = channels // factor
        self.softmax = nn.Softmax(-1)
        self.agp = nn.AdaptiveAvgPool2d((1, 1))
        self.pool_h = nn.AdaptiveAvgPool2d((None, 1))
        self.pool_w = nn.AdaptiveAvgPool2d((1, None))
        self.gn = nn.GroupNorm(cg, cg)
        self.conv1x1 = nn.Conv2d(cg, cg, 1)
        self.conv3x3 = nn.Conv2d(cg, cg, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        g = self.groups
        gx = x.reshape(b * g, c // g, h, w)
        x_h = self.pool_h(gx)                       # (bg, cg, h, 1)
        x_w = self.pool_w(gx).permute(0, 1, 3, 2)   # (bg, cg, w, 1)
        hw = self.conv1x1(torch.cat([x_h, x_w], dim=2))
        x_h, x_w = torch.split(hw, [h, w], dim=2)
        x1 = self.gn(gx * x_h.sigmoid() * x_w.permute(0, 1, 3, 2).sigmoid())
        x2 = self.conv3x3(gx)
        a1 = self.softmax(self.agp(x1).reshape(b * g, -1, 1).permute(0, 2, 1))  # (bg, 1, cg)
        a2 = self.softmax(self.agp(x2).reshape(b * g, -1, 1).permute(0, 2, 1))
        weights = torch.matmul(a1, x2.reshape(b * g, c // g, -1)) + torch.matmul(
            a2, x1.reshape(b * g, c // g, -1)
        )
        return (gx * weights.reshape(b * g, 1, h, w).sigmoid()).reshape(b, c, h, w)

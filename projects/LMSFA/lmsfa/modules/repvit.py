"""RepVGGDW and the RepViT block (RVB), the re-parameterisable unit of C2f-Pro (paper §III-B).

C2f-Pro "integrates re-parameterized ViT convolutional cells (RVB [42]) and replaces SE with
EMA" (§III-B, eq. 7): multi-branch while training, a single path at inference. The paper does not
give the block; this follows RepViT (Wang et al., CVPR 2024) in the stride-1 form of the
community ``RepViTBlock`` the released model was built from:

* token mixer = :class:`RepVGGDW` (BN(DW3x3(x)) + DW1x1(x) + x, then an outer BN), followed by
  the attention module (EMA in LMSF-A, SE in RepViT, or none);
* channel mixer (residual) = 1x1 Conv-BN (c -> 2c) -> GELU -> 1x1 Conv-BN (2c -> c) whose BN
  weight starts at 0, so the residual starts as identity.

RepVGGDW is RepViT's flavour (3x3 + 1x1 + identity), not the 7x7 + 3x3 one of Ultralytics'
YOLOv10 code (that one gives 1.859 M parameters and 0.15 GFLOPs more, inconsistent with the
paper; docs/lmsfa.md, choice #7).

``switch_to_deploy()`` (called by :func:`lmsfa.fuse.fuse_model`) folds the branches:
RepVGGDW -> one biased 3x3 depthwise conv; each Conv-BN -> one biased conv. EMA and GELU stay.
Params: RepVGGDW 15c (fused 10c); channel mixer 4c^2 + 6c (fused 4c^2 + 3c).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .conv import fold_bn, fold_own_bn

__all__ = ["Conv2dBN", "RepVGGDW", "RepViTBlock"]


class Conv2dBN(nn.Module):
    """Conv2d (no bias) + BatchNorm2d without activation; BN weight initialised to ``bn_weight_init``."""

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1, p: int = 0, groups: int = 1,
                 bn_weight_init: float = 1.0) -> None:
        super().__init__()
        self.c = nn.Conv2d(c1, c2, k, s, p, groups=groups, bias=False)
        self.bn: nn.Module = nn.BatchNorm2d(c2)
        nn.init.constant_(self.bn.weight, bn_weight_init)
        nn.init.constant_(self.bn.bias, 0.0)

    def forward(self, x: Tensor) -> Tensor:
        return self.bn(self.c(x))

    def switch_to_deploy(self) -> None:
        fold_own_bn(self, self.c)


class RepVGGDW(nn.Module):
    """Training: BN_out(BN(DW3x3(x)) + DW1x1(x) + x). Deploy: one 3x3 depthwise conv with bias."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.conv = Conv2dBN(channels, channels, 3, 1, 1, groups=channels)
        self.conv1 = nn.Conv2d(channels, channels, 1, 1, 0, groups=channels)
        self.bn = nn.BatchNorm2d(channels)
        self.fused: Optional[nn.Conv2d] = None

    def forward(self, x: Tensor) -> Tensor:
        if self.fused is not None:
            return self.fused(x)
        return self.bn(self.conv(x) + self.conv1(x) + x)

    @torch.no_grad()
    def switch_to_deploy(self) -> None:
        """Collapse the three branches and both BatchNorms into ``self.fused`` (eval statistics)."""
        if self.fused is not None:
            return
        c = self.channels
        conv3 = self.conv.c
        w = conv3.weight.clone()
        b = torch.zeros(c, device=w.device, dtype=w.dtype)
        if isinstance(self.conv.bn, nn.BatchNorm2d):  # fold the inner BN into the 3x3 kernel
            bn = self.conv.bn
            f = bn.weight / (bn.running_var + bn.eps).sqrt()
            w = w * f.view(-1, 1, 1, 1)
            b = bn.bias - bn.running_mean * f
        elif conv3.bias is not None:
            b = conv3.bias.clone()
        w = w + F.pad(self.conv1.weight, [1, 1, 1, 1])      # 1x1 branch at the kernel centre
        b = b + self.conv1.bias
        w[:, 0, 1, 1] += 1.0                                  # identity branch
        fused = nn.Conv2d(c, c, 3, 1, 1, groups=c, bias=True).to(w.device, w.dtype)
        fused.weight.copy_(w)
        fused.bias.copy_(b)
        fold_bn(fused, self.bn)                               # outer BN
        self.fused = fused
        del self.conv, self.conv1, self.bn


class _Residual(nn.Module):
    def __init__(self, m: nn.Module) -> None:
        super().__init__()
        self.m = m

    def forward(self, x: Tensor) -> Tensor:
        return x + self.m(x)


class RepViTBlock(nn.Module):
    """RVB (stride 1, c -> c): token mixer (RepVGGDW + optional attention) then residual channel MLP.

    Args:
        channels: input = output channels.
        attention: module applied after RepVGGDW (EMA in LMSF-A), or None.
    """

    def __init__(self, channels: int, attention: Optional[nn.Module] = None) -> None:
        super().__init__()
        self.token_mixer = nn.Sequential(RepVGGDW(channels), attention or nn.Identity())
        self.channel_mixer = _Residual(nn.Sequential(
            Conv2dBN(channels, 2 * channels, 1),
            nn.GELU(),
            Conv2dBN(2 * channels, channels, 1, bn_weight_init=0.0),
        ))

    def forward(self, x: Tensor) -> Tensor:
        return self.channel_mixer(self.token_mixer(x))

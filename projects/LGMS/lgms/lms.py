"""LMS block: local multiscale feature extraction (LGMSNet Sec. 3.1, Eqs. 1-4).

Paper: the C input channels are split into four groups (Eq. 1), each group gets a depthwise
conv with its own kernel k_i (Eq. 2; k = 3, 5, 7, 9 per the ablation in Fig. 7), the groups are
concatenated (Eq. 3), normalised with GroupNorm, activated and added to the input (Eq. 4:
``X' = SiLU(GN(X'_concat)) + X``). Then a 1x1 conv reduces to C/4 channels (BN, SiLU) and a 3x3
conv restores C channels.

The authors' released block (``CMUNeXtBlock_MK_resiual2``, the one their ``SegmsNet`` uses and
the one the published 2.32 M / 4.89 G numbers come from) differs from Eq. 4:

* the input is added *before* the norm, and the activation is GELU:
  ``X' = GELU(GN(X'_concat + X))``;
* the block ends with a second residual: ``out = SiLU(BN(conv3x3(SiLU(BN(conv1x1(X')))))) + X``.

``variant="code"`` (default) reproduces the released block; ``variant="paper"`` follows the
text: Eq. 4 literally, then the 1x1 reduction and 3x3 restoration with no further residual
(the text mentions none). Both variants have the same parameters.

Choices where both are silent: GroupNorm uses one group per kernel group (4 in both code and
paper); the depthwise convs have a bias (as in the code); ``reduction`` (4) is the "one-fourth"
of the text. The block never changes the width (the code ignores its ``ch_out``); the network
widens with a separate 1x1 conv-BN-SiLU after it.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .layers import ConvNormAct, conv_cls, make_norm

__all__ = ["LMSBlock"]


class LMSBlock(nn.Module):
    """Multi-kernel depthwise block; see the module docstring for the equations and variants."""

    def __init__(
        self,
        channels: int,
        kernels: Sequence[int] = (3, 5, 7, 9),
        variant: str = "code",
        nd: int = 2,
        norm: str = "BN",
        reduction: int = 4,
    ):
        super().__init__()
        if variant not in ("code", "paper"):
            raise ValueError(f"LMSBlock: variant must be 'code' or 'paper', got {variant!r}")
        n = len(kernels)
        if channels % n or channels % reduction:
            raise ValueError(
                f"LMSBlock: {channels} channels cannot be split into {n} kernel groups and reduced "
                f"by {reduction}; use a multiple of {max(n, reduction)}"
            )
        if any(k % 2 == 0 for k in kernels):
            raise ValueError(f"LMSBlock: kernel sizes must be odd ('same' padding), got {list(kernels)}")
        self.variant = variant
        self.group = channels // n
        conv = conv_cls(nd)
        # Eq. 2: one depthwise conv per channel group, kernel k_i, "same" padding.
        self.dw = nn.ModuleList(
            conv(self.group, self.group, k, 1, k // 2, groups=self.group, bias=True) for k in kernels
        )
        self.gn = make_norm(f"GN{n}", channels, nd)
        self.act = nn.GELU() if variant == "code" else nn.SiLU()
        # Channel recalibration: 1x1 to C/4 and 3x3 back to C, each BN (IN in 3D) + SiLU.
        self.reduce = ConvNormAct(channels, channels // reduction, 1, nd, norm, nn.SiLU, bias=False)
        self.restore = ConvNormAct(channels // reduction, channels, 3, nd, norm, nn.SiLU, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = torch.split(x, self.group, dim=1)  # Eq. 1
        # Channels-last makes PyTorch's CPU depthwise kernels (above all their backward, 3x
        # faster for a 9^3 kernel) take the oneDNN path; the result is the same.
        fmt = torch.channels_last_3d if x.dim() == 5 else torch.channels_last
        parts = [p.contiguous(memory_format=fmt) for p in parts]
        multi = torch.cat([dw(p) for dw, p in zip(self.dw, parts)], dim=1).contiguous()  # Eqs. 2-3
        if self.variant == "code":
            y = self.act(self.gn(multi + x))
            return self.restore(self.reduce(y)) + x
        y = self.act(self.gn(multi)) + x  # Eq. 4 as written
        return self.restore(self.reduce(y))

"""SSFF — Scale Sequence Feature Fusion, ASF-YOLO's ``ScalSeq`` + ``Add`` (paper
§III-C1; ASF-YOLO's module).

The paper says SSFF "forms a Gaussian scale sequence and uses 3D convolutions to learn
cross-scale coherence" (§I); its eq. 10-12 (tokens, causal mixer, bi-directional update) do not
describe the released model nor its counts, so the YAML module is built (docs/lmsfa.md, choice #1):

* P4 and P5 (backbone strides 16, 32-before-SPPF) are projected by 1x1 CBS to C channels and
  nearest-upsampled to the P3 (stride-8) grid; P3 is projected only if its channels differ
  from C (it does not at n-scale: 64 = 64);
* the three maps are stacked along a new scale axis -> (B, C, 3, H, W);
* Conv3d 1x1x1 (C -> C, bias) -> BatchNorm3d -> LeakyReLU(0.1) -> MaxPool3d over the 3 scales
  -> (B, C, H, W).

:class:`Add` sums its inputs (SSFF output + the neck's P3 output; ASF-YOLO's CPAM attention is
replaced by this plain sum in LMSF-A's YAML).
Params = [c3*C + 2C if projected] + (c4*C + 2C) + (c5*C + 2C) + C^2 + C + 2C.

Speed: at inference the 1x1x1 conv, BatchNorm (running statistics) and LeakyReLU act on each
pixel and each scale separately, so they commute with nearest upsampling: P4 and P5 are mixed
at their own (4x, 16x smaller) resolution, upsampled, and the scale max is a ``torch.maximum``.
Same output, about 4x faster on the CPU than stacking for ``MaxPool3d``. Training keeps the
stacked form because BatchNorm's batch statistics are taken jointly over the three scales, and
the module's switch ``use_reference_path`` (set by FLOP counting,
``medseg_core.complexity.reference_paths``) selects the stacked form, the published architecture.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .conv import ConvBNAct, fold_own_bn

__all__ = ["ScaleSequenceFusion", "Add"]


class ScaleSequenceFusion(nn.Module):
    """forward([p3, p4, p5]) -> (B, channels, H3, W3)."""

    use_reference_path = False  # True: the stacked Conv3d / MaxPool3d form also in eval mode

    def __init__(self, in_channels: Sequence[int], channels: int) -> None:
        super().__init__()
        c3, c4, c5 = in_channels
        self.conv0 = ConvBNAct(c3, channels, 1) if c3 != channels else nn.Identity()
        self.conv1 = ConvBNAct(c4, channels, 1)
        self.conv2 = ConvBNAct(c5, channels, 1)
        self.conv3d = nn.Conv3d(channels, channels, kernel_size=(1, 1, 1))
        self.bn: nn.Module = nn.BatchNorm3d(channels)
        self.act = nn.LeakyReLU(0.1)
        self.pool_3d = nn.MaxPool3d(kernel_size=(3, 1, 1))

    def forward(self, x: Sequence[Tensor]) -> Tensor:
        p3, p4, p5 = x
        p3, p4, p5 = self.conv0(p3), self.conv1(p4), self.conv2(p5)
        size = p3.shape[-2:]
        if not self.training and not self.use_reference_path:
            y3, y4, y5 = (self._mix(p) for p in (p3, p4, p5))
            y4 = F.interpolate(y4, size=size, mode="nearest")
            y5 = F.interpolate(y5, size=size, mode="nearest")
            return torch.maximum(torch.maximum(y3, y4), y5)
        p4 = F.interpolate(p4, size=size, mode="nearest")
        p5 = F.interpolate(p5, size=size, mode="nearest")
        seq = torch.stack([p3, p4, p5], dim=2)               # (B, C, 3, H, W)
        y = self.pool_3d(self.act(self.bn(self.conv3d(seq))))
        return y.squeeze(2)

    def _mix(self, p: Tensor) -> Tensor:
        """Per-pixel channel mix of one scale: Conv3d 1x1x1 -> BN (eval) -> LeakyReLU."""
        return self.act(self.bn(self.conv3d(p.unsqueeze(2)))).squeeze(2)

    @torch.no_grad()
    def switch_to_deploy(self) -> None:
        """Fold BatchNorm3d into the 1x1x1 Conv3d and the CBS projections."""
        for m in (self.conv0, self.conv1, self.conv2):
            if isinstance(m, ConvBNAct):
                m.switch_to_deploy()
        fold_own_bn(self, self.conv3d)


class Add(nn.Module):
    """Element-wise sum of a list of equally shaped tensors."""

    def forward(self, x: Sequence[Tensor]) -> Tensor:
        out = x[0]
        for t in x[1:]:
            out = out + t
        return out

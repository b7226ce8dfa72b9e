"""TFE — Triple Feature Encoding, ASF-YOLO's ``Zoom_cat`` (paper §III-C2; ASF-YOLO's module).

The paper describes TFE as aligning "large/medium/small features via pooling-based
downsampling and nearest-neighbour upsampling" (§I) and, in §III-C2 (eq. 13-16), as a
channel-spatial gating block with an edge loss. Only the former appears in the released model
(YAML ``Zoom_cat``) and in its parameter/FLOP counts, so that is what is built (docs/lmsfa.md,
choice #1):

* large (higher resolution) -> adaptive max-pool + adaptive avg-pool to the medium size, summed;
* small (lower resolution) -> nearest-neighbour interpolation to the medium size;
* output = concat[large', medium, small'] along channels (3C). No parameters.

Inputs must have equal channels (the 1x1 CBS before it align them). The pooling is functional,
as in the reference, so module-hook FLOP counters see no operations here (as in the paper's count).

Speed: when the large map is exactly twice the medium one (always, for inputs that are multiples
of 32), both adaptive pools are 2x2 windows, computed here from the four stride-2 slices: the
same values, about 5x faster on the CPU than ``adaptive_max_pool2d`` (measured, 1 thread). The
module's switch ``use_reference_path`` (set by FLOP counting, ``medseg_core.complexity.reference_paths``)
selects the adaptive pools.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from medseg_core.errors import here

__all__ = ["ZoomCat"]


class ZoomCat(nn.Module):
    """forward([large, medium, small]) -> (B, 3C, H_medium, W_medium)."""

    use_reference_path = False  # True: adaptive pools even for an exact 2x size ratio

    def forward(self, x: Sequence[Tensor]) -> Tensor:
        if len(x) != 3:
            raise ValueError(here() + f"ZoomCat takes [large, medium, small], got {len(x)} maps")
        large, medium, small = x
        size = medium.shape[-2:]
        if not self.use_reference_path and large.shape[-2] == 2 * size[0] and large.shape[-1] == 2 * size[1]:
            a, b = large[..., 0::2, 0::2], large[..., 0::2, 1::2]
            c, d = large[..., 1::2, 0::2], large[..., 1::2, 1::2]
            large = torch.maximum(torch.maximum(a, b), torch.maximum(c, d)) + (a + b + c + d) * 0.25
        else:
            large = F.adaptive_max_pool2d(large, size) + F.adaptive_avg_pool2d(large, size)
        small = F.interpolate(small, size=size, mode="nearest")
        return torch.cat([large, medium, small], dim=1)

"""SPPF: spatial pyramid pooling - fast (YOLOv5/v8), the last layer of the backbone (paper §III-A
"streamlined CSPDarknet53"; layer 9 of the released YAML).

cv1 (1x1 CBS, c1 -> c1/2), three chained k x k max-pools (stride 1, k = 5: receptive fields
5/9/13), concatenation of the four maps, cv2 (1x1 CBS, 2*c1 -> c2).
Params = c1*c1/2 + c1 + 2*c1*c2 + 2*c2.

Speed: in eval mode each k x k max-pool runs separably, as the maximum of k shifted views along
the width and then along the height (padding -inf, as the pool pads): the same values, about 6 ms
less per 640 x 640 forward of the fused LMSF-A and YOLOv8n-seg networks (measured in turns, one
CPU thread; ``max_pool2d`` is slow for these 20 x 20 maps). Training, and the module's own
switch ``use_reference_path`` (set by FLOP counting, ``medseg_core.complexity.reference_paths``),
use ``nn.MaxPool2d``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .conv import ConvBNAct
from medseg_core.errors import here

__all__ = ["SPPF"]


class SPPF(nn.Module):
    use_reference_path = False  # True: nn.MaxPool2d also in eval mode (medseg_core.complexity)

    def __init__(self, c1: int, c2: int, k: int = 5) -> None:
        super().__init__()
        c_ = c1 // 2
        self.cv1 = ConvBNAct(c1, c_, 1, 1)
        self.cv2 = ConvBNAct(c_ * 4, c2, 1, 1)
        self.m = nn.MaxPool2d(kernel_size=k, stride=1, padding=k // 2)

    def forward(self, x: Tensor) -> Tensor:
        pool = self.m if self.training or self.use_reference_path else self._separable_pool
        y = [self.cv1(x)]
        for _ in range(3):
            y.append(pool(y[-1]))
        return self.cv2(torch.cat(y, 1))

    def _separable_pool(self, x: Tensor) -> Tensor:
        k = self.m.kernel_size
        return separable_max_pool(x, k if isinstance(k, int) else k[0])


def separable_max_pool(x: Tensor, k: int) -> Tensor:
    """``max_pool2d(x, k, stride=1, padding=k // 2)`` for odd k: a running maximum over k shifted
    views along W, then along H (a max over a rectangle is a max of maxima over its rows)."""
    if k % 2 != 1:
        raise ValueError(here() + f"separable_max_pool needs an odd kernel, got {k}")
    p = k // 2
    h, w = x.shape[-2:]
    xp = F.pad(x, (p, p, 0, 0), value=float("-inf"))
    rows = xp[..., 0:w]
    for i in range(1, k):
        rows = torch.maximum(rows, xp[..., i:i + w])
    rp = F.pad(rows, (0, 0, p, p), value=float("-inf"))
    out = rp[..., 0:h, :]
    for i in range(1, k):
        out = torch.maximum(out, rp[..., i:i + h, :])
    return out

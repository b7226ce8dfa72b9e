"""C3k2: the CSP block of YOLO11 (Ultralytics YOLO11, 2024; the YOLO11-seg row of the LMSF-A
paper's Table II).

C3k2 is a C2f (cv1 split into two halves, every intermediate output concatenated, cv2; see
:mod:`.c2f`) whose inner blocks are either

* ``c3k = False``: a YOLO bottleneck with hidden ratio 0.5 (CBS 3x3 c -> c/2, CBS 3x3 c/2 -> c,
  residual) — half the width of C2f's bottleneck (which uses ratio 1.0); or
* ``c3k = True``: a :class:`C3k`, i.e. a C3 block (two parallel 1x1 CBS c -> c/2, a chain of two
  3x3 bottlenecks of ratio 1.0 on one of them, concatenation, CBS 1x1 -> c).

The YOLO11 layout decides per node: backbone strides 4 and 8 use ``c3k = False`` with outer ratio
``e = 0.25``, strides 16/32 and the last neck node ``c3k = True``; every C3k2 has residuals on.

Params of a C3k2(c1, c2, n, c3k=False, e) with c = int(c2 * e):
cv1 = 2c*c1 + 4c, cv2 = (2+n)c*c2 + 2*c2, each bottleneck 9c*(c/2)*2 + 2c + 4(c/2).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .c2f import Bottleneck, C2f
from .conv import ConvBNAct

__all__ = ["C3k", "C3k2"]


class C3k(nn.Module):
    """C3 block with ``n`` k x k bottlenecks (ratio 1.0): cv3(cat(m(cv1(x)), cv2(x)))."""

    def __init__(self, c1: int, c2: int, n: int = 2, shortcut: bool = True, g: int = 1,
                 e: float = 0.5, k: int = 3) -> None:
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = ConvBNAct(c1, c_, 1, 1)
        self.cv2 = ConvBNAct(c1, c_, 1, 1)
        self.cv3 = ConvBNAct(2 * c_, c2, 1)
        self.m = nn.Sequential(*(Bottleneck(c_, c_, shortcut, g, k=(k, k), e=1.0) for _ in range(n)))

    def forward(self, x: Tensor) -> Tensor:
        return self.cv3(torch.cat((self.m(self.cv1(x)), self.cv2(x)), 1))


class C3k2(C2f):
    """YOLO11's C2f variant: ``n`` inner blocks, each a C3k (``c3k``) or a ratio-0.5 bottleneck."""

    def __init__(self, c1: int, c2: int, n: int = 1, c3k: bool = False, e: float = 0.5,
                 g: int = 1, shortcut: bool = True) -> None:
        def block(c: int) -> nn.Module:
            return C3k(c, c, 2, shortcut, g) if c3k else Bottleneck(c, c, shortcut, g)

        super().__init__(c1, c2, n, shortcut, g, e, block_fn=block)
        self.c3k = c3k

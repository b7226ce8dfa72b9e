"""YOLOv8 C2f block (the baseline CSP block that C2f-Pro redesigns; paper §III-B, eq. 6).

``cv1`` (1x1 CBS, c1 -> 2c with c = e * c2) splits into a shortcut half ``a`` and a transform
half ``b`` (eq. 6); ``n`` blocks run sequentially on ``b`` and every intermediate is kept
(eq. 7); ``cv2`` (1x1 CBS) fuses the concatenation [a, b, m1(b), m2(m1(b)), ...] ((2+n)c -> c2).

The inner block is pluggable (``block_fn(c) -> nn.Module`` mapping c -> c channels), which is how
C2f-Pro (RVB + EMA) and the Table VII comparators (C2f-Faster, C2f-Star, C2f-ContextGuided)
are built: each swaps only the inner block, as in the community code the paper was built from
(docs/lmsfa.md, "Sources").

Params: cv1 = 2c*c1 + 4c; cv2 = (2+n)c*c2 + 2*c2; v8 bottleneck = 18c^2 + 4c.
"""
from __future__ import annotations

from typing import Callable, Optional, Tuple

import torch
from torch import Tensor, nn

from .conv import ConvBNAct

__all__ = ["Bottleneck", "C2f"]


class Bottleneck(nn.Module):
    """YOLOv8 bottleneck: CBS k0 -> CBS k1, residual if ``shortcut`` and c1 == c2."""

    def __init__(
        self, c1: int, c2: int, shortcut: bool = True, g: int = 1,
        k: Tuple[int, int] = (3, 3), e: float = 0.5,
    ) -> None:
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = ConvBNAct(c1, c_, k[0], 1)
        self.cv2 = ConvBNAct(c_, c2, k[1], 1, g=g)
        self.add = shortcut and c1 == c2

    def forward(self, x: Tensor) -> Tensor:
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C2f(nn.Module):
    """CSP bottleneck with two convolutions and ``n`` inner blocks (YOLOv8 ``C2f``).

    Args:
        c1, c2: input / output channels.
        n: number of inner blocks (already depth-scaled).
        shortcut: residual inside the default v8 bottlenecks (backbone True, neck False).
        e: hidden ratio; c = int(c2 * e).
        block_fn: builds one inner block for ``c`` channels; default = v8 Bottleneck (e = 1.0).
    """

    def __init__(
        self, c1: int, c2: int, n: int = 1, shortcut: bool = False, g: int = 1, e: float = 0.5,
        block_fn: Optional[Callable[[int], nn.Module]] = None,
    ) -> None:
        super().__init__()
        self.c = int(c2 * e)
        self.cv1 = ConvBNAct(c1, 2 * self.c, 1, 1)
        self.cv2 = ConvBNAct((2 + n) * self.c, c2, 1)
        if block_fn is None:
            def block_fn(c: int) -> nn.Module:
                return Bottleneck(c, c, shortcut, g, k=(3, 3), e=1.0)
        self.m = nn.ModuleList(block_fn(self.c) for _ in range(n))

    def forward(self, x: Tensor) -> Tensor:
        y = list(self.cv1(x).chunk(2, 1))
        for m in self.m:
            y.append(m(y[-1]))
        return self.cv2(torch.cat(y, 1))

"""SPPF: spatial pyramid pooling - fast (YOLOv5/v8), the last layer of the backbone (paper §III-A
"streamlined CSPDarknet53"; design notes §1.1 layer 9).

cv1 (1x1 CBS, c1 -> c1/2), three chained k x k max-pools (stride 1, k = 5: receptive fields
5/9/13), concatenation of the four maps, cv2 (1x1 CBS, 2*c1 -> c2).
Params = c1*c1/2 + c1 + 2*c1*c2 + 2*c2.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .conv import ConvBNAct

__all__ = ["SPPF"]


class SPPF(nn.Module):
    def __init__(self, c1: int, c2: int, k: int = 5) -> None:
        super().__init__()
        c_ = c1 // 2
        self.cv1 = ConvBNAct(c1, c_, 1, 1)
        self.cv2 = ConvBNAct(c_ * 4, c2, 1, 1)
        self.m = nn.MaxPool2d(kernel_size=k, stride=1, padding=k // 2)

    def forward(self, x: Tensor) -> Tensor:
        y = [self.cv1(x)]
        for _ in range(3):
            y.append(self.m(y[-1]))
        return self.cv2(torch.cat(y, 1))

"""YOLOv8 Proto: the prototype branch of the segmentation heads (paper §III-A eq. 5 and §III-D,
"instance masks ... via a prototype-coefficient scheme"; design notes §2.7, §5.2 #5).

On the stride-8 feature P3: CBS 3x3 (c1 -> c_) -> ConvTranspose2d(c_, c_, 2, stride 2, bias)
-> CBS 3x3 (c_ -> c_) -> CBS 1x1 (c_ -> nm). Output: ``nm`` (32) prototypes at stride 4
(160 x 160 for a 640 input). The paper's alternative stride-4/edge decoder (eq. 21-22) is not in
the released model. c_ = make_divisible(256 * width, 8) = 64 at n-scale.
Params = 9*c1*c_ + 2c_ + 4c_^2 + c_ + 9c_^2 + 2c_ + nm*c_ + 2nm.

Speed: in eval mode the 2x2 stride-2 transposed convolution runs as what it is, a 1x1
convolution to 4 c_ channels followed by depth-to-space (``pixel_shuffle``): the same sums,
about 2x faster on the CPU than PyTorch's transposed-convolution kernel (measured, 1 thread,
64 channels at 80 x 80). Training and FLOP counting (:func:`counting_reference`) use the module.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from medseg_core.complexity import counting_reference

from .conv import ConvBNAct

__all__ = ["Proto"]


class Proto(nn.Module):
    def __init__(self, c1: int, c_: int = 256, c2: int = 32) -> None:
        super().__init__()
        self.cv1 = ConvBNAct(c1, c_, 3)
        self.upsample = nn.ConvTranspose2d(c_, c_, 2, 2, 0, bias=True)
        self.cv2 = ConvBNAct(c_, c_, 3)
        self.cv3 = ConvBNAct(c_, c2, 1)

    def forward(self, x: Tensor) -> Tensor:
        x = self.cv1(x)
        x = self.upsample(x) if self.training or counting_reference() else upsample_2x2_as_conv(self.upsample, x)
        return self.cv3(self.cv2(x))


def upsample_2x2_as_conv(up: nn.ConvTranspose2d, x: Tensor) -> Tensor:
    """``up(x)`` for a kernel-2, stride-2, unpadded ConvTranspose2d as 1x1 conv + pixel shuffle.

    out[o, 2i + a, 2j + b] = bias[o] + sum_c x[c, i, j] W[c, o, a, b]: a 1x1 conv whose output
    channel o*4 + a*2 + b has weights W[:, o, a, b], rearranged by ``pixel_shuffle(2)``."""
    c_in, c_out = up.weight.shape[:2]
    weight = up.weight.permute(1, 2, 3, 0).reshape(c_out * 4, c_in, 1, 1)
    bias = up.bias.repeat_interleave(4) if up.bias is not None else None
    return F.pixel_shuffle(F.conv2d(x, weight, bias), 2)

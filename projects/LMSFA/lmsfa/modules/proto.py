"""YOLOv8 Proto: the prototype branch of the segmentation heads (paper §III-A eq. 5 and §III-D,
"instance masks ... via a prototype-coefficient scheme"; docs/lmsfa.md, choice #5).

On the stride-8 feature P3: CBS 3x3 (c1 -> c_) -> ConvTranspose2d(c_, c_, 2, stride 2, bias)
-> CBS 3x3 (c_ -> c_) -> CBS 1x1 (c_ -> nm). Output: ``nm`` (32) prototypes at stride 4
(160 x 160 for a 640 input). The paper's alternative stride-4/edge decoder (eq. 21-22) is not in
the released model. c_ = make_divisible(256 * width, 8) = 64 at n-scale.
Params = 9*c1*c_ + 2c_ + 4c_^2 + c_ + 9c_^2 + 2c_ + nm*c_ + 2nm.

Speed note: rewriting the transposed convolution as a 1x1 convolution + ``pixel_shuffle`` is
twice as fast in isolation on this CPU but made the whole network slower (measured in turns
inside the fused LMSF-A and YOLOv8n-seg networks, one thread), so the module runs as is.
"""
from __future__ import annotations

from torch import Tensor, nn

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
        return self.cv3(self.cv2(self.upsample(self.cv1(x))))

"""EfficientHead — efficient decoupled head (paper Table VIII "EfficientHead [18]").

As the community ``Segment_Efficient``: per level a stem of two 3x3 CBS at the input width
(ch_i -> ch_i -> ch_i), shared by box and class, then 1x1 convs to 4*reg_max box logits and nc
class logits; the coefficient branch and Proto are YOLOv8's (CBS 3x3 x2 -> Conv 1x1, c4 = max(ch0/4, nm)).
Bias init per level as YOLOv8. With wide P5 inputs the stems dominate (Table VIII: 4.0 M).
"""
from __future__ import annotations

from typing import Sequence, Tuple

import torch
from torch import Tensor, nn

from ..modules.conv import ConvBNAct
from .base import LMSFA_HEAD_REGISTRY, SegmentHeadBase, cls_bias_prior, yolov8_branches

__all__ = ["EfficientHead"]


@LMSFA_HEAD_REGISTRY.register()
class EfficientHead(SegmentHeadBase):
    def __init__(self, in_channels: Sequence[int], strides: Sequence[int], num_classes: int,
                 reg_max: int = 16, num_protos: int = 32, proto_channels: int = 64) -> None:
        super().__init__(in_channels, strides, num_classes, reg_max, num_protos, proto_channels)
        c4 = max(in_channels[0] // 4, num_protos)
        self.stem = nn.ModuleList(nn.Sequential(ConvBNAct(x, x, 3), ConvBNAct(x, x, 3)) for x in in_channels)
        self.cv2 = nn.ModuleList(nn.Conv2d(x, 4 * reg_max, 1) for x in in_channels)
        self.cv3 = nn.ModuleList(nn.Conv2d(x, num_classes, 1) for x in in_channels)
        self.cv4 = yolov8_branches(in_channels, c4, num_protos)
        self.finish_init()

    def box_cls(self, i: int, x: Tensor) -> Tuple[Tensor, Tensor]:
        y = self.stem[i](x)
        return self.cv2[i](y), self.cv3[i](y)

    @torch.no_grad()
    def bias_init(self) -> None:
        for a, b, s in zip(self.cv2, self.cv3, self.strides):
            a.bias.fill_(1.0)
            b.bias.fill_(cls_bias_prior(self.nc, s))

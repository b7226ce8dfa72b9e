"""YOLO11 ``Segment`` head (Ultralytics YOLO11, 2024): the head of the YOLO11n-seg baseline.

The YOLOv8 Segment head (:mod:`.segment`) with a cheaper class branch. Per level i (channels ch_i):
* box: CBS 3x3 (ch_i -> c2) -> CBS 3x3 -> Conv 1x1 -> 4*reg_max DFL logits, c2 = max(16, ch0/4, 4*reg_max);
* cls: [DW-CBS 3x3 (ch_i) -> CBS 1x1 (ch_i -> c3)] -> [DW-CBS 3x3 (c3) -> CBS 1x1 (c3 -> c3)]
  -> Conv 1x1 -> nc logits, c3 = max(ch0, min(nc, 100));
* coef: CBS 3x3 (ch_i -> c4) -> CBS 3x3 -> Conv 1x1 -> nm coefficients, c4 = max(ch0/4, nm);
plus the YOLOv8 Proto on P3. Bias init as YOLOv8: box 1.0, cls log(5 / nc / (640 / s)^2).
Selected with ``MODEL.LMSFA.HEAD: "YOLO11Segment"``.
"""
from __future__ import annotations

from typing import Sequence, Tuple

import torch
from torch import Tensor, nn

from ..modules.conv import ConvBNAct, DWConv
from .base import LMSFA_HEAD_REGISTRY, SegmentHeadBase, cls_bias_prior

__all__ = ["YOLO11Segment"]


@LMSFA_HEAD_REGISTRY.register()
class YOLO11Segment(SegmentHeadBase):
    def __init__(self, in_channels: Sequence[int], strides: Sequence[int], num_classes: int,
                 reg_max: int = 16, num_protos: int = 32, proto_channels: int = 64) -> None:
        super().__init__(in_channels, strides, num_classes, reg_max, num_protos, proto_channels)
        ch0 = in_channels[0]
        c2 = max(16, ch0 // 4, reg_max * 4)
        c3 = max(ch0, min(num_classes, 100))
        c4 = max(ch0 // 4, num_protos)
        self.cv2 = nn.ModuleList(
            nn.Sequential(ConvBNAct(x, c2, 3), ConvBNAct(c2, c2, 3), nn.Conv2d(c2, 4 * reg_max, 1))
            for x in in_channels
        )
        self.cv3 = nn.ModuleList(
            nn.Sequential(
                nn.Sequential(DWConv(x, x, 3), ConvBNAct(x, c3, 1)),
                nn.Sequential(DWConv(c3, c3, 3), ConvBNAct(c3, c3, 1)),
                nn.Conv2d(c3, num_classes, 1),
            )
            for x in in_channels
        )
        self.cv4 = nn.ModuleList(
            nn.Sequential(ConvBNAct(x, c4, 3), ConvBNAct(c4, c4, 3), nn.Conv2d(c4, num_protos, 1))
            for x in in_channels
        )
        self.finish_init()

    def box_cls(self, i: int, x: Tensor) -> Tuple[Tensor, Tensor]:
        return self.cv2[i](x), self.cv3[i](x)

    @torch.no_grad()
    def bias_init(self) -> None:
        for a, b, s in zip(self.cv2, self.cv3, self.strides):
            a[-1].bias.fill_(1.0)
            b[-1].bias.fill_(cls_bias_prior(self.nc, s))

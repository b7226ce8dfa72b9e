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

from typing import Sequence

from torch import nn

from ..modules.conv import ConvBNAct, DWConv
from .base import LMSFA_HEAD_REGISTRY, UnsharedBoxClsHead, yolov8_branch_widths, yolov8_branches

__all__ = ["YOLO11Segment"]


@LMSFA_HEAD_REGISTRY.register()
class YOLO11Segment(UnsharedBoxClsHead):
    def __init__(self, in_channels: Sequence[int], strides: Sequence[int], num_classes: int,
                 reg_max: int = 16, num_protos: int = 32, proto_channels: int = 64) -> None:
        super().__init__(in_channels, strides, num_classes, reg_max, num_protos, proto_channels)
        c2, c3, c4 = yolov8_branch_widths(in_channels[0], num_classes, reg_max, num_protos)
        self.cv2 = yolov8_branches(in_channels, c2, 4 * reg_max)
        self.cv3 = nn.ModuleList(
            nn.Sequential(
                nn.Sequential(DWConv(x, x, 3), ConvBNAct(x, c3, 1)),
                nn.Sequential(DWConv(c3, c3, 3), ConvBNAct(c3, c3, 1)),
                nn.Conv2d(c3, num_classes, 1),
            )
            for x in in_channels
        )
        self.cv4 = yolov8_branches(in_channels, c4, num_protos)
        self.finish_init()

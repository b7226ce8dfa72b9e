"""LADH — Lightweight Asymmetric Detection Head (paper Table VIII "LADH [16]").

An asymmetric decoupled head (Zhang et al., Remote Sensing 2023, as in the community
``Segment_LADH``): the box branch gets the capacity, the class branch stays cheap.
Per level i:
* box: DSConv 3x3 (ch_i -> c2) x3 (depthwise CBS 3x3 + pointwise CBS) -> CBS 1x1 -> Conv 1x1 -> 4*reg_max;
* cls: CBS 1x1 (ch_i -> c3) -> CBS 1x1 -> Conv 1x1 -> nc;
* coef: DSConv 3x3 (ch_i -> c4) x2 -> CBS 1x1 -> Conv 1x1 -> nm;
with YOLOv8's c2, c3, c4 and bias init, and the YOLOv8 Proto.
"""
from __future__ import annotations

from typing import Sequence

from torch import nn

from ..modules.conv import ConvBNAct, DSConv
from .base import LMSFA_HEAD_REGISTRY, UnsharedBoxClsHead, yolov8_branch_widths

__all__ = ["LADH"]


@LMSFA_HEAD_REGISTRY.register()
class LADH(UnsharedBoxClsHead):
    def __init__(self, in_channels: Sequence[int], strides: Sequence[int], num_classes: int,
                 reg_max: int = 16, num_protos: int = 32, proto_channels: int = 64) -> None:
        super().__init__(in_channels, strides, num_classes, reg_max, num_protos, proto_channels)
        c2, c3, c4 = yolov8_branch_widths(in_channels[0], num_classes, reg_max, num_protos)
        self.cv2 = nn.ModuleList(
            nn.Sequential(DSConv(x, c2, 3), DSConv(c2, c2, 3), DSConv(c2, c2, 3), ConvBNAct(c2, c2, 1),
                          nn.Conv2d(c2, 4 * reg_max, 1))
            for x in in_channels
        )
        self.cv3 = nn.ModuleList(
            nn.Sequential(ConvBNAct(x, c3, 1), ConvBNAct(c3, c3, 1), nn.Conv2d(c3, num_classes, 1))
            for x in in_channels
        )
        self.cv4 = nn.ModuleList(
            nn.Sequential(DSConv(x, c4, 3), DSConv(c4, c4, 3), ConvBNAct(c4, c4, 1), nn.Conv2d(c4, num_protos, 1))
            for x in in_channels
        )
        self.finish_init()

"""YOLOv8 ``Segment`` head — the head of the YOLOv8-seg baseline (paper Table III/V row 1;
docs/lmsfa.md, "Modules").

Per level i (channels ch_i), three unshared branches:
* box: CBS 3x3 (ch_i -> c2) -> CBS 3x3 -> Conv 1x1 -> 4*reg_max DFL logits, c2 = max(16, ch0/4, 4*reg_max);
* cls: CBS 3x3 (ch_i -> c3) -> CBS 3x3 -> Conv 1x1 -> nc logits, c3 = max(ch0, min(nc, 100));
* coef: CBS 3x3 (ch_i -> c4) -> CBS 3x3 -> Conv 1x1 -> nm coefficients, c4 = max(ch0/4, nm);
plus the Proto on P3. Bias init: box 1.0, cls log(5 / nc / (640 / s)^2) per level.
YOLOv8n-seg at nc = 4 (ch = 64/128/256): 1 004 860 head params (3 264 396 total).
"""
from __future__ import annotations

from typing import Sequence

from .base import LMSFA_HEAD_REGISTRY, UnsharedBoxClsHead, yolov8_branch_widths, yolov8_branches

__all__ = ["Segment"]


@LMSFA_HEAD_REGISTRY.register()
class Segment(UnsharedBoxClsHead):
    def __init__(self, in_channels: Sequence[int], strides: Sequence[int], num_classes: int,
                 reg_max: int = 16, num_protos: int = 32, proto_channels: int = 64) -> None:
        super().__init__(in_channels, strides, num_classes, reg_max, num_protos, proto_channels)
        c2, c3, c4 = yolov8_branch_widths(in_channels[0], num_classes, reg_max, num_protos)
        self.cv2 = yolov8_branches(in_channels, c2, 4 * reg_max)
        self.cv3 = yolov8_branches(in_channels, c3, num_classes)
        self.cv4 = yolov8_branches(in_channels, c4, num_protos)
        self.finish_init()

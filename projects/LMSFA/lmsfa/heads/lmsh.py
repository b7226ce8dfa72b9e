"""LMSH — Lightweight Multi-task Shared Head (paper §III-A "Head", §III-D; the released YAML's
``Segment_LMSH`` = the community ``Segment_LSCD``; docs/lmsfa.md, "Modules").

"LMSH employs two shared 3x3 convolutions with GroupNorm to stabilise batch-1 training while
minimizing parameters" (§III-A). Built as the released model (the prose eq. 17-22 — depthwise
shared blocks, attention gate, stride-4 decoder, edge stream — are not in it;
docs/lmsfa.md, choice #1):

* per level: stem ConvGN 1x1 (ch_i -> h) (not shared);
* shared across levels: ConvGN 3x3 (h -> h) -> ConvGN 3x3 (h -> h);
* shared predictors: Conv 1x1 h -> 4*reg_max (box) and h -> nc (cls);
* per-level learnable Scale (init 1) on the box logits;
* coefficient branch per level: ConvGN 1x1 (ch_i -> c4) -> ConvGN 3x3 -> Conv 1x1 -> nm, c4 = max(ch0/4, nm);
* YOLOv8 Proto (BatchNorm) on P3.

GroupNorm has 16 groups (MODEL.LMSFA.HEAD_GN_GROUPS); the YAML gives only [nc, 32, 256], and only
hidden width h = proto width = 256 * width = 64 reproduces the paper's counts
(hidden 256 unscaled gives about 3.0 M; docs/lmsfa.md, choice #4).
Bias init: box 1.0, cls log(5 / nc / (640/16)^2) (one value: the predictor is shared).
Params at nc = 4, ch = 64/128/256, h = 64: 245 559.
"""
from __future__ import annotations

from functools import partial
from typing import Callable, Sequence, Tuple

import torch
from torch import Tensor, nn

from ..modules.conv import ConvBNAct, ConvGNAct, Scale, make_divisible
from .base import LMSFA_HEAD_REGISTRY, SegmentHeadBase, cls_bias_prior, yolov8_branches

__all__ = ["LMSH", "LMSH_BNCoef", "LMSH_BNCoefSameShape"]


def lmsh_coefficient_branches(in_channels: Sequence[int], hidden: int, num_protos: int,
                              conv: Callable[[int, int, int], nn.Module]) -> nn.ModuleList:
    """LMSH's coefficient branch for every level i: conv 1x1 (ch_i -> hidden) -> conv 3x3 -> Conv 1x1 -> nm;
    ``conv(c1, c2, k)`` is the normalised conv block (ConvGN in the released head)."""
    return nn.ModuleList(
        nn.Sequential(conv(x, hidden, 1), conv(hidden, hidden, 3), nn.Conv2d(hidden, num_protos, 1))
        for x in in_channels
    )


@LMSFA_HEAD_REGISTRY.register()
class LMSH(SegmentHeadBase):
    def __init__(self, in_channels: Sequence[int], strides: Sequence[int], num_classes: int,
                 reg_max: int = 16, num_protos: int = 32, proto_channels: int = 64,
                 hidden_channels: int = 64, gn_groups: int = 16) -> None:
        super().__init__(in_channels, strides, num_classes, reg_max, num_protos, proto_channels)
        h = hidden_channels
        c4 = max(in_channels[0] // 4, num_protos)
        self.conv = nn.ModuleList(ConvGNAct(x, h, 1, gn_groups=gn_groups) for x in in_channels)
        self.share_conv = nn.Sequential(
            ConvGNAct(h, h, 3, gn_groups=gn_groups), ConvGNAct(h, h, 3, gn_groups=gn_groups)
        )
        self.cv2 = nn.Conv2d(h, 4 * reg_max, 1)
        self.cv3 = nn.Conv2d(h, num_classes, 1)
        self.scale = nn.ModuleList(Scale(1.0) for _ in in_channels)
        self.cv4 = self.coefficient_branches(in_channels, c4, num_protos, gn_groups)
        self.finish_init()

    @staticmethod
    def coefficient_branches(in_channels: Sequence[int], hidden: int, num_protos: int,
                             gn_groups: int) -> nn.ModuleList:
        """Per level: ConvGN 1x1 (ch_i -> hidden) -> ConvGN 3x3 -> Conv 1x1 -> nm (released Segment_LSCD)."""
        return lmsh_coefficient_branches(in_channels, hidden, num_protos, partial(ConvGNAct, gn_groups=gn_groups))

    @classmethod
    def extra_args(cls, cfg) -> dict:
        a = cfg.MODEL.LMSFA
        return dict(
            hidden_channels=make_divisible(min(a.HEAD_CHANNELS, a.MAX_CHANNELS) * a.WIDTH_MULTIPLE, 8),
            gn_groups=a.HEAD_GN_GROUPS,
        )

    def shared_features(self, i: int, x: Tensor) -> Tensor:
        return self.share_conv(self.conv[i](x))

    def box_cls(self, i: int, x: Tensor) -> Tuple[Tensor, Tensor]:
        y = self.shared_features(i, x)
        return self.scale[i](self.cv2(y)), self.cv3(y)

    @torch.no_grad()
    def bias_init(self) -> None:
        self.cv2.bias.fill_(1.0)
        self.cv3.bias.fill_(cls_bias_prior(self.nc, 16))


@LMSFA_HEAD_REGISTRY.register()
class LMSH_BNCoef(LMSH):
    """Diagnostic, not a paper row: LMSH with YOLOv8 Segment's coefficient branch (CBS 3x3 ->
    CBS 3x3 -> Conv 1x1, BatchNorm) instead of its GroupNorm 1x1 / 3x3 one. Box / class
    path unchanged (shared GN convs and predictors), so training it beside Table III row 4
    tells whether LMSH's mask deficit comes from its coefficient branch or from the shared
    box / class path (projects/LMSFA/README.md, Table III)."""

    @staticmethod
    def coefficient_branches(in_channels: Sequence[int], hidden: int, num_protos: int,
                             gn_groups: int) -> nn.ModuleList:
        return yolov8_branches(in_channels, hidden, num_protos)


@LMSFA_HEAD_REGISTRY.register()
class LMSH_BNCoefSameShape(LMSH):
    """Diagnostic, not a paper row: LMSH whose coefficient branch keeps the released shape
    (1x1 -> 3x3 -> Conv 1x1, same parameter count) with BatchNorm instead of GroupNorm. Beside
    LMSH_BNCoef (YOLOv8's 3x3 / 3x3 branch) it tells the normalisation from the branch's
    shape and size (projects/LMSFA/README.md, Table III)."""

    @staticmethod
    def coefficient_branches(in_channels: Sequence[int], hidden: int, num_protos: int,
                             gn_groups: int) -> nn.ModuleList:
        return lmsh_coefficient_branches(in_channels, hidden, num_protos, ConvBNAct)

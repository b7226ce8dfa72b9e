"""C2f-Pro CSP-Darknet: the bottom-up network of LMSF-A (paper §III-A "Backbone", §III-B;
layers 0-9 of the released YAML; docs/lmsfa.md, "Architecture as built").

YOLOv8's CSP-Darknet with the stage block configurable (C2f for the YOLOv8-seg baseline,
C2f-Pro for LMSF-A, the Table VII comparators). Base widths 64/128/256/512/1024 and repeats
3/6/6/3 are scaled like YOLOv8 (n-scale: 16/32/64/128/256 channels, repeats 1/2/2/1):

    stem   CBS 3x3 s2                         stride 2
    s4     CBS 3x3 s2 + block(shortcut)       stride 4
    s8     CBS 3x3 s2 + block                 stride 8
    s16    CBS 3x3 s2 + block                 stride 16
    s32    CBS 3x3 s2 + block                 stride 32 (before SPPF)
    sppf   SPPF k = 5                         stride 32

All five are outputs: the TFE neck needs the stride-4 map and SSFF the stride-32 map before
SPPF. The paper's prose extras (GroupNorm in the backbone, depthwise stride-2
downsampling, blur pooling, §III-A eq. 2-3 "LMFE" alignment) are not in the released model or
its counts and are not built (docs/lmsfa.md, choice #6).
"""
from __future__ import annotations

from typing import Dict, Sequence

import medseg_core  # noqa: F401  (NumPy-2 / Pillow shim before detectron2)
from detectron2.layers import ShapeSpec
from detectron2.modeling import Backbone
from torch import Tensor, nn

from .modules.conv import ConvBNAct, make_divisible, yolo_bn_defaults
from .modules.factory import build_csp_block
from .modules.sppf import SPPF
from medseg_core.errors import ConfigError, here

__all__ = ["DarknetBase", "CSPDarknet", "scale_width", "scale_depth", "ATTENTION_STAGE_NAMES"]

ATTENTION_STAGE_NAMES = (
    "backbone_s4", "backbone_s8", "backbone_s16", "backbone_s32",
    "neck_p4_td", "neck_p3", "neck_p4", "neck_p5",
)
BASE_WIDTHS = (64, 128, 256, 512, 1024)   # stem, s4, s8, s16, s32 (YOLOv8 YAML)
BASE_DEPTHS = (3, 6, 6, 3)               # blocks of s4, s8, s16, s32


def scale_width(c: int, width: float, max_channels: int) -> int:
    """YOLOv8 channel scaling: ceil8(min(c, max_channels) * width)."""
    return make_divisible(min(c, max_channels) * width, 8)


def scale_depth(n: int, depth: float) -> int:
    """YOLOv8 repeat scaling: max(round(n * depth), 1) for n > 1."""
    return max(round(n * depth), 1) if n > 1 else n


def check_attention_stages(stages: Sequence[str]) -> None:
    bad = [s for s in stages if s not in ATTENTION_STAGE_NAMES]
    if bad:
        raise ConfigError(
            here() + f"unknown MODEL.LMSFA.ATTENTION_STAGES {bad}; valid: {list(ATTENTION_STAGE_NAMES)}"
        )


class DarknetBase(Backbone):
    """stem -> ``stages`` (a ModuleDict, one output per stage) -> SPPF, the bottom-up path common
    to the YOLOv8 and YOLO11 backbones. Subclasses build ``stem``, ``stages``, ``sppf`` and the
    ``_out_feature_*`` maps."""

    def forward(self, x: Tensor) -> Dict[str, Tensor]:
        out = {}
        x = self.stem(x)
        for name, stage in self.stages.items():
            x = stage(x)
            out[name] = x
        out["sppf"] = self.sppf(x)
        return out

    def output_shape(self) -> Dict[str, ShapeSpec]:
        return {
            n: ShapeSpec(channels=self._out_feature_channels[n], stride=self._out_feature_strides[n])
            for n in self._out_features
        }


class CSPDarknet(DarknetBase):
    """Bottom-up net returning {"s4", "s8", "s16", "s32", "sppf"}."""

    def __init__(self, in_channels: int = 3, width: float = 0.25, depth: float = 0.33,
                 max_channels: int = 1024, block: str = "C2f-Pro", attention: str = "EMA",
                 attention_stages: Sequence[str] = ("backbone_s16", "backbone_s32"),
                 ema_factor: int = 8) -> None:
        super().__init__()
        check_attention_stages(attention_stages)
        w = [scale_width(c, width, max_channels) for c in BASE_WIDTHS]
        d = [scale_depth(n, depth) for n in BASE_DEPTHS]
        self.stem = ConvBNAct(in_channels, w[0], 3, 2)
        names = ["s4", "s8", "s16", "s32"]
        self.stages = nn.ModuleDict()
        for i, name in enumerate(names):
            att = attention if f"backbone_{name}" in attention_stages else "none"
            self.stages[name] = nn.Sequential(
                ConvBNAct(w[i], w[i + 1], 3, 2),
                build_csp_block(block, w[i + 1], w[i + 1], d[i], True, att, ema_factor),
            )
        self.sppf = SPPF(w[4], w[4], 5)
        self._out_features = names + ["sppf"]
        self._out_feature_channels = {n: w[i + 1] for i, n in enumerate(names)}
        self._out_feature_channels["sppf"] = w[4]
        self._out_feature_strides = {"s4": 4, "s8": 8, "s16": 16, "s32": 32, "sppf": 32}
        yolo_bn_defaults(self)

"""The YOLO11 CSP-Darknet (Ultralytics YOLO11, 2024): the backbone of the YOLO11n-seg baseline of
the LMSF-A paper's Table II, selected with ``MODEL.LMSFA.ARCH: "YOLO11"``.

YOLO11's backbone YAML, base widths before the width multiple (n-scale 0.25) and repeats before
the depth multiple (n-scale 0.50):

    stem   CBS 3x3 s2 (64)                                   stride 2
    s4     CBS 3x3 s2 (128) + C3k2(256,  n=2, c3k=False, e=0.25)   stride 4
    s8     CBS 3x3 s2 (256) + C3k2(512,  n=2, c3k=False, e=0.25)   stride 8
    s16    CBS 3x3 s2 (512) + C3k2(512,  n=2, c3k=True)            stride 16
    s32    CBS 3x3 s2 (1024) + C3k2(1024, n=2, c3k=True)           stride 32
    sppf   SPPF k = 5 (1024)                                 stride 32
    psa    C2PSA (1024, n=2)                                 stride 32

At n-scale: 16 / 32+64 / 64+128 / 128+128 / 256+256 channels, every repeat 1. As in Ultralytics,
scales with width >= 1 (m, l, x) use C3k blocks in every C3k2 (``c3k`` forced on). Outputs
s4 ... s32, sppf and psa; the YOLO11 neck reads s8, s16 and psa.
"""
from __future__ import annotations

from typing import Dict

import medseg_core  # noqa: F401  (NumPy-2 / Pillow shim before detectron2)
from torch import Tensor, nn

from .backbone import DarknetBase, scale_depth, scale_width
from .modules.c2psa import C2PSA
from .modules.c3k2 import C3k2
from .modules.conv import ConvBNAct, yolo_bn_defaults
from .modules.sppf import SPPF

__all__ = ["YOLO11Darknet", "c3k_forced"]

# (downsampling conv width, C3k2 width, repeats, c3k, e) per stage, from the YOLO11 YAML
STAGES = (
    ("s4", 128, 256, 2, False, 0.25),
    ("s8", 256, 512, 2, False, 0.25),
    ("s16", 512, 512, 2, True, 0.5),
    ("s32", 1024, 1024, 2, True, 0.5),
)


def c3k_forced(width: float) -> bool:
    """Ultralytics turns C3k on in every C3k2 for the m, l and x scales (width >= 1)."""
    return width >= 1.0


class YOLO11Darknet(DarknetBase):
    """Bottom-up net returning {"s4", "s8", "s16", "s32", "sppf", "psa"}."""

    def __init__(self, in_channels: int = 3, width: float = 0.25, depth: float = 0.50,
                 max_channels: int = 1024) -> None:
        super().__init__()
        ch = lambda c: scale_width(c, width, max_channels)  # noqa: E731
        force = c3k_forced(width)
        self.stem = ConvBNAct(in_channels, ch(64), 3, 2)
        self.stages = nn.ModuleDict()
        c_prev = ch(64)
        self._out_feature_channels: Dict[str, int] = {}
        for name, c_down, c_out, n, c3k, e in STAGES:
            self.stages[name] = nn.Sequential(
                ConvBNAct(c_prev, ch(c_down), 3, 2),
                C3k2(ch(c_down), ch(c_out), scale_depth(n, depth), c3k or force, e),
            )
            c_prev = self._out_feature_channels[name] = ch(c_out)
        self.sppf = SPPF(c_prev, c_prev, 5)
        self.psa = C2PSA(c_prev, c_prev, scale_depth(2, depth))
        self._out_feature_channels.update(sppf=c_prev, psa=c_prev)
        self._out_features = list(self._out_feature_channels)
        self._out_feature_strides = {"s4": 4, "s8": 8, "s16": 16, "s32": 32, "sppf": 32, "psa": 32}
        yolo_bn_defaults(self)

    def forward(self, x: Tensor) -> Dict[str, Tensor]:
        out = super().forward(x)
        out["psa"] = self.psa(out["sppf"])
        return out

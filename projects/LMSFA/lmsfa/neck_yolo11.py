"""The YOLO11 neck (Ultralytics YOLO11, 2024): YOLOv8's FPN + PAN topology with C3k2 nodes.

    t4 = C3k2(cat[up(psa), s16])   -> ch(512)   c3k off      (YAML layer 13)
    p3 = C3k2(cat[up(t4), s8])     -> ch(256)   c3k off      (layer 16)
    p4 = C3k2(cat[CBS3x3s2(p3), t4])  -> ch(512)   c3k off   (layer 19)
    p5 = C3k2(cat[CBS3x3s2(p4), psa]) -> ch(1024)  c3k on    (layer 22)

Repeats 2 x depth (1 at n-scale), outer ratio 0.5, residuals on; with width >= 1 every node uses
C3k (Ultralytics' m/l/x rule). The input is the YOLO11 backbone's C2PSA output ("psa"), not the
SPPF output that YOLOv8's neck takes.
"""
from __future__ import annotations

from typing import Dict

from torch import nn

from .backbone import scale_depth, scale_width
from .backbone_yolo11 import c3k_forced
from .modules.c3k2 import C3k2
from .modules.conv import ConvBNAct
from .pan import PANTopology

__all__ = ["YOLO11PAN"]


class YOLO11PAN(PANTopology, nn.Module):
    """{s8, s16, psa} -> (P3, P4, P5) at strides 8 / 16 / 32."""

    top_feature = "psa"

    def __init__(self, in_channels: Dict[str, int], width: float = 0.25, depth: float = 0.50,
                 max_channels: int = 1024) -> None:
        super().__init__()
        ch = lambda c: scale_width(c, width, max_channels)  # noqa: E731
        n, force = scale_depth(2, depth), c3k_forced(width)
        c8, c16, c32 = in_channels["s8"], in_channels["s16"], in_channels["psa"]
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.td_p4 = C3k2(c32 + c16, ch(512), n, force)
        self.td_p3 = C3k2(ch(512) + c8, ch(256), n, force)
        self.down_p3 = ConvBNAct(ch(256), ch(256), 3, 2)
        self.bu_p4 = C3k2(ch(256) + ch(512), ch(512), n, force)
        self.down_p4 = ConvBNAct(ch(512), ch(512), 3, 2)
        self.bu_p5 = C3k2(ch(512) + c32, ch(1024), n, True)
        self.out_channels = [ch(256), ch(512), ch(1024)]

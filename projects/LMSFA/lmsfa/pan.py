"""The FPN + PAN topology of the YOLOv8 neck, which the YOLO11 neck keeps (other nodes, same wiring):

    t4 = td_p4(cat[up(top), s16])        stride 16
    p3 = td_p3(cat[up(t4), s8])          stride 8   -> P3
    p4 = bu_p4(cat[down_p3(p3), t4])     stride 16  -> P4
    p5 = bu_p5(cat[down_p4(p4), top])    stride 32  -> P5

``top`` is the stride-32 map named ``top_feature`` (YOLOv8: the SPPF output, YOLO11: the C2PSA output).
"""
from __future__ import annotations

from typing import Dict, Tuple

import torch
from torch import Tensor

__all__ = ["PANTopology"]


class PANTopology:
    """The FPN + PAN forward of the YOLOv8 and YOLO11 necks, on the stride-8 / 16 maps and the
    stride-32 map named ``top_feature``; the nodes ``td_p4``, ``td_p3``, ``down_p3``, ``bu_p4``,
    ``down_p4``, ``bu_p5`` and the 2x nearest ``up`` are built by the neck (mixed in before
    ``nn.Module``)."""

    top_feature = "sppf"

    def forward(self, f: Dict[str, Tensor]) -> Tuple[Tensor, Tensor, Tensor]:
        p5_in = f[self.top_feature]
        t4 = self.td_p4(torch.cat([self.up(p5_in), f["s16"]], 1))
        p3 = self.td_p3(torch.cat([self.up(t4), f["s8"]], 1))
        p4 = self.bu_p4(torch.cat([self.down_p3(p3), t4], 1))
        p5 = self.bu_p5(torch.cat([self.down_p4(p4), p5_in], 1))
        return p3, p4, p5

"""LQE — Location Quality Estimator heads (paper Table VIII "LQE [17]", GFLv2).

GFLv2 (Li et al., CVPR 2021) estimates localisation quality from the statistics of the predicted
box distributions: for each of the 4 sides, the top-k bin probabilities and their mean (4(k+1)
numbers per anchor, k = 4) go through a small MLP (1x1 convs 20 -> 64 -> ReLU -> 1, last layer
zero-initialised) whose output is **added to the class logits**. The head therefore returns
quality-aware class logits in ``HeadOutputs.cls``; nothing else changes.

Two heads (the paper does not say which base head its "LQE" row uses):
* ``LQE``: YOLOv8 Segment + LQE (the community ``Segment_LQE``). Its 3.26 M / 12.1 GFLOPs in the
  YOLOv8-seg model fit Table VIII's "LQE 3.2 M / 12.0".
* ``LMSH_LQE``: LMSH + LQE (the community ``Segment_LSCD_LQE``), about the size of LMSH.

Choice: the bin probabilities are taken per side from the (4, reg_max) channel layout that DFL
decoding uses (the community code reshapes to (reg_max, 4), which mixes sides for YOLO heads).
"""
from __future__ import annotations

from typing import Sequence, Tuple

import torch
from torch import Tensor, nn

from .base import LMSFA_HEAD_REGISTRY
from .lmsh import LMSH
from .segment import Segment

__all__ = ["LocationQualityEstimator", "LQE", "LMSH_LQE"]


class LocationQualityEstimator(nn.Module):
    """scores + MLP(top-k statistics of the per-side DFL distributions)."""

    def __init__(self, reg_max: int = 16, k: int = 4, hidden: int = 64) -> None:
        super().__init__()
        self.reg_max = reg_max
        self.k = k
        self.mlp = nn.Sequential(nn.Conv2d(4 * (k + 1), hidden, 1), nn.ReLU(), nn.Conv2d(hidden, 1, 1))
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, scores: Tensor, box_logits: Tensor) -> Tensor:
        b, _, h, w = box_logits.shape
        prob = box_logits.reshape(b, 4, self.reg_max, h, w).softmax(2)
        topk = prob.topk(self.k, dim=2).values                       # (B, 4, k, H, W)
        stat = torch.cat([topk, topk.mean(dim=2, keepdim=True)], dim=2)
        return scores + self.mlp(stat.reshape(b, 4 * (self.k + 1), h, w))


@LMSFA_HEAD_REGISTRY.register()
class LQE(Segment):
    """YOLOv8 Segment head whose class logits are corrected by a per-level LQE."""

    def __init__(self, in_channels: Sequence[int], strides: Sequence[int], num_classes: int,
                 reg_max: int = 16, num_protos: int = 32, proto_channels: int = 64) -> None:
        super().__init__(in_channels, strides, num_classes, reg_max, num_protos, proto_channels)
        self.lqe = nn.ModuleList(LocationQualityEstimator(reg_max) for _ in in_channels)

    def box_cls(self, i: int, x: Tensor) -> Tuple[Tensor, Tensor]:
        box, cls = super().box_cls(i, x)
        return box, self.lqe[i](cls, box)


@LMSFA_HEAD_REGISTRY.register()
class LMSH_LQE(LMSH):
    """LMSH whose class logits are corrected by a per-level LQE."""

    def __init__(self, in_channels: Sequence[int], strides: Sequence[int], num_classes: int,
                 reg_max: int = 16, num_protos: int = 32, proto_channels: int = 64,
                 hidden_channels: int = 64, gn_groups: int = 16) -> None:
        super().__init__(in_channels, strides, num_classes, reg_max, num_protos, proto_channels,
                         hidden_channels, gn_groups)
        self.lqe = nn.ModuleList(LocationQualityEstimator(reg_max) for _ in in_channels)

    def box_cls(self, i: int, x: Tensor) -> Tuple[Tensor, Tensor]:
        box, cls = super().box_cls(i, x)
        return box, self.lqe[i](cls, box)

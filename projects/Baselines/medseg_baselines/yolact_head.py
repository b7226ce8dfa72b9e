"""YOLACT's two parallel branches (Bolya et al. 2019, Sec. 3.1-3.2, Figs. 3-4).

* :class:`ProtoNet` (Fig. 3): an FCN on P3: three 3x3 convs (256), x2 bilinear upsampling,
  one 3x3 conv (256), a 1x1 conv to k prototypes, ReLU after every layer including the last
  (the paper keeps prototypes unbounded above, ReLU being its choice). Output at 1/4 of the
  input (138 x 138 at 550 in the paper).
* :class:`YOLACTPredictionHead` (Fig. 4): shared across pyramid levels; one 3x3 conv (256) with
  ReLU shared by the three branches, then one 3x3 conv each for c + 1 class confidences
  (softmax, background included), 4 box regressions and k mask coefficients (tanh) per anchor.
* :class:`SemanticSegHead` (Sec. 6, training only): a 1x1 conv with c output channels on P3,
  sigmoid per class (an auxiliary loss, unused at inference).

Initialisation (the paper does not say; as the reference code with its softmax/OHEM loss):
Xavier-uniform weights and zero biases in every conv of the three heads.
"""
from __future__ import annotations

from typing import List, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ProtoNet", "YOLACTPredictionHead", "SemanticSegHead", "xavier_init"]


def xavier_init(module: nn.Module) -> None:
    """Xavier-uniform weights, zero biases for every conv in ``module``."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class ProtoNet(nn.Module):
    """P3 (B, C, H/8, W/8) -> k non-negative prototypes (B, k, H/4, W/4)."""

    def __init__(self, in_channels: int, channels: int = 256, num_prototypes: int = 32) -> None:
        super().__init__()
        self.pre = nn.ModuleList(
            [nn.Conv2d(in_channels if i == 0 else channels, channels, 3, padding=1) for i in range(3)]
        )
        self.post = nn.Conv2d(channels, channels, 3, padding=1)
        self.proto = nn.Conv2d(channels, num_prototypes, 1)
        xavier_init(self)

    def forward(self, x: Tensor) -> Tensor:
        for conv in self.pre:
            x = F.relu(conv(x))
        x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
        x = F.relu(self.post(x))
        return F.relu(self.proto(x))


class YOLACTPredictionHead(nn.Module):
    """Shared head: per level (B, A*(c+1), H, W), (B, A*4, H, W), (B, A*k, H, W) (tanh)."""

    def __init__(
        self, in_channels: int, channels: int, num_anchors: int, num_classes: int, num_prototypes: int
    ) -> None:
        super().__init__()
        self.num_anchors, self.num_classes, self.num_prototypes = num_anchors, num_classes, num_prototypes
        self.shared = nn.Conv2d(in_channels, channels, 3, padding=1)
        self.cls = nn.Conv2d(channels, num_anchors * (num_classes + 1), 3, padding=1)
        self.box = nn.Conv2d(channels, num_anchors * 4, 3, padding=1)
        self.coef = nn.Conv2d(channels, num_anchors * num_prototypes, 3, padding=1)
        xavier_init(self)

    def forward(self, features: List[Tensor]) -> Tuple[List[Tensor], List[Tensor], List[Tensor]]:
        cls, box, coef = [], [], []
        for x in features:
            x = F.relu(self.shared(x))
            cls.append(self.cls(x))
            box.append(self.box(x))
            coef.append(torch.tanh(self.coef(x)))
        return cls, box, coef


class SemanticSegHead(nn.Module):
    """1x1 conv with one sigmoid channel per class (auxiliary training loss on P3)."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, num_classes, 1)
        xavier_init(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)

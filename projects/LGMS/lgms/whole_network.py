"""Library networks that are whole encoder-decoders (MONAI's AttentionUnet, BasicUNetPlusPlus,
2D SwinUNETR) inside the project's backbone + head wiring.

Such a network already ends in its own 1x1 classifier, so it cannot be split into a
``res1..res5`` encoder and a decoder without re-writing it. Instead its backbone
(:class:`WholeNetworkBackbone`) runs the full network, built with as many outputs as the head
predicts (1 for a binary one-logit model), and returns ``{"logits": ...}``; the registered
head ``"WholeNetworkHead"`` passes the logits through (identity predictor) and supplies the
project's losses and inference outputs, exactly as for U-Net / CMUNeXt / TinyU-Net.
"""
from __future__ import annotations

from typing import Dict

import torch
from torch import nn

from medseg_core import compat  # noqa: F401

from detectron2.layers import ShapeSpec
from detectron2.modeling import Backbone, SEM_SEG_HEADS_REGISTRY

from .head import UShapeSemSegHead, head_outputs

__all__ = ["WholeNetworkBackbone", "WholeNetworkHead"]


class WholeNetworkBackbone(Backbone):
    """Runs ``network`` (input (B, C, H, W) -> logits (B, K, H, W)) and returns ``{"logits"}``."""

    def __init__(self, network: nn.Module, num_outputs: int, size_divisibility: int):
        super().__init__()
        self.network = network
        self._size_divisibility = int(size_divisibility)
        self._out_features = ["logits"]
        self._out_feature_channels = {"logits": int(num_outputs)}
        self._out_feature_strides = {"logits": 1}

    @staticmethod
    def outputs(cfg) -> int:
        """Logits the wrapped network must predict (the head's count)."""
        return head_outputs(cfg)

    @property
    def size_divisibility(self) -> int:
        return self._size_divisibility

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        return {"logits": self.network(x)}


class _Logits(nn.Module):
    def forward(self, features: Dict[str, torch.Tensor]) -> torch.Tensor:
        return features["logits"]


@SEM_SEG_HEADS_REGISTRY.register()
class WholeNetworkHead(UShapeSemSegHead):
    """Identity head over a :class:`WholeNetworkBackbone`: the project's losses and outputs."""

    def __init__(self, cfg, input_shape: Dict[str, ShapeSpec]):
        if "logits" not in input_shape:
            raise ValueError("WholeNetworkHead needs a whole-network backbone (features {'logits'}), got "
                             f"{sorted(input_shape)}")
        super().__init__(_Logits(), input_shape["logits"].channels, cfg)
        self.predictor = nn.Identity()  # the network's own classifier already ran

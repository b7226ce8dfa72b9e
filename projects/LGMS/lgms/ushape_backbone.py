"""Detectron2 ``Backbone`` interface shared by the U-shaped encoders of this project.

LGMSNet, U-Net, CMUNeXt and TinyU-Net encoders all return ``res1..res5`` at strides 1, 2, 4, 8,
16; only the encoder module, its widths and the size divisibility differ.
"""
from __future__ import annotations

from typing import Dict, List, Sequence

import torch
from torch import nn

from medseg_core import compat  # noqa: F401

from detectron2.modeling import Backbone

__all__ = ["FEATURES", "STRIDES", "UShapeBackbone", "config_widths"]

FEATURES = ("res1", "res2", "res3", "res4", "res5")
STRIDES = (1, 2, 4, 8, 16)


def config_widths(cfg, node: str, count: int) -> List[int]:
    """``cfg.MODEL.<node>.DIMS`` as a list, refused unless it has ``count`` widths."""
    dims = list(cfg.MODEL[node].DIMS)
    if len(dims) != count:
        raise ValueError(f"MODEL.{node}.DIMS needs {count} widths, got {dims}")
    return dims


class UShapeBackbone(Backbone):
    """Wraps an encoder whose forward returns ``{res1..res5}`` with the given channel widths."""

    def __init__(self, encoder: nn.Module, channels: Sequence[int], size_divisibility: int = 16):
        super().__init__()
        if len(channels) != len(FEATURES):
            raise ValueError(f"a U-shaped backbone needs {len(FEATURES)} widths, got {list(channels)}")
        self.encoder = encoder
        self._size_divisibility = int(size_divisibility)
        self._out_features = list(FEATURES)
        self._out_feature_channels = dict(zip(FEATURES, channels))
        self._out_feature_strides = dict(zip(FEATURES, STRIDES))

    @property
    def size_divisibility(self) -> int:
        return self._size_divisibility

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        return self.encoder(x)

"""U-Net baseline (Ronneberger et al., MICCAI 2015), as LGMSNet's Table 1 ran it.

The reference is the ``U_Net`` of the CMUNeXt / LGMSNet benchmark code (34.52 M parameters in
LGMSNet's Table 1): five levels of double 3x3 conv (bias) -> BN -> ReLU with widths 64..1024,
2x2 max pooling, and a decoder of ``up_conv`` (x2 **nearest** up-sampling, 3x3 conv-BN-ReLU),
concatenation with the skip and a double conv; a 1x1 conv predicts the logits. Widths come from
``MODEL.UNET.DIMS``. Padding keeps sizes ("same" convs, unlike the original valid convs), so
inputs must be multiples of 16.
"""
from __future__ import annotations

from typing import Dict, Sequence

import torch
from torch import nn

from medseg_core import compat  # noqa: F401

from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, SEM_SEG_HEADS_REGISTRY

from .head import UShapeSemSegHead
from .ushape_backbone import UShapeBackbone, config_widths
from .layers import StemConv, UpConv, decode_with_skips, encode_with_pools, maxpool

__all__ = ["DoubleConv", "UNetEncoder", "UNetDecoder", "UNetBackbone", "UNetHead"]

FEATURES = ("res1", "res2", "res3", "res4", "res5")


class DoubleConv(nn.Sequential):
    """(3x3 conv with bias -> BN -> ReLU) x 2."""

    def __init__(self, cin: int, cout: int, nd: int = 2):
        super().__init__(StemConv(cin, cout, nd), StemConv(cout, cout, nd))


class UNetEncoder(nn.Module):
    def __init__(self, in_channels: int, dims: Sequence[int]):
        super().__init__()
        self.pool = maxpool(2)
        chans = [in_channels] + list(dims)
        self.blocks = nn.ModuleList(DoubleConv(chans[i], chans[i + 1]) for i in range(5))

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        return encode_with_pools(x, self.blocks, self.pool, FEATURES)


class UNetDecoder(nn.Module):
    def __init__(self, dims: Sequence[int]):
        super().__init__()
        d = list(dims)
        self.ups = nn.ModuleList(UpConv(d[i + 1], d[i], 2, "BN", mode="nearest") for i in (3, 2, 1, 0))
        self.convs = nn.ModuleList(DoubleConv(2 * d[i], d[i]) for i in (3, 2, 1, 0))

    def forward(self, feats: Dict[str, torch.Tensor]) -> torch.Tensor:
        return decode_with_skips(feats, self.ups, self.convs)


@BACKBONE_REGISTRY.register()
class UNetBackbone(UShapeBackbone):
    """U-Net encoder: ``res1..res5`` at strides 1..16 with ``MODEL.UNET.DIMS`` channels."""

    def __init__(self, cfg, input_shape: ShapeSpec):
        dims = config_widths(cfg, "UNET", 5)
        encoder = UNetEncoder(input_shape.channels, dims)
        super().__init__(encoder, dims, 16)


@SEM_SEG_HEADS_REGISTRY.register()
class UNetHead(UShapeSemSegHead):
    """U-Net decoder + 1x1 classifier."""

    def __init__(self, cfg, input_shape: Dict[str, ShapeSpec]):
        dims = [input_shape[k].channels for k in FEATURES]
        super().__init__(UNetDecoder(dims), dims[0], cfg)

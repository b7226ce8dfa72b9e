"""CMUNeXt baseline (Tang et al., ISBI 2024), LGMSNet's parent network.

Five-level U-shape: stem 3x3 conv (bias) -> BN -> ReLU; encoder stage i = ``depths[i]``
CMUNeXt blocks at width C_in followed by a 3x3 conv-BN-ReLU to C_out (stages 2-5 after a 2x2
max pool); decoder = ``up_conv`` (x2 bilinear, 3x3 conv-BN-ReLU) + concatenation with the skip +
Skip-Fusion block (:class:`~lgms.layers.FusionConv`); 1x1 classifier.

One CMUNeXt block: ``x + BN(GELU(DWConv_kxk(x)))`` (large-kernel depthwise with residual), then
an inverted bottleneck ``BN(GELU(1x1 C->4C))`` and ``BN(GELU(1x1 4C->C))``; activation before
norm, as in the authors' code. The default ``dims=(16, 32, 128, 160, 256)``,
``depths=(1, 1, 1, 3, 1)``, ``kernels=(3, 3, 7, 7, 7)`` is the paper's CMUNeXt: 3,149,185
parameters with 3 inputs and 1 output (paper: 3.14 M, 7.41 G).
"""
from __future__ import annotations

from typing import Dict, Sequence

import torch
from torch import nn

from medseg_core import compat  # noqa: F401

from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, SEM_SEG_HEADS_REGISTRY

from .head import UShapeSemSegHead
from .ushape_backbone import UShapeBackbone
from .layers import FusionConv, StemConv, UpConv, conv_cls, decode_with_skips, encode_with_pools, make_norm, maxpool

__all__ = ["CMUNeXtBlock", "CMUNeXtStage", "CMUNeXtEncoder", "CMUNeXtDecoder", "CMUNeXtBackbone", "CMUNeXtHead"]

FEATURES = ("res1", "res2", "res3", "res4", "res5")


class CMUNeXtBlock(nn.Module):
    """Residual large-kernel depthwise conv + inverted-bottleneck pointwise convs."""

    def __init__(self, channels: int, k: int, nd: int = 2, norm: str = "BN"):
        super().__init__()
        conv = conv_cls(nd)
        self.dw = nn.Sequential(
            conv(channels, channels, k, 1, k // 2, groups=channels, bias=True), nn.GELU(), make_norm(norm, channels, nd)
        )
        self.pw = nn.Sequential(
            conv(channels, 4 * channels, 1, bias=True), nn.GELU(), make_norm(norm, 4 * channels, nd),
            conv(4 * channels, channels, 1, bias=True), nn.GELU(), make_norm(norm, channels, nd),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pw(self.dw(x) + x)


class CMUNeXtStage(nn.Sequential):
    """``depth`` CMUNeXt blocks at ``cin`` then a 3x3 conv-BN-ReLU to ``cout``."""

    def __init__(self, cin: int, cout: int, depth: int, k: int):
        super().__init__(*[CMUNeXtBlock(cin, k) for _ in range(depth)], StemConv(cin, cout))


class CMUNeXtEncoder(nn.Module):
    def __init__(self, in_channels: int, dims: Sequence[int], depths: Sequence[int], kernels: Sequence[int]):
        super().__init__()
        d = list(dims)
        self.pool = maxpool(2)
        self.stem = StemConv(in_channels, d[0])
        ins = [d[0]] + d[:4]
        self.stages = nn.ModuleList(CMUNeXtStage(ins[i], d[i], depths[i], kernels[i]) for i in range(5))

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        return encode_with_pools(self.stem(x), self.stages, self.pool, FEATURES)


class CMUNeXtDecoder(nn.Module):
    def __init__(self, dims: Sequence[int]):
        super().__init__()
        d = list(dims)
        self.ups = nn.ModuleList(UpConv(d[i + 1], d[i]) for i in (3, 2, 1, 0))
        self.fusions = nn.ModuleList(FusionConv(2 * d[i], d[i]) for i in (3, 2, 1, 0))

    def forward(self, feats: Dict[str, torch.Tensor]) -> torch.Tensor:
        return decode_with_skips(feats, self.ups, self.fusions)


@BACKBONE_REGISTRY.register()
class CMUNeXtBackbone(UShapeBackbone):
    """CMUNeXt encoder: ``res1..res5`` at strides 1..16 with ``MODEL.CMUNEXT.DIMS`` channels."""

    def __init__(self, cfg, input_shape: ShapeSpec):
        c = cfg.MODEL.CMUNEXT
        dims, depths, kernels = list(c.DIMS), list(c.DEPTHS), list(c.KERNELS)
        if not (len(dims) == len(depths) == len(kernels) == 5):
            raise ValueError(f"MODEL.CMUNEXT: DIMS, DEPTHS and KERNELS need 5 entries each, got {dims}, {depths}, {kernels}")
        encoder = CMUNeXtEncoder(input_shape.channels, dims, depths, kernels)
        super().__init__(encoder, dims, 16)


@SEM_SEG_HEADS_REGISTRY.register()
class CMUNeXtHead(UShapeSemSegHead):
    """CMUNeXt decoder (up_conv + Skip-Fusion per level) + 1x1 classifier."""

    def __init__(self, cfg, input_shape: Dict[str, ShapeSpec]):
        dims = [input_shape[k].channels for k in FEATURES]
        super().__init__(CMUNeXtDecoder(dims), dims[0], cfg)

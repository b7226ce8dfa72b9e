"""TinyU-Net baseline (Chen et al., MICCAI 2024; LGMSNet's Tables 1, 2 and 6).

Four encoder stages of **CMRF** blocks (cascaded multi-receptive fields) at widths 64, 128, 256,
512, each followed by a 2x2 max pool; four decoder stages that up-sample x2 (**bicubic**,
``F.interpolate`` as in the reference code), concatenate the skip and apply a CMRF block
(input widths 1024, 768, 384, 192); a 1x1 conv predicts the logits. There is no separate
bottleneck: the pooled output of the last encoder stage (stride 16) feeds the decoder.

CMRF(c_in, c_out), N = 8: pointwise conv to c_out/8 (conv-BN-GELU); split into even and odd
channels; a cascade of N-1 = 7 depthwise 3x3 conv-BN (no activation) on the odd half, each on
the previous one's output; the even half is added to the odd half; the 8 maps (c_out/16 each)
are concatenated (c_out/2) and a pointwise conv-BN-GELU gives c_out; the residual applies only
when c_in == c_out (never in TinyU-Net). Convs have no bias; BatchNorm uses eps 1e-3 and
momentum 0.03, as the reference's Ultralytics-style ``Conv``.

With 3 inputs and 1 output it has 481,105 parameters and 1.659 G thop MACs at 256x256
(paper: 0.48 M / 1.66), the count of the authors' ``TinyUNet(3, 1)`` class.
"""
from __future__ import annotations

from typing import Dict, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from medseg_core import compat  # noqa: F401

from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, SEM_SEG_HEADS_REGISTRY

from .head import UShapeSemSegHead
from .ushape_backbone import UShapeBackbone, config_widths
from .layers import maxpool

__all__ = ["CMRF", "TinyUNetEncoder", "TinyUNetDecoder", "TinyUNetBackbone", "TinyUNetHead"]

FEATURES = ("res1", "res2", "res3", "res4", "res5")


class _ConvBN(nn.Sequential):
    """Conv (no bias) -> BN(eps 1e-3, momentum 0.03) -> GELU (or no activation)."""

    def __init__(self, cin: int, cout: int, k: int = 1, groups: int = 1, act: bool = True):
        super().__init__(
            nn.Conv2d(cin, cout, k, 1, k // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout, eps=1e-3, momentum=0.03),
            nn.GELU() if act else nn.Identity(),
        )


class CMRF(nn.Module):
    """Cascaded multi-receptive-field block (module docstring)."""

    def __init__(self, cin: int, cout: int, n: int = 8, shortcut: bool = True):
        super().__init__()
        if cout % (2 * n):
            raise ValueError(f"CMRF: output width {cout} must be a multiple of {2 * n}")
        c = cout // (2 * n)
        self.add = shortcut and cin == cout
        self.pw1 = _ConvBN(cin, cout // n)
        self.cascade = nn.ModuleList(_ConvBN(c, c, 3, groups=c, act=False) for _ in range(n - 1))
        self.pw2 = _ConvBN(cout // 2, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pw1(x)
        even, odd = y[:, 0::2], y[:, 1::2]
        maps = [even + odd]
        cur = odd
        for m in self.cascade:
            cur = m(cur)
            maps.append(cur)
        out = self.pw2(torch.cat(maps, dim=1))
        return x + out if self.add else out


class TinyUNetEncoder(nn.Module):
    """res1..res4 = CMRF outputs at strides 1..8 (the skips), res5 = the last one pooled (stride 16)."""

    def __init__(self, in_channels: int, dims: Sequence[int] = (64, 128, 256, 512)):
        super().__init__()
        chans = [in_channels] + list(dims)
        self.blocks = nn.ModuleList(CMRF(chans[i], chans[i + 1]) for i in range(4))
        self.pool = maxpool(2)

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        out = {}
        for name, block in zip(FEATURES[:4], self.blocks):
            x = block(x)
            out[name] = x
            x = self.pool(x)
        out["res5"] = x
        return out


class TinyUNetDecoder(nn.Module):
    def __init__(self, dims: Sequence[int] = (64, 128, 256, 512)):
        super().__init__()
        d = list(dims)
        # up-sampled width + skip width -> skip width, deepest first (1024, 768, 384, 192 in)
        ins = [d[3] + d[3], d[3] + d[2], d[2] + d[1], d[1] + d[0]]
        self.blocks = nn.ModuleList(CMRF(i, o) for i, o in zip(ins, (d[3], d[2], d[1], d[0])))

    def forward(self, feats: Dict[str, torch.Tensor]) -> torch.Tensor:
        x = feats["res5"]
        for block, skip in zip(self.blocks, ("res4", "res3", "res2", "res1")):
            x = F.interpolate(x, scale_factor=2, mode="bicubic", align_corners=False)
            x = block(torch.cat((x, feats[skip]), dim=1))
        return x


@BACKBONE_REGISTRY.register()
class TinyUNetBackbone(UShapeBackbone):
    """TinyU-Net encoder: skips ``res1..res4`` (64..512 channels) and the stride-16 ``res5``."""

    def __init__(self, cfg, input_shape: ShapeSpec):
        dims = config_widths(cfg, "TINYUNET", 4)
        encoder = TinyUNetEncoder(input_shape.channels, dims)
        super().__init__(encoder, dims + [dims[-1]], 16)


@SEM_SEG_HEADS_REGISTRY.register()
class TinyUNetHead(UShapeSemSegHead):
    """TinyU-Net decoder (bicubic x2 + CMRF per level) + 1x1 classifier."""

    def __init__(self, cfg, input_shape: Dict[str, ShapeSpec]):
        dims = [input_shape[k].channels for k in FEATURES[:4]]
        super().__init__(TinyUNetDecoder(dims), dims[0], cfg)

"""UNeXt baseline (Valanarasu & Patel, "UNeXt: MLP-based rapid medical image segmentation
network", MICCAI 2022; LGMSNet's Tables 1 and 2: 1.47 M parameters, 0.58 GFLOPs at 256).

Written from the paper (Sec. 2, Fig. 2), with the choices it leaves open taken as its released
model does:

* **convolutional stage**, three levels: 3x3 conv (bias) -> BN -> 2x2 max pool -> ReLU at widths
  16, 32, 128 (strides 2, 4, 8);
* **tokenized MLP stage**, two levels at widths 160 and 256 (strides 16, 32): an overlapping
  patch embedding (3x3 conv, stride 2, then LayerNorm over channels) and one **shifted MLP
  block**: ``x + MLP(LN(x))`` with MLP = shift along the height -> Linear (C -> C, MLP ratio
  1) -> depthwise 3x3 conv ("DWConv", positional information) -> GELU -> shift along the width
  -> Linear (C -> C); a shift splits the channels into 5 groups and rolls group g by
  g - 2 pixels (zero padded, so nothing wraps round); a LayerNorm follows the block;
* **decoder**, symmetric: 3x3 conv -> BN -> bilinear x2 -> ReLU, then the skip is **added**
  (not concatenated); the two deepest decoder levels (160, 128) run a shifted MLP block + LN
  too; the last level (16 -> 16 at full resolution) has no BN; a 1x1 conv predicts the logits
  (the shared head's predictor).

With 3 inputs and 1 output (binary) it has 1,471,921 parameters (paper: 1.47 M) and 0.573 G
thop MACs at 256 x 256 (paper: 0.58 / UNeXt paper: 0.57). Inputs must be multiples of 32.
"""
from __future__ import annotations

from typing import Dict, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from medseg_core import compat  # noqa: F401

from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone, SEM_SEG_HEADS_REGISTRY

from .head import UShapeSemSegHead
from .ushape_backbone import config_widths

__all__ = ["ShiftedMLP", "ShiftedMLPBlock", "OverlapPatchEmbed", "UNeXtEncoder", "UNeXtDecoder",
           "UNeXtBackbone", "UNeXtHead"]

FEATURES = ("res2", "res3", "res4", "res5", "res6")  # strides 2, 4, 8, 16, 32
STRIDES = (2, 4, 8, 16, 32)


def shift_tokens(x: torch.Tensor, groups: int, dim: int) -> torch.Tensor:
    """Roll channel group g of a (B, C, H, W) map by g - groups // 2 pixels along ``dim``
    (2: height, 3: width) with zero padding (pixels shifted out are dropped, zeros come in)."""
    pad = groups // 2
    h, w = x.shape[2], x.shape[3]
    xp = F.pad(x, (pad, pad, pad, pad))
    chunks = torch.chunk(xp, groups, dim=1)
    shifted = torch.cat([torch.roll(c, s, dim) for c, s in zip(chunks, range(-pad, pad + 1))], dim=1)
    return shifted[:, :, pad:pad + h, pad:pad + w]


class ShiftedMLP(nn.Module):
    """Shift (height) -> Linear -> DWConv -> GELU -> shift (width) -> Linear, on (B, N, C) tokens."""

    def __init__(self, dim: int, hidden: int, shift_groups: int = 5):
        super().__init__()
        self.shift_groups = int(shift_groups)
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, 1, 1, groups=hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def _shift(self, tokens: torch.Tensor, h: int, w: int, dim: int) -> torch.Tensor:
        b, n, c = tokens.shape
        x = tokens.transpose(1, 2).reshape(b, c, h, w)
        return shift_tokens(x, self.shift_groups, dim).reshape(b, c, n).transpose(1, 2)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        x = self.fc1(self._shift(x, h, w, 2))
        b, n, c = x.shape
        x = self.dwconv(x.transpose(1, 2).reshape(b, c, h, w)).flatten(2).transpose(1, 2)
        x = self.act(x)
        return self.fc2(self._shift(x, h, w, 3))


class ShiftedMLPBlock(nn.Module):
    """``x + ShiftedMLP(LayerNorm(x))`` (the tokenized MLP block, MLP ratio 1)."""

    def __init__(self, dim: int, mlp_ratio: float = 1.0):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.mlp = ShiftedMLP(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        return x + self.mlp(self.norm(x), h, w)


class OverlapPatchEmbed(nn.Module):
    """3x3 conv with stride 2 -> tokens (B, N, C) -> LayerNorm."""

    def __init__(self, cin: int, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(cin, dim, 3, 2, 1)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor):
        x = self.proj(x)
        h, w = x.shape[2:]
        return self.norm(x.flatten(2).transpose(1, 2)), h, w


class _TokenStage(nn.Module):
    """Shifted MLP block + LayerNorm on a (B, C, H, W) map, returned as a map."""

    def __init__(self, dim: int):
        super().__init__()
        self.block = ShiftedMLPBlock(dim)
        self.norm = nn.LayerNorm(dim)

    def tokens(self, t: torch.Tensor, h: int, w: int) -> torch.Tensor:
        b = t.shape[0]
        return self.norm(self.block(t, h, w)).reshape(b, h, w, -1).permute(0, 3, 1, 2).contiguous()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[2:]
        return self.tokens(x.flatten(2).transpose(1, 2), h, w)


class UNeXtEncoder(nn.Module):
    def __init__(self, in_channels: int, dims: Sequence[int] = (16, 32, 128, 160, 256)):
        super().__init__()
        d = list(dims)
        chans = [in_channels] + d[:3]
        self.convs = nn.ModuleList(nn.Conv2d(chans[i], chans[i + 1], 3, 1, 1) for i in range(3))
        self.bns = nn.ModuleList(nn.BatchNorm2d(c) for c in d[:3])
        self.embeds = nn.ModuleList([OverlapPatchEmbed(d[2], d[3]), OverlapPatchEmbed(d[3], d[4])])
        self.stages = nn.ModuleList([_TokenStage(d[3]), _TokenStage(d[4])])

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        out = {}
        for name, conv, bn in zip(FEATURES[:3], self.convs, self.bns):
            x = F.relu(F.max_pool2d(bn(conv(x)), 2, 2))
            out[name] = x
        for name, embed, stage in zip(FEATURES[3:], self.embeds, self.stages):
            tokens, h, w = embed(x)
            x = stage.tokens(tokens, h, w)
            out[name] = x
        return out


class UNeXtDecoder(nn.Module):
    """Conv -> BN -> bilinear x2 -> ReLU, + skip; MLP stages at the two deepest levels."""

    def __init__(self, dims: Sequence[int] = (16, 32, 128, 160, 256)):
        super().__init__()
        d = list(dims)
        # 256 -> 160 -> 128 -> 32 -> 16 -> 16
        ins, outs = [d[4], d[3], d[2], d[1], d[0]], [d[3], d[2], d[1], d[0], d[0]]
        self.convs = nn.ModuleList(nn.Conv2d(i, o, 3, 1, 1) for i, o in zip(ins, outs))
        self.bns = nn.ModuleList(nn.BatchNorm2d(o) for o in outs[:4])  # none on the last level
        self.stages = nn.ModuleList([_TokenStage(d[3]), _TokenStage(d[2])])

    def forward(self, feats: Dict[str, torch.Tensor]) -> torch.Tensor:
        x = feats["res6"]
        skips = ("res5", "res4", "res3", "res2")
        for i, conv in enumerate(self.convs):
            y = conv(x)
            if i < len(self.bns):
                y = self.bns[i](y)
            x = F.relu(F.interpolate(y, scale_factor=2, mode="bilinear", align_corners=False))
            if i < len(skips):
                x = x + feats[skips[i]]
            if i < len(self.stages):
                x = self.stages[i](x)
        return x


@BACKBONE_REGISTRY.register()
class UNeXtBackbone(Backbone):
    """UNeXt encoder: ``res2..res6`` at strides 2..32 (16, 32, 128, 160, 256 channels)."""

    def __init__(self, cfg, input_shape: ShapeSpec):
        super().__init__()
        dims = config_widths(cfg, "UNEXT", 5)
        self.encoder = UNeXtEncoder(input_shape.channels, dims)
        self._out_features = list(FEATURES)
        self._out_feature_channels = dict(zip(FEATURES, dims))
        self._out_feature_strides = dict(zip(FEATURES, STRIDES))

    @property
    def size_divisibility(self) -> int:
        return 32

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        return self.encoder(x)


@SEM_SEG_HEADS_REGISTRY.register()
class UNeXtHead(UShapeSemSegHead):
    """UNeXt decoder + 1x1 classifier (UNeXt's ``final``)."""

    def __init__(self, cfg, input_shape: Dict[str, ShapeSpec]):
        dims = [input_shape[k].channels for k in FEATURES]
        super().__init__(UNeXtDecoder(dims), dims[0], cfg)

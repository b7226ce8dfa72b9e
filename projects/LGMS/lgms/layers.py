"""Dimension-generic building layers shared by the 2D and 3D LGMSNet and the baselines.

Every block in this project takes ``nd`` (2 or 3) so that LGMSNet-3D (LGMSNet Sec. 3.3: "a
lightweight model capable of performing universal 2D and 3D medical image segmentation") reuses
exactly the 2D code: the authors' 3D file (``network_3d/CMUNeXtNew3d.py``) is a copy of the 2D
one with ``Conv2d -> Conv3d``, ``BatchNorm2d -> InstanceNorm3d`` (non-affine), bilinear ->
trilinear upsampling and a 2x2x2 unfold, which is what ``nd`` and the ``norm`` argument select
here.

Norm names: ``"BN"`` (BatchNorm), ``"IN"`` (InstanceNorm, no affine parameters, as
``nn.InstanceNorm3d``'s default that the authors' 3D code uses), ``"GN<k>"`` (GroupNorm with k
groups).
"""
from __future__ import annotations

from typing import Dict, Sequence, Type

import torch
from torch import nn

__all__ = [
    "conv_cls",
    "make_norm",
    "maxpool",
    "upsample_mode",
    "ConvNormAct",
    "StemConv",
    "UpConv",
    "FusionConv",
    "encode_with_pools",
    "decode_with_skips",
]


def _check_nd(nd: int) -> int:
    if nd not in (2, 3):
        raise ValueError(f"lgms layers: nd must be 2 or 3, got {nd!r}")
    return nd


def conv_cls(nd: int) -> Type[nn.Module]:
    """``nn.Conv2d`` or ``nn.Conv3d``."""
    return {2: nn.Conv2d, 3: nn.Conv3d}[_check_nd(nd)]


def make_norm(kind: str, channels: int, nd: int) -> nn.Module:
    """BatchNorm / InstanceNorm (non-affine) / GroupNorm for ``nd``-dimensional maps."""
    _check_nd(nd)
    if kind == "BN":
        return {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}[nd](channels)
    if kind == "IN":
        return {2: nn.InstanceNorm2d, 3: nn.InstanceNorm3d}[nd](channels)
    if kind.startswith("GN"):
        groups = int(kind[2:] or 4)
        if channels % groups:
            raise ValueError(f"lgms layers: GroupNorm({groups}) needs channels divisible by {groups}, got {channels}")
        return nn.GroupNorm(groups, channels)
    raise ValueError(f"lgms layers: unknown norm {kind!r} (use 'BN', 'IN' or 'GN<groups>')")


def maxpool(nd: int) -> nn.Module:
    """2x (or 2x2x2) max pooling, the only down-sampling of every U-shaped model here."""
    return {2: nn.MaxPool2d, 3: nn.MaxPool3d}[_check_nd(nd)](kernel_size=2, stride=2)


def upsample_mode(nd: int) -> str:
    """Linear interpolation: bilinear in 2D, trilinear in 3D (LGMSNet Sec. 3.3)."""
    return {2: "bilinear", 3: "trilinear"}[_check_nd(nd)]


class ConvNormAct(nn.Sequential):
    """conv (k, stride 1) -> norm -> activation.

    ``padding`` defaults to ``k // 2``. The authors' ``conv_nxn_bn`` hard-codes padding 1 and no
    bias; both are arguments here so that each call site states what it reproduces.
    """

    def __init__(
        self,
        cin: int,
        cout: int,
        k: int = 3,
        nd: int = 2,
        norm: str = "BN",
        act: Type[nn.Module] = nn.SiLU,
        bias: bool = False,
        groups: int = 1,
        padding: int | None = None,
    ):
        super().__init__(
            conv_cls(nd)(cin, cout, k, 1, k // 2 if padding is None else padding, groups=groups, bias=bias),
            make_norm(norm, cout, nd),
            act(),
        )


class StemConv(ConvNormAct):
    """CMUNeXt/LGMSNet ``conv_block``: 3x3 conv (with bias) -> norm -> ReLU."""

    def __init__(self, cin: int, cout: int, nd: int = 2, norm: str = "BN"):
        super().__init__(cin, cout, 3, nd, norm, nn.ReLU, bias=True)


class UpConv(nn.Module):
    """CMUNeXt/LGMSNet ``up_conv``: x2 linear up-sampling, then 3x3 conv (bias) -> norm -> ReLU.

    ``mode`` None picks bilinear/trilinear (``align_corners=False``, PyTorch's default that the
    authors' ``nn.Upsample(scale_factor=2, mode='bilinear')`` uses); the U-Net baseline passes
    ``"nearest"`` (``nn.Upsample(scale_factor=2)`` in its reference code).
    """

    def __init__(self, cin: int, cout: int, nd: int = 2, norm: str = "BN", mode: str | None = None):
        super().__init__()
        mode = mode or upsample_mode(nd)
        self.up = nn.Upsample(scale_factor=2, mode=mode, align_corners=None if mode == "nearest" else False)
        self.conv = ConvNormAct(cin, cout, 3, nd, norm, nn.ReLU, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.up(x))


class FusionConv(nn.Sequential):
    """CMUNeXt's Skip-Fusion block (LGMSNet Sec. 3.3: "a Fusion block that combines group
    convolutions and pointwise convolutions to merge corresponding features from the encoder
    and decoder").

    3x3 group conv (groups=2, Cin->Cin) -> GELU -> norm; 1x1 Cin->4*Cout -> GELU -> norm;
    1x1 4*Cout->Cout -> GELU -> norm. All convs have a bias and the activation comes *before*
    the norm, as in every CMUNeXt block.
    """

    def __init__(self, cin: int, cout: int, nd: int = 2, norm: str = "BN"):
        conv = conv_cls(nd)
        super().__init__(
            conv(cin, cin, 3, 1, 1, groups=2, bias=True),
            nn.GELU(),
            make_norm(norm, cin, nd),
            conv(cin, cout * 4, 1, bias=True),
            nn.GELU(),
            make_norm(norm, cout * 4, nd),
            conv(cout * 4, cout, 1, bias=True),
            nn.GELU(),
            make_norm(norm, cout, nd),
        )


def encode_with_pools(
    x: torch.Tensor, stages: Sequence[nn.Module], pool: nn.Module,
    names: Sequence[str] = ("res1", "res2", "res3", "res4", "res5"),
) -> Dict[str, torch.Tensor]:
    """U-Net encoding: ``res1 = stage_1(x)``, then ``res_i = stage_i(pool(res_{i-1}))``."""
    out = {}
    for i, (name, stage) in enumerate(zip(names, stages)):
        x = stage(x if i == 0 else pool(x))
        out[name] = x
    return out


def decode_with_skips(
    feats: Dict[str, torch.Tensor], ups: Sequence[nn.Module], merges: Sequence[nn.Module],
    skips: Sequence[str] = ("res4", "res3", "res2", "res1"),
) -> torch.Tensor:
    """U-Net decoding from ``res5``, deepest level first: ``x = merge_i(cat(skip_i, up_i(x)))``."""
    x = feats["res5"]
    for up, merge, skip in zip(ups, merges, skips):
        x = merge(torch.cat((feats[skip], up(x)), dim=1))
    return x

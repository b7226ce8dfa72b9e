"""LGMSNet encoder and decoder (LGMSNet Sec. 3.3, Fig. 3), dimension-generic.

Layout of the authors' released model (``SegmsNet`` = ``MKtinyvit4_CT`` with
``dims=[16, 32, 64, 128, 128]``, T:C splits ``[[96,32],[96,32],[96,32],[48,16]]``), which is the
one with the published 2.32 M parameters / 4.89 G (thop MACs) at 256x256:

==========  ======  ============================================================  ==========
stage       stride  block(s)                                                       channels
==========  ======  ============================================================  ==========
stem        1       3x3 conv (bias) + BN + ReLU                                    in -> 16
encoder1    1       LMS(16) + 1x1 conv-BN-SiLU                                     16 -> 16
encoder2    2       maxpool, LMS(16) + 1x1 conv-BN-SiLU                            16 -> 32
encoder3    4       maxpool, LMS(32) + 1x1 conv-BN-SiLU                            32 -> 64
encoder4    8       maxpool, GMS(64 -> 128, T96/C32, mlp 256)                      64 -> 128
encoder5    16      maxpool, GMS(128 -> 128, T96/C32, mlp 256)                     128 -> 128
up5         8       up_conv, concat x4, GMS(256 -> 128, T96/C32, mlp 256)          -> 128
up4         4       up_conv, concat x3, Fusion(128 -> 64), GMS(64 -> 64, T48/C16)  -> 64
up3         2       up_conv, concat x2, Fusion(64 -> 32)                           -> 32
up2         1       up_conv, concat x1, Fusion(32 -> 16)                           -> 16
head        1       1x1 conv (bias)                                                16 -> K
==========  ======  ============================================================  ==========

"LMS at high resolutions, GMS at lower resolutions ... a Fusion block ... like CMUNeXt" (Sec.
3.3). ``depths`` repeats the LMS block of encoders 1-3 (the released model uses 1 each; the
authors' constructor ignores ``depths[3:]``). Because the stride-16 GMS unfolds 2x2 patches, 2D
inputs must be multiples of 32 (``SIZE_DIVISIBILITY``); the meta-architecture pads to that.

The encoder returns ``res1..res5`` (strides 1..16) so that it plugs into Detectron2 as a
``Backbone``; the decoder is the semantic head's body. ``nd=3`` with ``norm="IN"`` gives the
authors' LGMSNet-3D (``MKtinyvit4_CT3D``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Sequence

import torch
from torch import nn

from .gms import GMSBlock
from .layers import ConvNormAct, FusionConv, StemConv, UpConv, maxpool
from .lms import LMSBlock

__all__ = ["GMSOptions", "LGMSNetEncoder", "LGMSNetDecoder", "LGMSNet", "SIZE_DIVISIBILITY", "FEATURE_NAMES"]

SIZE_DIVISIBILITY = 32
FEATURE_NAMES = ("res1", "res2", "res3", "res4", "res5")
DEFAULT_DIMS = (16, 32, 64, 128, 128)
DEFAULT_SPLITS = ((96, 32), (96, 32), (96, 32), (48, 16))


@dataclass(frozen=True)
class GMSOptions:
    """What every GMS block of one network shares (``MODEL.LGMS.GMS_*``); a block's MLP width is
    ``mlp_ratio`` x its output width."""

    heads: int = 4
    dim_head: int = 8
    depth: int = 1
    mlp_ratio: float = 2.0
    patch: int = 2
    branch_norm: str = "BN"

    def block(self, cin: int, cout: int, split: Sequence[int], nd: int, norm: str) -> GMSBlock:
        return GMSBlock(
            cin, cout, split, mlp_dim=int(cout * self.mlp_ratio), heads=self.heads, dim_head=self.dim_head,
            depth=self.depth, patch=self.patch, nd=nd, norm=norm, branch_norm=self.branch_norm,
        )


class LGMSNetEncoder(nn.Module):
    """Stem + 3 LMS stages + 2 GMS stages; returns ``{"res1": x1, ..., "res5": x5}``."""

    def __init__(
        self,
        in_channels: int = 3,
        dims: Sequence[int] = DEFAULT_DIMS,
        splits: Sequence[Sequence[int]] = DEFAULT_SPLITS,
        depths: Sequence[int] = (1, 1, 1),
        lms_kernels: Sequence[int] = (3, 5, 7, 9),
        lms_variant: str = "code",
        gms: GMSOptions = GMSOptions(),
        nd: int = 2,
        norm: str = "BN",
    ):
        super().__init__()
        if len(dims) != 5 or len(splits) != 4 or len(depths) < 3:
            raise ValueError(
                f"LGMSNet: need 5 dims, 4 GMS splits and 3 LMS depths, got dims={list(dims)}, "
                f"splits={[list(s) for s in splits]}, depths={list(depths)}"
            )
        d = [int(v) for v in dims]
        self.dims = d
        lms = lambda c: LMSBlock(c, lms_kernels, lms_variant, nd, norm)  # noqa: E731
        self.pool = maxpool(nd)
        self.stem = StemConv(in_channels, d[0], nd, norm)
        self.encoder1 = nn.Sequential(*[lms(d[0]) for _ in range(depths[0])], ConvNormAct(d[0], d[0], 1, nd, norm))
        self.encoder2 = nn.Sequential(*[lms(d[0]) for _ in range(depths[1])], ConvNormAct(d[0], d[1], 1, nd, norm))
        self.encoder3 = nn.Sequential(*[lms(d[1]) for _ in range(depths[2])], ConvNormAct(d[1], d[2], 1, nd, norm))
        self.encoder4 = gms.block(d[2], d[3], splits[0], nd, norm)
        self.encoder5 = gms.block(d[3], d[4], splits[1], nd, norm)

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        x1 = self.encoder1(self.stem(x))
        x2 = self.encoder2(self.pool(x1))
        x3 = self.encoder3(self.pool(x2))
        x4 = self.encoder4(self.pool(x3))
        x5 = self.encoder5(self.pool(x4))
        return dict(zip(FEATURE_NAMES, (x1, x2, x3, x4, x5)))


class LGMSNetDecoder(nn.Module):
    """Up5..Up2 of the released model; returns the stride-1, ``dims[0]``-wide map (no classifier)."""

    def __init__(
        self,
        dims: Sequence[int] = DEFAULT_DIMS,
        splits: Sequence[Sequence[int]] = DEFAULT_SPLITS,
        gms: GMSOptions = GMSOptions(),
        nd: int = 2,
        norm: str = "BN",
    ):
        super().__init__()
        d = [int(v) for v in dims]
        self.up5 = UpConv(d[4], d[3], nd, norm)
        self.up_conv5 = gms.block(2 * d[3], d[3], splits[2], nd, norm)
        self.up4 = UpConv(d[3], d[2], nd, norm)
        self.up_conv4 = nn.Sequential(FusionConv(2 * d[2], d[2], nd, norm), gms.block(d[2], d[2], splits[3], nd, norm))
        self.up3 = UpConv(d[2], d[1], nd, norm)
        self.up_conv3 = FusionConv(2 * d[1], d[1], nd, norm)
        self.up2 = UpConv(d[1], d[0], nd, norm)
        self.up_conv2 = FusionConv(2 * d[0], d[0], nd, norm)
        self.out_channels = d[0]

    def forward(self, feats: Dict[str, torch.Tensor]) -> torch.Tensor:
        x1, x2, x3, x4, x5 = (feats[k] for k in FEATURE_NAMES)
        d = self.up_conv5(torch.cat((x4, self.up5(x5)), dim=1))
        d = self.up_conv4(torch.cat((x3, self.up4(d)), dim=1))
        d = self.up_conv3(torch.cat((x2, self.up3(d)), dim=1))
        return self.up_conv2(torch.cat((x1, self.up2(d)), dim=1))


class LGMSNet(nn.Module):
    """The whole network as one module (encoder, decoder, 1x1 classifier): image -> logits.

    Used for LGMSNet-3D and for reference counts; the 2D Detectron2 model splits the same
    modules into a backbone and a head.
    """

    def __init__(self, in_channels: int = 3, num_outputs: int = 1, nd: int = 2, norm: str = "BN", **kwargs):
        super().__init__()
        enc_keys = {"depths", "lms_kernels", "lms_variant"}
        dec_kwargs = {k: v for k, v in kwargs.items() if k not in enc_keys}
        self.encoder = LGMSNetEncoder(in_channels, nd=nd, norm=norm, **kwargs)
        self.decoder = LGMSNetDecoder(nd=nd, norm=norm, **dec_kwargs)
        self.predictor = {2: nn.Conv2d, 3: nn.Conv3d}[nd](self.decoder.out_channels, num_outputs, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.predictor(self.decoder(self.encoder(x)))

"""MONAI 3D baselines in ``VOLUME_NETWORK_REGISTRY``: "UNETR", "SwinUNETR", "SegResNet", "DynUNet".

The wrapper classes carry the registered names; the MONAI classes are imported under
``_Monai*`` aliases inside them (MONAI is imported only when a baseline is built).

Each wrapper builds the MONAI network from ``MODEL.VOLUMETRIC`` (channels, classes) and
``MODEL.VOLUMETRIC_BASELINES`` (its own keys), states the stride it needs
(``size_divisibility``, also readable before building through ``size_divisibility_from_config``
so that the shared volume plan can round the patch to it) and, where the network has decoder
outputs at several resolutions, implements ``forward_deep_supervision`` for the shared
``VolumetricSegmentor`` (DynUNet and SegResNet natively; UNETR and SwinUNETR have one output).

The configuration follows nnU-Net's plan for MSD Task04 Hippocampus (3d_fullres, as listed in
the supplementary information of Isensee et al., Nature Methods 2021): 1 mm target spacing,
median shape 36 x 50 x 35, patch 40 x 56 x 40, three 2x2x2 poolings on every axis, 3x3x3
kernels at all four resolutions, 32 features doubling per level (32, 64, 128, 256), instance
norm, leaky ReLU 0.01, deep supervision (batch 9 on a GPU; 2 here on one CPU thread).
DynUNet *is* that network; the others keep their published architectures and take what
carries over: the patch size rounded to their own stride (the shared plan), and deep
supervision where they have multi-scale decoder heads (SegResNet's ``dsdepth``).
"""
from __future__ import annotations

from typing import Dict, List, Sequence

import torch
from torch import nn

from medseg_core import compat  # noqa: F401

from detectron2.config import CfgNode as CN
from medseg_core.modeling.volumetric import VOLUME_NETWORK_REGISTRY, deep_supervision_outputs

__all__ = [
    "add_volumetric_baselines_config", "UNETR", "SwinUNETR", "SegResNet", "DynUNet",
]


def add_volumetric_baselines_config(cfg) -> None:
    """Keys of the MONAI 3D baselines (``MODEL.VOLUMETRIC_BASELINES``)."""
    b = cfg.MODEL.VOLUMETRIC_BASELINES = CN()

    b.UNETR = CN()
    # Input size the ViT's position embedding is built for (array axes); must equal the sliding
    # window / patch size and be a multiple of 16 (UNETR's patch). (48, 64, 48): nnU-Net's
    # 40 x 56 x 40 hippocampus patch rounded up to 16.
    b.UNETR.IMG_SIZE = (48, 64, 48)
    # Width of the convolutional decoder (UNETR paper: 16).
    b.UNETR.FEATURE_SIZE = 16
    # ViT width, MLP width, heads and depth (UNETR paper, ViT-B/16: 768, 3072, 12, 12 layers fixed by MONAI).
    b.UNETR.HIDDEN_SIZE = 768
    # Feed-forward width of the ViT blocks.
    b.UNETR.MLP_DIM = 3072
    # Attention heads of the ViT blocks.
    b.UNETR.NUM_HEADS = 12
    # Norm of the decoder blocks ("instance" as in the UNETR paper / MONAI default).
    b.UNETR.NORM = "instance"

    b.SWIN_UNETR = CN()
    # Embedding width of the first Swin stage (MONAI default 24; the Swin UNETR paper's BraTS model: 48).
    b.SWIN_UNETR.FEATURE_SIZE = 24
    # Swin blocks per stage.
    b.SWIN_UNETR.DEPTHS = (2, 2, 2, 2)
    # Attention heads per stage.
    b.SWIN_UNETR.NUM_HEADS = (3, 6, 12, 24)
    # Attention window edge in tokens (Swin UNETR: 7).
    b.SWIN_UNETR.WINDOW_SIZE = 7
    # Layer-normalise the encoder features before the decoder (MONAI default True; needs einops).
    b.SWIN_UNETR.NORMALIZE = True
    # Stochastic depth rate of the Swin blocks.
    b.SWIN_UNETR.DROP_PATH_RATE = 0.0

    b.SEGRESNET = CN()
    # Features of the first level, doubled per level (16: 5.0 M parameters, the size of the
    # nnU-Net-plan DynUNet; 32 gives 19.9 M).
    b.SEGRESNET.INIT_FILTERS = 16
    # Residual blocks per encoder level; 4 levels = 3 poolings (nnU-Net's hippocampus depth).
    b.SEGRESNET.BLOCKS_DOWN = (1, 2, 2, 4)
    # Normalisation ("instance", "batch", "group"); nnU-Net: instance.
    b.SEGRESNET.NORM = "instance"

    b.DYNUNET = CN()
    # Kernel size per resolution level (nnU-Net hippocampus plan: 3x3x3 at all 4 levels).
    b.DYNUNET.KERNEL_SIZES = ((3, 3, 3), (3, 3, 3), (3, 3, 3), (3, 3, 3))
    # Stride per level, the first being the input level (plan: no stride, then 3x 2x2x2).
    b.DYNUNET.STRIDES = ((1, 1, 1), (2, 2, 2), (2, 2, 2), (2, 2, 2))
    # Features per level (nnU-Net: 32 doubling, capped at 320).
    b.DYNUNET.FILTERS = (32, 64, 128, 256)
    # Residual blocks instead of plain conv pairs (nnU-Net's default U-Net: no).
    b.DYNUNET.RES_BLOCK = False


def _stride_product(strides: Sequence[Sequence[int]]) -> int:
    prod = [1, 1, 1]
    for s in strides:
        s = [int(v) for v in (s if isinstance(s, (list, tuple)) else (s, s, s))]
        prod = [p * v for p, v in zip(prod, s)]
    if len(set(prod)) != 1:
        raise ValueError(f"MODEL.VOLUMETRIC_BASELINES.DYNUNET.STRIDES must give the same total stride per axis, got {prod}")
    return prod[0]


@VOLUME_NETWORK_REGISTRY.register()
class UNETR(nn.Module):
    """MONAI ``UNETR`` (Hatamizadeh et al., WACV 2022): ViT-B/16 encoder, conv decoder; one output.

    The position embedding fixes the input size, so training patches and sliding windows must
    both be ``IMG_SIZE`` (the configs set ``INPUT.VOLUME.CROP_SIZE`` to it).
    """

    size_divisibility = 16

    def __init__(self, cfg):
        super().__init__()
        from monai.networks.nets import UNETR as _MonaiUNETR

        c = cfg.MODEL.VOLUMETRIC_BASELINES.UNETR
        self.img_size = tuple(int(s) for s in c.IMG_SIZE)
        if any(s % 16 for s in self.img_size):
            raise ValueError(f"MODEL.VOLUMETRIC_BASELINES.UNETR.IMG_SIZE must be multiples of 16, got {self.img_size}")
        self.net = _MonaiUNETR(
            in_channels=cfg.MODEL.VOLUMETRIC.IN_CHANNELS, out_channels=cfg.MODEL.VOLUMETRIC.NUM_CLASSES,
            img_size=self.img_size, feature_size=int(c.FEATURE_SIZE), hidden_size=int(c.HIDDEN_SIZE),
            mlp_dim=int(c.MLP_DIM), num_heads=int(c.NUM_HEADS), norm_name=c.NORM,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[2:]) != self.img_size:
            raise ValueError(
                f"UNETR was built for inputs of {self.img_size} (MODEL.VOLUMETRIC_BASELINES.UNETR.IMG_SIZE) and got "
                f"{tuple(x.shape[2:])}: set INPUT.VOLUME.CROP_SIZE and the sliding-window ROI to IMG_SIZE"
            )
        return self.net(x)


@VOLUME_NETWORK_REGISTRY.register()
class SwinUNETR(nn.Module):
    """MONAI ``SwinUNETR`` (Hatamizadeh et al., BrainLes 2021): Swin encoder (patch 2, four
    stages with patch merging), conv decoder; one output. Any input that is a multiple of 32."""

    size_divisibility = 32

    def __init__(self, cfg):
        super().__init__()
        from monai.networks.nets import SwinUNETR as _MonaiSwinUNETR

        c = cfg.MODEL.VOLUMETRIC_BASELINES.SWIN_UNETR
        self.net = _MonaiSwinUNETR(
            in_channels=cfg.MODEL.VOLUMETRIC.IN_CHANNELS, out_channels=cfg.MODEL.VOLUMETRIC.NUM_CLASSES,
            feature_size=int(c.FEATURE_SIZE), depths=tuple(int(d) for d in c.DEPTHS),
            num_heads=tuple(int(h) for h in c.NUM_HEADS), window_size=int(c.WINDOW_SIZE),
            normalize=bool(c.NORMALIZE), dropout_path_rate=float(c.DROP_PATH_RATE), spatial_dims=3,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@VOLUME_NETWORK_REGISTRY.register()
class SegResNet(nn.Module):
    """MONAI ``SegResNetDS``: SegResNet (Myronenko, BrainLes 2018; the encoder-decoder without
    the VAE branch) in the version with deep-supervision heads that MONAI's Auto3DSeg trains.

    ``dsdepth`` = the number of deep-supervision outputs (``MODEL.VOLUMETRIC.DEEP_SUPERVISION``);
    MONAI returns them lowest resolution last, full resolution first, as the meta-architecture
    expects. Inputs must be multiples of 2^(levels - 1).
    """

    def __init__(self, cfg):
        super().__init__()
        from monai.networks.nets import SegResNetDS as _MonaiSegResNetDS

        c = cfg.MODEL.VOLUMETRIC_BASELINES.SEGRESNET
        blocks = tuple(int(b) for b in c.BLOCKS_DOWN)
        self.size_divisibility = 2 ** (len(blocks) - 1)
        self.num_outputs = min(deep_supervision_outputs(cfg), len(blocks) - 1) if len(blocks) > 1 else 1
        self.net = _MonaiSegResNetDS(
            spatial_dims=3, init_filters=int(c.INIT_FILTERS), in_channels=cfg.MODEL.VOLUMETRIC.IN_CHANNELS,
            out_channels=cfg.MODEL.VOLUMETRIC.NUM_CLASSES, norm=c.NORM, blocks_down=blocks,
            dsdepth=max(self.num_outputs, 1),
        )

    @staticmethod
    def size_divisibility_from_config(cfg) -> int:
        return 2 ** (len(cfg.MODEL.VOLUMETRIC_BASELINES.SEGRESNET.BLOCKS_DOWN) - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        return out[0] if isinstance(out, (list, tuple)) else out

    def forward_deep_supervision(self, x: torch.Tensor) -> List[torch.Tensor]:
        out = self.net(x)
        return list(out) if isinstance(out, (list, tuple)) else [out]


@VOLUME_NETWORK_REGISTRY.register()
class DynUNet(nn.Module):
    """MONAI ``DynUNet``: nnU-Net's U-Net, here with nnU-Net's Task04 Hippocampus plan (module doc).

    With deep supervision MONAI returns the extra heads up-sampled to full resolution (stacked on
    dim 1) rather than down-sampling the label as nnU-Net does; the loss weights are the same.
    """

    def __init__(self, cfg):
        super().__init__()
        from monai.networks.nets import DynUNet as _MonaiDynUNet

        c = cfg.MODEL.VOLUMETRIC_BASELINES.DYNUNET
        kernels = [list(int(v) for v in k) for k in c.KERNEL_SIZES]
        strides = [list(int(v) for v in s) for s in c.STRIDES]
        if len(kernels) != len(strides) or len(c.FILTERS) != len(strides):
            raise ValueError("MODEL.VOLUMETRIC_BASELINES.DYNUNET: KERNEL_SIZES, STRIDES and FILTERS need one entry per level")
        self.size_divisibility = _stride_product(strides)
        # DynUNet allows at most (levels - 2) extra heads
        self.num_outputs = max(min(deep_supervision_outputs(cfg), len(strides) - 1), 1)
        self.net = _MonaiDynUNet(
            spatial_dims=3, in_channels=cfg.MODEL.VOLUMETRIC.IN_CHANNELS, out_channels=cfg.MODEL.VOLUMETRIC.NUM_CLASSES,
            kernel_size=kernels, strides=strides, upsample_kernel_size=strides[1:],
            filters=[int(f) for f in c.FILTERS], norm_name=("INSTANCE", {"affine": True}),
            act_name=("leakyrelu", {"inplace": True, "negative_slope": 0.01}),
            deep_supervision=self.num_outputs > 1, deep_supr_num=max(self.num_outputs - 1, 1),
            res_block=bool(c.RES_BLOCK),
        )

    @staticmethod
    def size_divisibility_from_config(cfg) -> int:
        return _stride_product(cfg.MODEL.VOLUMETRIC_BASELINES.DYNUNET.STRIDES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        return out[:, 0] if out.ndim == 6 else out

    def forward_deep_supervision(self, x: torch.Tensor) -> List[torch.Tensor]:
        out = self.net(x)
        return list(out.unbind(1)) if out.ndim == 6 else [out]

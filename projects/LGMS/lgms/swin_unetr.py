"""Transformer baseline for LGMSNet's Table 1: MONAI's 2D ``SwinUNETR`` (Hatamizadeh et al.,
BrainLes 2021) with ``spatial_dims=2``, registered as ``SwinUNETR2DBackbone`` (whole network)
+ ``WholeNetworkHead``.

The table's transformer rows (Swin-Unet 27.14 M / 5.91 GFLOPs, TransUNet, MissFormer) are not in
a kept library; MONAI's Swin UNETR is the Swin-encoder U-shaped network that is. With feature
size 48 (``MODEL.SWIN_UNETR_2D.FEATURE_SIZE``; Swin-T widths 48-768, depths 2-2-2-2, heads
3-6-12-24, window 7, patch 2) it has **25,139,275** parameters (3 in, 1 out), the nearest to
Swin-Unet's 27.14 M; its convolutional decoder works at full resolution, so its MACs are higher
than Swin-Unet's (19.15 G thop at 256 vs 5.91). Trained from scratch like every model here.
Inputs must be multiples of 32.
"""
from __future__ import annotations

from medseg_core import compat  # noqa: F401

from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY

from .whole_network import WholeNetworkBackbone

__all__ = ["SwinUNETR2DBackbone"]


@BACKBONE_REGISTRY.register()
class SwinUNETR2DBackbone(WholeNetworkBackbone):
    """MONAI ``SwinUNETR`` (2D) producing the head's logits."""

    def __init__(self, cfg, input_shape: ShapeSpec):
        from monai.networks.nets import SwinUNETR

        c = cfg.MODEL.SWIN_UNETR_2D
        k = self.outputs(cfg)
        net = SwinUNETR(in_channels=input_shape.channels, out_channels=k, feature_size=int(c.FEATURE_SIZE),
                        depths=tuple(int(d) for d in c.DEPTHS), num_heads=tuple(int(h) for h in c.NUM_HEADS),
                        window_size=int(c.WINDOW_SIZE), spatial_dims=2)
        super().__init__(net, k, 32)

"""Attention U-Net baseline (Oktay et al., MIDL 2018; LGMSNet's Table 1: 34.87 M parameters)
from MONAI (``monai.networks.nets.AttentionUnet``), registered as ``AttentionUNetBackbone``
(whole network) + ``WholeNetworkHead``.

Widths 64, 128, 256, 512, 1024 (``MODEL.ATTENTION_UNET.CHANNELS``) with additive attention
gates on every skip. MONAI's version has **31,740,337** parameters with 3 inputs and 1 output,
3.14 M fewer than the paper's 34.87 M: each MONAI decoder level merges the gated skip and the
up-sampled map with **one** 3x3 conv-BN-ReLU where the reference (the CMUNeXt benchmark's
``AttU_Net``) uses two (512^2 + 256^2 + 128^2 + 64^2 weights x 9 = 3.13 M, plus their biases and
norms), and it down-samples with stride-2 convolutions instead of max pooling (same parameter
count); so it also has fewer MACs, 56.91 G thop at 256 (paper: 66.63). Not adjustable through
MONAI's arguments; stated instead of patched. Inputs must be multiples of 16.
"""
from __future__ import annotations

from medseg_core import compat  # noqa: F401

from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY

from .whole_network import WholeNetworkBackbone

__all__ = ["AttentionUNetBackbone"]


@BACKBONE_REGISTRY.register()
class AttentionUNetBackbone(WholeNetworkBackbone):
    """MONAI ``AttentionUnet`` (2D) producing the head's logits."""

    def __init__(self, cfg, input_shape: ShapeSpec):
        from monai.networks.nets import AttentionUnet

        chans = [int(c) for c in cfg.MODEL.ATTENTION_UNET.CHANNELS]
        if len(chans) < 2:
            raise ValueError(f"MODEL.ATTENTION_UNET.CHANNELS needs at least 2 widths, got {chans}")
        k = self.outputs(cfg)
        net = AttentionUnet(spatial_dims=2, in_channels=input_shape.channels, out_channels=k,
                            channels=chans, strides=[2] * (len(chans) - 1))
        super().__init__(net, k, 2 ** (len(chans) - 1))

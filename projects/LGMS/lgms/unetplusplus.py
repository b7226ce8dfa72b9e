"""U-Net++ baseline (Zhou et al., IEEE TMI 2019; LGMSNet's Table 1: 26.90 M parameters, 37.62
GFLOPs) from MONAI (``monai.networks.nets.BasicUNetPlusPlus``), registered as
``UNetPlusPlusBackbone`` (whole network) + ``WholeNetworkHead``.

Nested dense skip pathways over five levels; widths ``MODEL.UNETPLUSPLUS.FEATURES`` (five
levels + the up-sampling width). No U-Net++ of this family matches the table's pair: widths
32-512 give **9,119,332** parameters and 38.52 G thop MACs at 256 (close to the table's
37.62 GFLOPs; the default here), widths 64-1024 give 36,451,524 parameters and four times the
MACs. The table's 26.90 M fits neither with its own GFLOPs, so the FLOP-matched widths are used.
Only the final (full-resolution, X^{0,4}) output is used (no deep supervision), as in the
benchmark code behind the table. Inputs must be multiples of 16.
"""
from __future__ import annotations

from medseg_core import compat  # noqa: F401

from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY
from torch import nn

from .whole_network import WholeNetworkBackbone

__all__ = ["UNetPlusPlusBackbone"]


class _FinalOutput(nn.Module):
    """BasicUNetPlusPlus returns a list of outputs; the last one is X^{0,4}."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x)[-1]


@BACKBONE_REGISTRY.register()
class UNetPlusPlusBackbone(WholeNetworkBackbone):
    """MONAI ``BasicUNetPlusPlus`` (2D) producing the head's logits."""

    def __init__(self, cfg, input_shape: ShapeSpec):
        from monai.networks.nets import BasicUNetPlusPlus

        feats = [int(f) for f in cfg.MODEL.UNETPLUSPLUS.FEATURES]
        if len(feats) != 6:
            raise ValueError(f"MODEL.UNETPLUSPLUS.FEATURES needs 6 widths (5 levels + up-sampling), got {feats}")
        k = self.outputs(cfg)
        net = BasicUNetPlusPlus(spatial_dims=2, in_channels=input_shape.channels, out_channels=k,
                                features=feats, deep_supervision=False)
        super().__init__(_FinalOutput(net), k, 16)

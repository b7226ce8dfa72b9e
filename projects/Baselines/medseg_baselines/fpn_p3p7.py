"""ResNet + FPN with levels P3-P7, the backbone of YOLACT (Bolya et al. 2019, Sec. 3.3 / 6).

YOLACT follows RetinaNet's pyramid: no P2, and P6, P7 made by two successive 3x3 stride-2 convs
"starting from P5 (not C5)". Detectron2 has the pieces (``build_resnet_backbone``, ``FPN``,
``LastLevelP6P7``) but only builds P6/P7 from C5 (``build_retinanet_resnet_fpn_backbone``); here
the input of the extra convs is ``MODEL.FPN_P6P7.IN_FEATURE``: "p5" (the paper, 256 input
channels) or "res5" (RetinaNet / mmdetection's YOLACT, 2048 input channels, +4.1 M params).
Detectron2's ``LastLevelP6P7`` applies a ReLU between P6 and P7 (RetinaNet); the YOLACT
paper does not mention one either way.
"""
from __future__ import annotations

import medseg_core  # noqa: F401  (compatibility shim before detectron2)

from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY
from detectron2.modeling.backbone.fpn import FPN, LastLevelP6P7
from detectron2.modeling.backbone.resnet import build_resnet_backbone

from medseg_core.errors import ConfigError

__all__ = ["build_resnet_fpn_p3p7_backbone"]


@BACKBONE_REGISTRY.register()
def build_resnet_fpn_p3p7_backbone(cfg, input_shape: ShapeSpec) -> FPN:
    """ResNet (``MODEL.RESNETS``) under FPN on res3-res5, plus P6/P7 from ``MODEL.FPN_P6P7.IN_FEATURE``."""
    bottom_up = build_resnet_backbone(cfg, input_shape)
    in_features = list(cfg.MODEL.FPN.IN_FEATURES)
    source = str(cfg.MODEL.FPN_P6P7.IN_FEATURE)
    out_channels = int(cfg.MODEL.FPN.OUT_CHANNELS)
    if source == "p5":
        in_channels = out_channels
    elif source == in_features[-1]:
        in_channels = bottom_up.output_shape()[source].channels
    else:
        raise ConfigError(
            f"MODEL.FPN_P6P7.IN_FEATURE = {source!r}: choose 'p5' or the deepest FPN input "
            f"{in_features[-1]!r} (MODEL.FPN.IN_FEATURES = {in_features})"
        )
    return FPN(
        bottom_up=bottom_up,
        in_features=in_features,
        out_channels=out_channels,
        norm=cfg.MODEL.FPN.NORM,
        top_block=LastLevelP6P7(in_channels, out_channels, in_feature=source),
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )

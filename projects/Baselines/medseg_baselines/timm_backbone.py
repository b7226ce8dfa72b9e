"""A timm model (Swin-T by default) as a Detectron2 ``Backbone``, alone or under FPN.

The Swin Mask R-CNN baseline of the LMSF-A paper (Table II/IV, "Swin Mask RCNN [9]") needs a Swin
Transformer under Detectron2's FPN; Detectron2 v0.6 has no Swin backbone, so this wraps timm's
maintained implementation instead of re-writing it:

* ``timm.create_model(name, pretrained=False, features_only=True, out_indices=...)``: no weights
  are downloaded (everything here trains from scratch);
* ``strict_img_size=False`` so that any input size is accepted (timm then also computes the
  shifted-window attention mask per input size);
* timm's Swin returns NHWC feature maps (``output_fmt``); Detectron2 expects NCHW, so they are
  permuted;
* channels and strides come from timm's ``feature_info``; ``size_divisibility`` = the deepest
  stride (32), so padded inputs give integer feature sizes at every level.
"""
from __future__ import annotations

from typing import Dict, List

import torch

import medseg_core  # noqa: F401  (compatibility shim before detectron2)

from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone
from detectron2.modeling.backbone.fpn import FPN, LastLevelMaxPool

from medseg_core.errors import ConfigError

__all__ = ["TimmBackbone", "build_timm_backbone", "build_timm_fpn_backbone"]


def _literal_kwargs(pairs) -> Dict:
    out = {}
    for pair in pairs:
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise ConfigError(f"MODEL.TIMM.EXTRA_KWARGS: expected [key, value] pairs, got {pair!r}")
        out[str(pair[0])] = pair[1]
    return out


class TimmBackbone(Backbone):
    """timm ``features_only`` model exposing named NCHW feature maps."""

    def __init__(
        self,
        name: str,
        out_features: List[str],
        out_indices: List[int],
        in_chans: int = 3,
        drop_path_rate: float = 0.0,
        size_divisibility: int = 32,
        **extra,
    ):
        super().__init__()
        import timm

        if len(out_features) != len(out_indices):
            raise ConfigError(
                f"MODEL.TIMM: OUT_FEATURES {list(out_features)} and OUT_INDICES {list(out_indices)} "
                "must have the same length"
            )
        kwargs = dict(
            pretrained=False, features_only=True, out_indices=tuple(out_indices),
            in_chans=in_chans, drop_path_rate=drop_path_rate, **extra,
        )
        try:
            self.body = timm.create_model(name, strict_img_size=False, **kwargs)
        except TypeError as e:
            if "strict_img_size" not in str(e):
                raise
            # models without a fixed input size (CNNs) do not take strict_img_size
            self.body = timm.create_model(name, **kwargs)
        info = self.body.feature_info
        channels, strides = info.channels(), info.reduction()
        self.nhwc = str(getattr(self.body, "output_fmt", "NCHW")).upper().endswith("NHWC")
        self._out_features = list(out_features)
        self._out_feature_channels = dict(zip(out_features, channels))
        self._out_feature_strides = dict(zip(out_features, strides))
        self._size_divisibility = int(size_divisibility)

    @property
    def size_divisibility(self) -> int:
        return self._size_divisibility

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        feats = self.body(x)
        if self.nhwc:
            feats = [f.permute(0, 3, 1, 2).contiguous() for f in feats]
        return dict(zip(self._out_features, feats))

    def output_shape(self) -> Dict[str, ShapeSpec]:
        return {
            k: ShapeSpec(channels=self._out_feature_channels[k], stride=self._out_feature_strides[k])
            for k in self._out_features
        }


@BACKBONE_REGISTRY.register()
def build_timm_backbone(cfg, input_shape: ShapeSpec) -> TimmBackbone:
    """The timm model of ``MODEL.TIMM`` alone (bottom-up features only)."""
    t = cfg.MODEL.TIMM
    return TimmBackbone(
        t.NAME, list(t.OUT_FEATURES), list(t.OUT_INDICES), in_chans=input_shape.channels,
        drop_path_rate=t.DROP_PATH_RATE, size_divisibility=t.SIZE_DIVISIBILITY,
        **_literal_kwargs(t.EXTRA_KWARGS),
    )


@BACKBONE_REGISTRY.register()
def build_timm_fpn_backbone(cfg, input_shape: ShapeSpec) -> FPN:
    """The timm model under Detectron2's FPN (P2-P6, as ``build_resnet_fpn_backbone``)."""
    bottom_up = build_timm_backbone(cfg, input_shape)
    missing = [f for f in cfg.MODEL.FPN.IN_FEATURES if f not in bottom_up.output_shape()]
    if missing:
        raise ConfigError(
            f"MODEL.FPN.IN_FEATURES {list(cfg.MODEL.FPN.IN_FEATURES)}: {missing} not produced by the "
            f"timm backbone (MODEL.TIMM.OUT_FEATURES = {list(cfg.MODEL.TIMM.OUT_FEATURES)})"
        )
    return FPN(
        bottom_up=bottom_up,
        in_features=cfg.MODEL.FPN.IN_FEATURES,
        out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
        norm=cfg.MODEL.FPN.NORM,
        top_block=LastLevelMaxPool(),
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )

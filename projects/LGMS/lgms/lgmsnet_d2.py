"""LGMSNet in Detectron2: the encoder as a ``Backbone``, the decoder as a semantic head.

``LGMSNetBackbone`` (``BACKBONE_REGISTRY``) outputs ``res1..res5`` at strides 1, 2, 4, 8, 16 with
``MODEL.LGMS.DIMS`` channels and ``size_divisibility = 32`` (2x2 unfold at stride 16).
``LGMSNetHead`` (``SEM_SEG_HEADS_REGISTRY``) is Up5..Up2 + the 1x1 classifier. Together, with 3
input channels and one output logit, they are the authors' ``SegmsNet`` with exactly 2,321,393
parameters (see :mod:`.lgmsnet`).
"""
from __future__ import annotations

from typing import Dict


from medseg_core import compat  # noqa: F401

from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, SEM_SEG_HEADS_REGISTRY

from .head import UShapeSemSegHead
from .ushape_backbone import UShapeBackbone
from .lgmsnet import FEATURE_NAMES, SIZE_DIVISIBILITY, GMSOptions, LGMSNetDecoder, LGMSNetEncoder

__all__ = ["LGMSNetBackbone", "LGMSNetHead", "lgms_kwargs"]


def lgms_kwargs(cfg, encoder: bool = False) -> Dict:
    """Block options shared by the encoder and the decoder, from ``MODEL.LGMS``; with ``encoder``
    also the encoder-only LMS options."""
    c = cfg.MODEL.LGMS
    gms = GMSOptions(
        heads=c.GMS_HEADS, dim_head=c.GMS_DIM_HEAD, depth=c.GMS_DEPTH, mlp_ratio=c.GMS_MLP_RATIO,
        patch=c.GMS_PATCH, branch_norm=c.GMS_BRANCH_NORM,
    )
    kw = dict(dims=list(c.DIMS), splits=[list(s) for s in c.GMS_SPLITS], gms=gms, norm=c.NORM)
    if encoder:
        kw.update(depths=list(c.DEPTHS), lms_kernels=list(c.LMS_KERNELS), lms_variant=c.LMS_VARIANT)
    return kw


@BACKBONE_REGISTRY.register()
class LGMSNetBackbone(UShapeBackbone):
    """LGMSNet encoder (stem, LMS x3, GMS x2) with Detectron2's backbone interface."""

    def __init__(self, cfg, input_shape: ShapeSpec):
        encoder = LGMSNetEncoder(in_channels=input_shape.channels, nd=2, **lgms_kwargs(cfg, encoder=True))
        # 2x2 unfold at stride 16 -> multiples of 32 (or more with a larger patch)
        size_divisibility = max(SIZE_DIVISIBILITY, 16 * int(cfg.MODEL.LGMS.GMS_PATCH))
        super().__init__(encoder, encoder.dims, size_divisibility)


@SEM_SEG_HEADS_REGISTRY.register()
class LGMSNetHead(UShapeSemSegHead):
    """LGMSNet decoder (Up5..Up2: GMS at strides 8 and 4, Fusion at 2 and 1) + 1x1 classifier."""

    def __init__(self, cfg, input_shape: Dict[str, ShapeSpec]):
        dims = [input_shape[k].channels for k in FEATURE_NAMES]
        kw = lgms_kwargs(cfg)
        if dims != kw["dims"]:
            raise ValueError(f"LGMSNetHead: backbone channels {dims} differ from MODEL.LGMS.DIMS {kw['dims']}")
        super().__init__(LGMSNetDecoder(nd=2, **kw), dims[0], cfg)

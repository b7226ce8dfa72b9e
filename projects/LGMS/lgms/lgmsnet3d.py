"""LGMSNet-3D (LGMSNet Sec. 3.3 and 4.1-4.3, BTCV / KiTS23): the 2D network with ``nd=3``.

"LGMSNet achieves modality-agnostic segmentation for both 2D and 3D data" (Sec. 1). The authors'
3D model (``MKtinyvit4_CT3D`` in ``network_3d/CMUNeXtNew3d.py``, released as ``SegmsNet3D``) is
the 2D layout of :mod:`.lgmsnet` with:

* ``Conv3d`` everywhere; LMS depthwise kernels 3/5/7/9 become cubes (9^3 = 729 weights per
  channel);
* non-affine ``InstanceNorm3d`` instead of BatchNorm in the stem, the LMS 1x1/3x3 convs, the
  GMS local/fusion convs, the up-convs and the fusion blocks (``MODEL.LGMS.NORM_3D = "IN"``);
  the LMS keeps GroupNorm(4) and the GMS depthwise conv branch keeps BatchNorm3d;
* trilinear up-sampling; a 2x2x2 MobileViT unfold (8 token groups) in the GMS blocks;
* 1 input channel; same widths ``[16, 32, 64, 128, 128]`` and T:C splits.

Here the same classes run with ``nd=3`` (no copied code). With 1 input and 14 classes (BTCV) it
has **6,193,742** parameters, the released ``SegmsNet3D``; the paper's 9.86 M matches no released
configuration (docs/lgmsnet.md). Inputs must be multiples of 32 per axis (stride 16 x patch 2):
the volumetric meta-architecture pads to ``size_divisibility`` and crops back.

Registered as ``"LGMSNet3D"`` in ``VOLUME_NETWORK_REGISTRY``; trained and evaluated by the shared
``VolumetricSegmentor`` (loss, sliding window, evaluator), configured like the authors' MONAI
pipeline where it matters (AdamW 1e-3, DiceCE with squared predictions, overlap 0.5).
"""
from __future__ import annotations

from typing import Dict

import torch

from medseg_core import compat  # noqa: F401

from detectron2.config import configurable

from medseg_core.modeling.volumetric import VOLUME_NETWORK_REGISTRY

from .gms import explicit_attention
from .lgmsnet import GMSOptions, LGMSNet
from .lgmsnet_d2 import lgms_kwargs

__all__ = ["LGMSNet3D"]


@VOLUME_NETWORK_REGISTRY.register()
class LGMSNet3D(LGMSNet):
    """LGMSNet with ``nd=3``: (B, C_in, D, H, W) -> (B, K, D, H, W) logits.

    Built from a config (``LGMSNet3D(cfg)``: ``MODEL.VOLUMETRIC`` channels/classes and the
    ``MODEL.LGMS`` block options) as the registry calls it, or from keyword arguments.
    """

    @configurable
    def __init__(self, in_channels: int = 1, num_classes: int = 3, norm: str = "IN", **kwargs):
        """``kwargs``: the block options of :class:`~lgms.lgmsnet.LGMSNetEncoder` (``dims``,
        ``splits``, ``depths``, ``lms_kernels``, ``lms_variant``, ``gms``: :class:`GMSOptions`)."""
        super().__init__(in_channels, num_classes, nd=3, norm=norm, **kwargs)
        # four 2x poolings, then a patch x patch x patch unfold
        self.size_divisibility = 16 * int(kwargs.get("gms", GMSOptions()).patch)

    @staticmethod
    def size_divisibility_from_config(cfg) -> int:
        """The stride before building (for the shared volume plan): 16 x the GMS patch."""
        return 16 * int(cfg.MODEL.LGMS.GMS_PATCH)

    @classmethod
    def from_config(cls, cfg) -> Dict:
        return dict(
            lgms_kwargs(cfg, encoder=True), norm=cfg.MODEL.LGMS.NORM_3D,
            in_channels=cfg.MODEL.VOLUMETRIC.IN_CHANNELS, num_classes=cfg.MODEL.VOLUMETRIC.NUM_CLASSES,
        )

    def complexity_forward(self, x: torch.Tensor) -> torch.Tensor:
        """Forward with the explicit attention path (matmul, ``nn.Softmax``, matmul; the same
        function), which FLOP counters can see."""
        with explicit_attention(self):
            return self(x)

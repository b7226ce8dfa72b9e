"""LightMedSeg network (Tyagi, Rathi, Goyal, arXiv 2603.07228), registered as "LightMedSeg" in
``medseg_core.modeling.volumetric.VOLUME_NETWORK_REGISTRY``.

Only the abstract and the Fig. 1 caption are public (no code); the pipeline follows the caption
word for word and each component's concrete form is the calibrated design of
docs/lightmedseg.md (deviations are stated in the module files):

    "The input volume is first embedded by a stride-2 GhostConv3D stem."       -> stem (D/2)
    "The Global Anchor Detector and the Local Structural Prior Module (LSPM)
     extract spatial anchors S and a texture routing map T from the stem
     features."                                                                 -> anchors.py, lspm.py
    "(i) adaptive feature mixing before the encoder"                           -> mixing.py
    "(ii) anchor-conditioned, texture-routed processing at every encoder stage" -> encoder.py
    "(iii) multi-scale learned skip fusion"                                     -> skip_router.py
    "(iv) an adaptive decoder with content-tied spatial position bias"         -> decoder.py
    "A final ConvTranspose3D restores voxel-wise class logits at the original
     resolution."                                                               -> ConvTranspose3d(k=2, s=2)

Shapes: input (B, C_in, D, H, W) with D, H, W multiples of 16 (``size_divisibility``; the
meta-architecture pads other sizes) -> logits (B, K, D, H, W). Encoder stages at D/2, D/4, D/8,
D/16; three decoder levels at D/8, D/4, D/2.

The paper's budget is 0.48 M parameters and 14.64 GFLOPs; with 4 input channels, 3 classes and
a 128^3 input this implementation has 0.49 M parameters and about 14 G fvcore MACs (see
tests/test_lightmedseg.py for the exact counts).
"""
from __future__ import annotations

from typing import Dict, List, Sequence

import torch
from torch import nn

from medseg_core import compat  # noqa: F401

from detectron2.config import configurable
from medseg_core.modeling.volumetric import VOLUME_NETWORK_REGISTRY, deep_supervision_outputs

from .anchors import GlobalAnchorDetector
from .decoder import AdaptiveDecoderStage
from .encoder import EncoderStage
from .ghost import GhostConv3D
from .lspm import LocalStructuralPriorModule
from .mixing import AdaptiveFeatureMixing
from .skip_router import MultiScaleSkipRouter

__all__ = ["LightMedSeg"]


@VOLUME_NETWORK_REGISTRY.register()
class LightMedSeg(nn.Module):
    """The full network (module docstring); ``forward(x)`` returns class logits.

    Built either from a config (``LightMedSeg(cfg)``: ``MODEL.VOLUMETRIC`` channels/classes and
    ``MODEL.LIGHTMEDSEG``), which is how the registry calls it, or from keyword arguments.
    """

    size_divisibility = 16

    @configurable
    def __init__(
        self,
        in_channels: int = 4,
        num_classes: int = 3,
        stem_channels: int = 32,
        encoder_channels: Sequence[int] = (24, 48, 72, 112),
        num_anchors: int = 8,
        anchor_temperature: float = 1.0,
        lspm_kernel: int = 5,
        router_channels: int = 32,
        mlp_ratio: float = 2.0,
        se_reduction: int = 4,
        context_dilation: int = 2,
        position_distance: bool = True,
        norm: str = "GN",
        norm_groups: int = 4,
        deep_supervision: int = 1,
    ):
        super().__init__()
        enc = [int(c) for c in encoder_channels]
        if len(enc) != 4:
            raise ValueError(f"MODEL.LIGHTMEDSEG.ENCODER_CHANNELS needs 4 widths (D/2..D/16), got {encoder_channels}")
        kw = dict(norm=norm, norm_groups=norm_groups)
        self.stem = GhostConv3D(in_channels, stem_channels, 3, stride=2, **kw)
        self.anchor_detector = GlobalAnchorDetector(stem_channels, num_anchors, anchor_temperature, **kw)
        self.lspm = LocalStructuralPriorModule(stem_channels, lspm_kernel)
        self.mixing = AdaptiveFeatureMixing(stem_channels, **kw)
        cins = [stem_channels] + enc[:-1]
        strides = [1, 2, 2, 2]
        self.encoder = nn.ModuleList(
            [EncoderStage(ci, co, s, num_anchors, mlp_ratio, se_reduction, context_dilation, **kw)
             for ci, co, s in zip(cins, enc, strides)]
        )
        levels = enc[-2::-1]  # decoder widths at D/8, D/4, D/2
        self.skip_router = MultiScaleSkipRouter(enc, levels, router_channels, **kw)
        dec_in = [enc[-1]] + levels[:-1]
        self.decoder = nn.ModuleList(
            [AdaptiveDecoderStage(ci, co, num_anchors, se_reduction, position_distance, **kw)
             for ci, co in zip(dec_in, levels)]
        )
        self.head = nn.ConvTranspose3d(levels[-1], num_classes, kernel_size=2, stride=2)
        # training-only deep-supervision heads (not in the paper): a 1x1 conv on the decoder
        # output at D/2, D/4, D/8 for outputs 2, 3, 4 (MODEL.VOLUMETRIC.DEEP_SUPERVISION)
        n_aux = min(max(int(deep_supervision), 1), len(levels) + 1) - 1
        self.ds_heads = nn.ModuleList(nn.Conv3d(c, num_classes, 1) for c in levels[::-1][:n_aux])

    @classmethod
    def from_config(cls, cfg) -> Dict:
        c = cfg.MODEL.LIGHTMEDSEG
        return dict(
            in_channels=cfg.MODEL.VOLUMETRIC.IN_CHANNELS,
            num_classes=cfg.MODEL.VOLUMETRIC.NUM_CLASSES,
            stem_channels=c.STEM_CHANNELS,
            encoder_channels=c.ENCODER_CHANNELS,
            num_anchors=c.NUM_ANCHORS,
            anchor_temperature=c.ANCHOR_TEMPERATURE,
            lspm_kernel=c.LSPM_KERNEL,
            router_channels=c.ROUTER_CHANNELS,
            mlp_ratio=c.MLP_RATIO,
            se_reduction=c.SE_REDUCTION,
            context_dilation=c.CONTEXT_DILATION,
            position_distance=c.POSITION_BIAS_DISTANCE,
            norm=c.NORM,
            norm_groups=c.NORM_GROUPS,
            deep_supervision=deep_supervision_outputs(cfg),
        )

    def forward_features(self, x: torch.Tensor, deep_supervision: bool = False) -> Dict[str, torch.Tensor]:
        """Everything the network computes: logits plus the priors (anchors, heatmaps, texture);
        with ``deep_supervision`` also the lower-resolution logits of the training-only heads."""
        f = self.stem(x)
        anchors, heatmaps = self.anchor_detector(f)
        texture = self.lspm(f)
        h = self.mixing(f, texture)
        feats = []
        for stage in self.encoder:
            h = stage(h, anchors, texture)
            feats.append(h)
        sizes = [tuple(t.shape[2:]) for t in feats[-2::-1]]
        skips = self.skip_router(feats, sizes)
        y = feats[-1]
        decoded = []
        for stage, skip in zip(self.decoder, skips):
            y = stage(y, skip, anchors)
            decoded.append(y)
        out = {"logits": self.head(y), "anchors": anchors, "heatmaps": heatmaps, "texture": texture}
        if deep_supervision and self.ds_heads:
            # decoder outputs at D/2, D/4, ... -> logits at 1/2, 1/4, ... resolution
            out["deep_supervision"] = [h(f) for h, f in zip(self.ds_heads, decoded[::-1])]
        return out

    def forward_deep_supervision(self, x: torch.Tensor) -> List[torch.Tensor]:
        """``[full-resolution logits, 1/2, 1/4, ...]`` (as many as ``deep_supervision``)."""
        self._check(x)
        out = self.forward_features(x, deep_supervision=True)
        return [out["logits"]] + out.get("deep_supervision", [])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        return self.forward_features(x)["logits"]

    def _check(self, x: torch.Tensor) -> None:
        if x.ndim != 5:
            raise ValueError(f"LightMedSeg expects (B, C, D, H, W), got shape {tuple(x.shape)}")
        bad = [s for s in x.shape[2:] if s % self.size_divisibility]
        if bad:
            raise ValueError(
                f"LightMedSeg input sizes {tuple(x.shape[2:])} must be multiples of {self.size_divisibility} "
                "(VolumetricSegmentor pads them)"
            )

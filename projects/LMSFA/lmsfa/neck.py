"""Necks of LMSF-A and the registered Detectron2 backbone ``build_lmsfa_backbone``.

* :class:`ASFNeck` — LMSF-A's neck (paper §III-C, Fig. 1; layers 10-25 of the released
  YAML): ASF-YOLO's head transplanted onto YOLOv8n-seg, i.e. two TFE (Zoom_cat) top-down
  fusions, the PAN bottom-up path, and SSFF (ScalSeq) on the backbone's stride-8/16/32-pre-SPPF
  maps added to the P3 output. The paper's prose (eq. 10-16: token mixer, gating, edge loss) does
  not describe the released model and is not built (docs/lmsfa.md, choice #1).

      l10 = CBS1x1(sppf) ; l11 = CBS1x1(s8)
      l13 = block(TFE[l11, s16, l10])              "neck_p4_td"  (stride 16)
      l14 = CBS1x1(l13)  ; l15 = CBS1x1(s4)
      l17 = block(TFE[l15, s8, l14])               "neck_p3"     (stride 8)
      l20 = block(cat[CBS3x3s2(l17), l14])         "neck_p4" -> P4
      l23 = block(cat[CBS3x3s2(l20), l10])         "neck_p5" -> P5
      P3  = l17 + SSFF[s8, s16, s32]

* :class:`YOLOv8PAN` — the YOLOv8-seg neck (FPN top-down with nearest upsampling and concat,
  then PAN bottom-up), the "Neck" switch of Tables III/V.
* ``MODEL.LMSFA.ARCH: "YOLO11"`` builds the YOLO11 backbone and neck instead
  (:mod:`.backbone_yolo11`, :mod:`.neck_yolo11`).

Both give P3/P4/P5 with widths ch(256)/ch(512)/ch(1024) (64/128/256 at n-scale). Neck blocks are
``block(n = 3 * depth, shortcut = False)``; the attention goes where MODEL.LMSFA.ATTENTION_STAGES
names the node.
"""
from __future__ import annotations

from typing import Dict, Sequence, Tuple

import medseg_core  # noqa: F401  (NumPy-2 / Pillow shim before detectron2)
import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone
from torch import Tensor, nn

from .backbone import CSPDarknet, check_attention_stages, scale_depth, scale_width
from .backbone_yolo11 import YOLO11Darknet
from .fuse import fuse_model
from .modules.conv import ConvBNAct, yolo_bn_defaults
from .modules.factory import build_csp_block
from .modules.ssff import Add, ScaleSequenceFusion
from .modules.tfe import ZoomCat
from medseg_core.errors import ConfigError, here
from .neck_yolo11 import YOLO11PAN
from .pan import PANTopology

__all__ = ["YOLOv8PAN", "ASFNeck", "LMSFABackbone", "build_lmsfa_backbone", "NECK_NAMES", "ARCH_NAMES"]

NECK_NAMES = ("ASF", "PAN")


class _NeckBase(nn.Module):
    def __init__(self, width: float, depth: float, max_channels: int, block: str, attention: str,
                 attention_stages: Sequence[str], ema_factor: int) -> None:
        super().__init__()
        check_attention_stages(attention_stages)
        self._ch = lambda c: scale_width(c, width, max_channels)
        self._n = scale_depth(3, depth)
        self._block_args = (block, attention, tuple(attention_stages), ema_factor)

    def _block(self, name: str, c1: int, c2: int) -> nn.Module:
        block, attention, stages, ema_factor = self._block_args
        att = attention if f"neck_{name}" in stages else "none"
        return build_csp_block(block, c1, c2, self._n, False, att, ema_factor)


class YOLOv8PAN(PANTopology, _NeckBase):
    """YOLOv8 FPN+PAN neck on {s8, s16, sppf} -> (P3, P4, P5)."""

    top_feature = "sppf"

    def __init__(self, in_channels: Dict[str, int], width: float = 0.25, depth: float = 0.33,
                 max_channels: int = 1024, block: str = "C2f", attention: str = "none",
                 attention_stages: Sequence[str] = (), ema_factor: int = 8) -> None:
        super().__init__(width, depth, max_channels, block, attention, attention_stages, ema_factor)
        ch = self._ch
        c8, c16, c32 = in_channels["s8"], in_channels["s16"], in_channels["sppf"]
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.td_p4 = self._block("p4_td", c32 + c16, ch(512))
        self.td_p3 = self._block("p3", ch(512) + c8, ch(256))
        self.down_p3 = ConvBNAct(ch(256), ch(256), 3, 2)
        self.bu_p4 = self._block("p4", ch(256) + ch(512), ch(512))
        self.down_p4 = ConvBNAct(ch(512), ch(512), 3, 2)
        self.bu_p5 = self._block("p5", ch(512) + c32, ch(1024))
        self.out_channels = [ch(256), ch(512), ch(1024)]


class ASFNeck(_NeckBase):
    """LMSF-A neck: TFE (Zoom_cat) top-down, PAN bottom-up, SSFF + Add on P3."""

    def __init__(self, in_channels: Dict[str, int], width: float = 0.25, depth: float = 0.33,
                 max_channels: int = 1024, block: str = "C2f-Pro", attention: str = "EMA",
                 attention_stages: Sequence[str] = ("backbone_s16", "backbone_s32"),
                 ema_factor: int = 8, ssff_channels: int = 256) -> None:
        super().__init__(width, depth, max_channels, block, attention, attention_stages, ema_factor)
        ch = self._ch
        c4, c8, c16 = in_channels["s4"], in_channels["s8"], in_channels["s16"]
        c32, csppf = in_channels["s32"], in_channels["sppf"]
        c_ssff = ch(ssff_channels)
        if c16 != ch(512) or c8 != ch(256) or c_ssff != ch(256):
            raise ConfigError(
                here() + "the TFE/SSFF neck needs s16 = ch(512), s8 = ch(256) and SSFF = ch(256) "
                f"channels to concatenate/add; got s16={c16}, s8={c8}, SSFF={c_ssff} "
                f"(MODEL.LMSFA.SSFF_CHANNELS / backbone widths)"
            )
        self.lat_p5 = ConvBNAct(csppf, ch(512), 1)      # l10
        self.lat_s8 = ConvBNAct(c8, ch(512), 1)         # l11
        self.tfe_p4 = ZoomCat()                         # l12
        self.td_p4 = self._block("p4_td", 3 * ch(512), ch(512))   # l13
        self.lat_p4 = ConvBNAct(ch(512), ch(256), 1)    # l14
        self.lat_s4 = ConvBNAct(c4, ch(256), 1)         # l15
        self.tfe_p3 = ZoomCat()                         # l16
        self.td_p3 = self._block("p3", 3 * ch(256), ch(256))      # l17
        self.down_p3 = ConvBNAct(ch(256), ch(256), 3, 2)          # l18
        self.bu_p4 = self._block("p4", 2 * ch(256), ch(512))      # l20
        self.down_p4 = ConvBNAct(ch(512), ch(512), 3, 2)          # l21
        self.bu_p5 = self._block("p5", 2 * ch(512), ch(1024))     # l23
        self.ssff = ScaleSequenceFusion([c8, c16, c32], c_ssff)   # l24
        self.add = Add()                                          # l25
        self.out_channels = [ch(256), ch(512), ch(1024)]

    def forward(self, f: Dict[str, Tensor]) -> Tuple[Tensor, Tensor, Tensor]:
        l10 = self.lat_p5(f["sppf"])
        l13 = self.td_p4(self.tfe_p4([self.lat_s8(f["s8"]), f["s16"], l10]))
        l14 = self.lat_p4(l13)
        l17 = self.td_p3(self.tfe_p3([self.lat_s4(f["s4"]), f["s8"], l14]))
        p4 = self.bu_p4(torch.cat([self.down_p3(l17), l14], 1))
        p5 = self.bu_p5(torch.cat([self.down_p4(p4), l10], 1))
        p3 = self.add([l17, self.ssff([f["s8"], f["s16"], f["s32"]])])
        return p3, p4, p5


class LMSFABackbone(Backbone):
    """Bottom-up CSP-Darknet (YOLOv8 or YOLO11 layout) + neck, returning {"p3", "p4", "p5"} at strides 8/16/32."""

    def __init__(self, bottom_up: CSPDarknet, neck: nn.Module) -> None:
        super().__init__()
        self.bottom_up = bottom_up
        self.neck = neck
        self._out_features = ["p3", "p4", "p5"]
        self._out_feature_channels = dict(zip(self._out_features, neck.out_channels))
        self._out_feature_strides = {"p3": 8, "p4": 16, "p5": 32}

    @property
    def size_divisibility(self) -> int:
        return 32

    def forward(self, x: Tensor) -> Dict[str, Tensor]:
        if x.dim() != 4 or x.shape[-2] % 32 or x.shape[-1] % 32:
            raise ValueError(
                here() + f"LMSF-A needs a (B, C, H, W) input with H and W divisible by 32, "
                f"got {tuple(x.shape)} (pad with ImageList size_divisibility=32)"
            )
        p3, p4, p5 = self.neck(self.bottom_up(x))
        return {"p3": p3, "p4": p4, "p5": p5}

    def output_shape(self) -> Dict[str, ShapeSpec]:
        return {
            n: ShapeSpec(channels=self._out_feature_channels[n], stride=self._out_feature_strides[n])
            for n in self._out_features
        }

    def fuse(self) -> "LMSFABackbone":
        fuse_model(self)
        return self


ARCH_NAMES = ("YOLOv8", "YOLO11")


@BACKBONE_REGISTRY.register()
def build_lmsfa_backbone(cfg, input_shape: ShapeSpec) -> LMSFABackbone:
    """Bottom-up network + neck from MODEL.LMSFA: ARCH "YOLOv8" = C2f-Pro (or C2f ...)
    CSP-Darknet + ASF or PAN neck; ARCH "YOLO11" = YOLO11 backbone (C3k2, SPPF, C2PSA) + its neck."""
    a = cfg.MODEL.LMSFA
    if a.ARCH == "YOLO11":
        return _build_yolo11(a, input_shape)
    if a.ARCH != "YOLOv8":
        raise ConfigError(here() + f"unknown MODEL.LMSFA.ARCH '{a.ARCH}'; choose one of {list(ARCH_NAMES)}")
    stages = list(a.ATTENTION_STAGES)
    common = dict(width=a.WIDTH_MULTIPLE, depth=a.DEPTH_MULTIPLE, max_channels=a.MAX_CHANNELS,
                  attention=a.ATTENTION, attention_stages=stages, ema_factor=a.EMA_FACTOR)
    bottom_up = CSPDarknet(in_channels=input_shape.channels, block=a.BACKBONE_BLOCK, **common)
    chans = {k: v.channels for k, v in bottom_up.output_shape().items()}
    neck_block = a.NECK_BLOCK or a.BACKBONE_BLOCK
    if a.NECK == "ASF":
        neck = ASFNeck(chans, block=neck_block, ssff_channels=a.SSFF_CHANNELS, **common)
    elif a.NECK == "PAN":
        neck = YOLOv8PAN(chans, block=neck_block, **common)
    else:
        raise ConfigError(here() + f"unknown MODEL.LMSFA.NECK '{a.NECK}'; choose one of {list(NECK_NAMES)}")
    yolo_bn_defaults(neck)
    return LMSFABackbone(bottom_up, neck)


def _build_yolo11(a, input_shape: ShapeSpec) -> LMSFABackbone:
    # the YOLO11 layout fixes its blocks; the LMSF-A switches must say so rather than be ignored
    wrong = [f"{k} = {getattr(a, k)!r} (needs {v!r})" for k, v in
             (("BACKBONE_BLOCK", "C3k2"), ("NECK_BLOCK", ""), ("ATTENTION", "none"), ("NECK", "PAN"))
             if getattr(a, k) != v]
    if wrong:
        raise ConfigError(here() + "MODEL.LMSFA.ARCH 'YOLO11' has its own blocks; set " + ", ".join(wrong))
    bottom_up = YOLO11Darknet(input_shape.channels, a.WIDTH_MULTIPLE, a.DEPTH_MULTIPLE, a.MAX_CHANNELS)
    chans = {k: v.channels for k, v in bottom_up.output_shape().items()}
    neck = yolo_bn_defaults(YOLO11PAN(chans, a.WIDTH_MULTIPLE, a.DEPTH_MULTIPLE, a.MAX_CHANNELS))
    return LMSFABackbone(bottom_up, neck)

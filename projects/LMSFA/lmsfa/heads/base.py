"""Interface shared by every LMSF-A segmentation head, and the project-local head registry.

A head turns the neck features [P3, P4, P5] (strides 8/16/32) into raw, undecoded predictions
(:class:`HeadOutputs`); anchor generation, DFL decoding, assignment, losses, NMS and mask
assembly belong to the meta-architecture. All heads follow YOLOv8-seg's output convention
(paper §III-A eq. 5, §III-D; docs/lmsfa.md): per level 4*reg_max DFL box logits, nc class
logits and nm mask coefficients, plus nm prototypes at stride 4 from a YOLOv8 Proto on P3.

Heads are selected by MODEL.LMSFA.HEAD and built with :func:`build_lmsfa_head`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import medseg_core  # noqa: F401  (NumPy-2 / Pillow shim before detectron2)
import torch
from detectron2.layers import ShapeSpec
from detectron2.utils.registry import Registry
from torch import Tensor, nn

from ..dfl import DFL
from ..modules.conv import ConvBNAct, make_divisible, yolo_bn_defaults
from ..modules.proto import Proto
from medseg_core.errors import ConfigError, here

__all__ = [
    "HeadOutputs", "LMSFA_HEAD_REGISTRY", "build_lmsfa_head", "SegmentHeadBase", "IN_FEATURES",
    "head_args_from_cfg", "cls_bias_prior", "yolov8_branch_widths", "yolov8_branches",
]

LMSFA_HEAD_REGISTRY = Registry("LMSFA_HEAD")
LMSFA_HEAD_REGISTRY.__doc__ = """LMSF-A segmentation heads: ``cls(cfg, input_shape)`` -> nn.Module
whose forward(List[Tensor] p3, p4, p5) returns :class:`HeadOutputs`."""

IN_FEATURES = ("p3", "p4", "p5")


@dataclass
class HeadOutputs:
    """Raw head outputs (no activation, no decoding).

    box:    per level (B, 4*reg_max, H_i, W_i) DFL logits (left, top, right, bottom blocks of reg_max).
    cls:    per level (B, nc, H_i, W_i) class logits (pre-sigmoid).
    coef:   per level (B, nm, H_i, W_i) mask coefficients.
    protos: (B, nm, H/4, W/4) prototypes.
    strides: stride of each level, [8, 16, 32].
    """

    box: List[Tensor]
    cls: List[Tensor]
    coef: List[Tensor]
    protos: Tensor
    strides: List[int]


def cls_bias_prior(nc: int, stride: float, img_size: int = 640) -> float:
    """YOLOv8 class-bias prior log(5 / nc / (img/stride)^2): ~5 objects per 640 image."""
    return math.log(5 / nc / (img_size / stride) ** 2)


def yolov8_branch_widths(ch0: int, num_classes: int, reg_max: int, num_protos: int) -> Tuple[int, int, int]:
    """Hidden widths of YOLOv8-seg's box, class and coefficient branches (ch0 = P3 width):
    c2 = max(16, ch0/4, 4*reg_max), c3 = max(ch0, min(nc, 100)), c4 = max(ch0/4, nm)."""
    return max(16, ch0 // 4, reg_max * 4), max(ch0, min(num_classes, 100)), max(ch0 // 4, num_protos)


def yolov8_branches(in_channels: Sequence[int], hidden: int, out: int) -> nn.ModuleList:
    """YOLOv8-seg's branch for every level i: CBS 3x3 (ch_i -> hidden) -> CBS 3x3 -> Conv 1x1 -> out."""
    return nn.ModuleList(
        nn.Sequential(ConvBNAct(x, hidden, 3), ConvBNAct(hidden, hidden, 3), nn.Conv2d(hidden, out, 1))
        for x in in_channels
    )


def head_args_from_cfg(cfg, input_shape: Dict[str, ShapeSpec]) -> dict:
    """Arguments common to all heads, from MODEL.LMSFA and the backbone's output shapes."""
    a = cfg.MODEL.LMSFA
    missing = [k for k in IN_FEATURES if k not in input_shape]
    if missing:
        raise ConfigError(
            here() + f"the backbone must output {list(IN_FEATURES)}, missing {missing} "
            f"(MODEL.BACKBONE.NAME = {cfg.MODEL.BACKBONE.NAME})"
        )
    width = a.WIDTH_MULTIPLE
    return dict(
        in_channels=[input_shape[k].channels for k in IN_FEATURES],
        strides=[int(input_shape[k].stride) for k in IN_FEATURES],
        num_classes=a.NUM_CLASSES,
        reg_max=a.REG_MAX,
        num_protos=a.NUM_PROTOS,
        proto_channels=make_divisible(min(a.PROTO_CHANNELS, a.MAX_CHANNELS) * width, 8),
    )


class SegmentHeadBase(nn.Module):
    """Common parts: YOLOv8 Proto on P3, HeadOutputs assembly, bias init, fuse.

    Subclasses build ``self.cv4`` (per-level coefficient branches) and implement
    ``box_cls(i, x) -> (box_logits, cls_logits)`` for level ``i``.
    """

    def __init__(self, in_channels: Sequence[int], strides: Sequence[int], num_classes: int,
                 reg_max: int, num_protos: int, proto_channels: int) -> None:
        super().__init__()
        if len(in_channels) != 3 or len(strides) != 3:
            raise ValueError(here() + f"heads take 3 levels, got channels {list(in_channels)}")
        if num_classes < 1:
            raise ConfigError(here() + f"MODEL.LMSFA.NUM_CLASSES must be >= 1, got {num_classes}")
        self.nc = num_classes
        self.nl = len(in_channels)
        self.reg_max = reg_max
        self.nm = num_protos
        self.npr = proto_channels
        self.in_channels = list(in_channels)
        self.strides = [int(s) for s in strides]
        self.proto = Proto(in_channels[0], proto_channels, num_protos)
        # YOLOv8's fixed DFL integral conv (not trained): kept for parameter parity with the
        # reference counts (16 params); the meta-architecture may decode with it or dfl_decode.
        self.dfl = DFL(reg_max) if reg_max > 1 else nn.Identity()

    @classmethod
    def from_config_and_shape(cls, cfg, input_shape: Dict[str, ShapeSpec]) -> "SegmentHeadBase":
        return cls(**head_args_from_cfg(cfg, input_shape), **cls.extra_args(cfg))

    @classmethod
    def extra_args(cls, cfg) -> dict:
        """Head-specific constructor arguments from the config (none by default)."""
        return {}

    def box_cls(self, i: int, x: Tensor):  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, features: Sequence[Tensor]) -> HeadOutputs:
        if len(features) != self.nl:
            raise ValueError(f"lmsfa/heads: expected {self.nl} feature maps (p3, p4, p5), got {len(features)}")
        protos = self.proto(features[0])
        coef = [self.cv4[i](features[i]) for i in range(self.nl)]
        box, cls = [], []
        for i in range(self.nl):
            b, c = self.box_cls(i, features[i])
            box.append(b)
            cls.append(c)
        return HeadOutputs(box=box, cls=cls, coef=coef, protos=protos, strides=list(self.strides))

    def finish_init(self) -> None:
        """YOLOv8 BatchNorm defaults and bias priors (call at the end of a subclass __init__)."""
        yolo_bn_defaults(self)
        self.bias_init()

    def bias_init(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def fuse(self) -> "SegmentHeadBase":
        from ..fuse import fuse_model

        fuse_model(self)
        return self


def build_lmsfa_head(cfg, input_shape: Dict[str, ShapeSpec]) -> nn.Module:
    """Build the head named by MODEL.LMSFA.HEAD from the registry."""
    name = cfg.MODEL.LMSFA.HEAD
    try:
        cls = LMSFA_HEAD_REGISTRY.get(name)
    except KeyError:
        raise ConfigError(
            here() + f"unknown head '{name}' (MODEL.LMSFA.HEAD); registered: "
            f"{sorted(k for k, _ in LMSFA_HEAD_REGISTRY)}"
        ) from None
    return cls.from_config_and_shape(cfg, input_shape)


class UnsharedBoxClsHead(SegmentHeadBase):
    """A head with per-level box / class branches ``cv2[i]`` / ``cv3[i]`` (YOLOv8 and YOLO11 Segment, LADH):
    their shared forward and YOLOv8 bias initialisation (box 1.0, class prior per stride)."""

    def box_cls(self, i: int, x: Tensor) -> Tuple[Tensor, Tensor]:
        return self.cv2[i](x), self.cv3[i](x)

    @torch.no_grad()
    def bias_init(self) -> None:
        for a, b, s in zip(self.cv2, self.cv3, self.strides):
            a[-1].bias.fill_(1.0)
            b[-1].bias.fill_(cls_bias_prior(self.nc, s))

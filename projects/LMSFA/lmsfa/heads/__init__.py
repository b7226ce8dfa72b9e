"""LMSF-A segmentation heads (registered in LMSFA_HEAD_REGISTRY, chosen by MODEL.LMSFA.HEAD)."""
from .base import IN_FEATURES, LMSFA_HEAD_REGISTRY, HeadOutputs, SegmentHeadBase, build_lmsfa_head
from .efficient import EfficientHead
from .ladh import LADH
from .lmsh import LMSH, LMSH_BNCoef, LMSH_BNCoefSameShape
from .lqe import LMSH_LQE, LQE, LocationQualityEstimator
from .segment import Segment
from .segment11 import YOLO11Segment

__all__ = [
    "HeadOutputs", "LMSFA_HEAD_REGISTRY", "build_lmsfa_head", "SegmentHeadBase", "IN_FEATURES",
    "Segment", "YOLO11Segment", "LMSH", "LMSH_BNCoef", "LMSH_BNCoefSameShape", "LADH", "LQE", "LMSH_LQE",
    "EfficientHead", "LocationQualityEstimator",
]

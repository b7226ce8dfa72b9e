"""Evaluators by name (``EVALUATOR_REGISTRY``) and the default choice per data set type."""
from .. import compat  # noqa: F401

from .registry import EVALUATOR_REGISTRY, build_evaluators, DEFAULT_EVALUATORS_BY_TYPE
from . import coco, semantic  # noqa: F401  (register "coco", "sem_seg")
from . import volumetric  # noqa: F401  (registers "volume")
from . import ultralytics  # noqa: F401  (registers "ultralytics_segm")

__all__ = [
    "EVALUATOR_REGISTRY", "build_evaluators", "DEFAULT_EVALUATORS_BY_TYPE",
]

"""Detectron2's COCOEvaluator, configured for this project (bbox + segm, pure-Python COCOeval)."""
from __future__ import annotations

from .. import compat  # noqa: F401

from detectron2.evaluation import COCOEvaluator

from .registry import EVALUATOR_REGISTRY


def has_compiled_cocoeval() -> bool:
    """Whether detectron2's C++ COCOeval (``_C.InstanceAnnotation``) exists; the stand-in has none."""
    try:
        from detectron2 import _C

        return hasattr(_C, "InstanceAnnotation")
    except (ImportError, AttributeError):
        return False


@EVALUATOR_REGISTRY.register()
def coco(cfg, dataset_name: str, output_dir=None):
    """COCO bbox + segm AP (pycocotools). All our instance models predict masks, so both tasks
    are always evaluated (Detectron2 infers "bbox only" for any model without MODEL.MASK_ON)."""
    return COCOEvaluator(
        dataset_name,
        tasks=("bbox", "segm"),
        distributed=True,
        output_dir=output_dir,
        max_dets_per_image=cfg.TEST.DETECTIONS_PER_IMAGE_EVAL,
        use_fast_impl=has_compiled_cocoeval(),
    )

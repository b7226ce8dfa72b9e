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


class COCOEvaluatorWithAR(COCOEvaluator):
    """Detectron2's COCOEvaluator plus average recall: ``AR@<d>`` for each of COCOeval's three
    maxDets (1, 10, 100 by default; all areas), which Detectron2 v0.6 computes but drops. The
    LMSF-A paper's Table II reports A.R. next to AP."""

    def _derive_coco_results(self, coco_eval, iou_type, class_names=None):
        results = super()._derive_coco_results(coco_eval, iou_type, class_names)
        if iou_type not in ("bbox", "segm"):
            return results
        max_dets = list(coco_eval.params.maxDets) if coco_eval is not None else list(self._max_dets_per_image)
        for i, d in enumerate(max_dets[:3]):
            value = float(coco_eval.stats[6 + i]) if coco_eval is not None else float("nan")
            results[f"AR@{d}"] = 100 * value if value >= 0 else float("nan")
        return results


@EVALUATOR_REGISTRY.register()
def coco(cfg, dataset_name: str, output_dir=None):
    """COCO bbox + segm AP and AR (pycocotools). All our instance models predict masks, so both
    tasks are always evaluated (Detectron2 infers "bbox only" for any model without MODEL.MASK_ON)."""
    return COCOEvaluatorWithAR(
        dataset_name,
        tasks=("bbox", "segm"),
        distributed=True,
        output_dir=output_dir,
        max_dets_per_image=cfg.TEST.DETECTIONS_PER_IMAGE_EVAL,
        use_fast_impl=has_compiled_cocoeval(),
    )

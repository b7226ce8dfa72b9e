"""Accuracy of a deployed model: a :class:`~medseg_core.deploy.predictor.Predictor` (any runtime)
over a registered data set, scored by the config's own evaluators (``TEST.EVALUATORS``; COCO AP
for instances, IoU / Dice for semantic maps) -- the same numbers ``tools/train_net.py --eval-only``
reports for the PyTorch model, here for ONNX Runtime, OpenVINO FP32 or INT8."""
from __future__ import annotations

import logging
import time
from typing import Dict, Optional

logger = logging.getLogger(__name__)

__all__ = ["evaluate_predictor"]


def evaluate_predictor(predictor, cfg, dataset_name: str, max_images: int = 0,
                       output_dir: Optional[str] = None) -> Dict:
    """Evaluator results of ``predictor`` on ``dataset_name`` (its first ``max_images`` when > 0)."""
    from detectron2.data import DatasetCatalog

    from ..data.mappers import read_image_checked
    from ..evaluation import build_evaluators

    if dataset_name not in DatasetCatalog.list():
        raise ValueError(f"--evaluate {dataset_name!r}: not a registered data set")
    records = DatasetCatalog.get(dataset_name)
    if max_images > 0:
        records = records[:max_images]
    evaluator = build_evaluators(cfg, dataset_name, output_dir)
    evaluator.reset()
    fmt = predictor.contract.input_format
    start = time.perf_counter()
    for i, rec in enumerate(records):
        image = read_image_checked(rec["file_name"], fmt)
        evaluator.process([rec], [predictor(image, fmt)])
        if (i + 1) % 100 == 0:
            logger.info("%s: %d / %d images (%.1f s)", predictor.runtime.name, i + 1, len(records),
                        time.perf_counter() - start)
    return evaluator.evaluate() or {}

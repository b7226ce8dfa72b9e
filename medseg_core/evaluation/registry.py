"""Evaluator registry: ``TEST.EVALUATORS`` names them; empty picks the data set type's default."""
from __future__ import annotations

from typing import List, Optional

from .. import compat  # noqa: F401

from detectron2.data import MetadataCatalog
from detectron2.evaluation import DatasetEvaluator, DatasetEvaluators
from detectron2.utils.registry import Registry

EVALUATOR_REGISTRY = Registry("MEDSEG_EVALUATOR")
EVALUATOR_REGISTRY.__doc__ = """
Evaluators by name. A registered object is called as ``obj(cfg, dataset_name, output_dir)`` and
returns a Detectron2 ``DatasetEvaluator``.
"""

# Per evaluator_type of a registered data set. Projects may register more names (e.g. the
# Ultralytics-protocol evaluator) and select them with TEST.EVALUATORS.
DEFAULT_EVALUATORS_BY_TYPE = {"coco": ["coco"], "sem_seg": ["sem_seg"], "volume": ["volume"]}


def build_evaluators(cfg, dataset_name: str, output_dir: Optional[str] = None) -> DatasetEvaluator:
    names: List[str] = list(cfg.TEST.EVALUATORS)
    if not names:
        etype = MetadataCatalog.get(dataset_name).get("evaluator_type")
        if etype not in DEFAULT_EVALUATORS_BY_TYPE:
            raise ValueError(
                f"data set '{dataset_name}' has evaluator_type {etype!r}; set TEST.EVALUATORS to one of "
                f"{sorted(name for name, _ in EVALUATOR_REGISTRY)}"
            )
        names = DEFAULT_EVALUATORS_BY_TYPE[etype]
    evaluators = [EVALUATOR_REGISTRY.get(n)(cfg, dataset_name, output_dir) for n in names]
    return evaluators[0] if len(evaluators) == 1 else DatasetEvaluators(evaluators)

"""A check that a (distributed) evaluation saw every test image exactly once.

Detectron2's ``InferenceSampler`` gives each rank a contiguous shard of the test set without
padding (shards differ by at most one image), and every evaluator of this toolkit gathers its
per-image records on rank 0 before computing metrics. This evaluator runs beside them: it
gathers the ids of the images each rank processed and, on rank 0, raises when an image was
evaluated twice or not at all, which would silently bias every metric.
"""
from __future__ import annotations

import collections
import logging
from typing import Dict, List, Optional

from .. import compat  # noqa: F401

from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm

logger = logging.getLogger(__name__)

__all__ = ["ImageCountEvaluator"]


def _image_key(inp: Dict) -> str:
    return str(inp.get("image_id", inp.get("file_name")))


class ImageCountEvaluator(DatasetEvaluator):
    """Counts the evaluated images over all ranks; ``num_images`` is set on rank 0."""

    def __init__(self, dataset_name: str, expected: int):
        self.dataset_name, self.expected = dataset_name, int(expected)
        self.num_images: Optional[int] = None
        self.reset()

    def reset(self) -> None:
        self._keys: List[str] = []

    def process(self, inputs, outputs) -> None:
        self._keys.extend(_image_key(inp) for inp in inputs)

    def evaluate(self):
        parts = comm.gather(self._keys, dst=0)
        if not comm.is_main_process():
            return {}
        keys = [k for part in parts for k in part]
        twice = sorted(k for k, n in collections.Counter(keys).items() if n > 1)
        if twice or len(keys) != self.expected:
            raise RuntimeError(
                f"evaluation of {self.dataset_name}: {len(keys)} predictions from {len(parts)} ranks for "
                f"{self.expected} images" + (f"; evaluated more than once: {twice[:5]}" if twice else "")
            )
        self.num_images = len(keys)
        logger.info("Evaluated %d images of %s on %d ranks, each once", len(keys), self.dataset_name, len(parts))
        return {}

"""Dataset-level semantic segmentation evaluator (confusion matrix at original resolution).

Unlike Detectron2's ``SemSegEvaluator`` it reads ground truth through the same decoding as the
training mapper (value maps, thresholds for JPEG masks, invalid values -> ignore), so binary
0/255 masks are scored as foreground/background rather than as 256 classes.
"""
from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Dict, List

import numpy as np

from .. import compat  # noqa: F401

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm

from ..data.mappers import read_label_mask
from .registry import EVALUATOR_REGISTRY

logger = logging.getLogger(__name__)


def confusion_to_metrics(conf: np.ndarray, class_names: List[str]) -> Dict[str, float]:
    """mIoU / mDice / pixel accuracy and per-class IoU, Dice from a KxK confusion matrix
    (rows = ground truth, columns = prediction). Classes absent from both GT and prediction
    are left out of the means."""
    tp = np.diag(conf).astype(np.float64)
    gt = conf.sum(1).astype(np.float64)
    pred = conf.sum(0).astype(np.float64)
    union = gt + pred - tp
    valid = union > 0
    iou = np.where(valid, tp / np.maximum(union, 1), np.nan)
    dice = np.where(valid, 2 * tp / np.maximum(gt + pred, 1), np.nan)
    res: Dict[str, float] = OrderedDict()
    res["mIoU"] = 100 * float(np.nanmean(iou)) if valid.any() else float("nan")
    res["mDice"] = 100 * float(np.nanmean(dice)) if valid.any() else float("nan")
    res["pACC"] = 100 * float(tp.sum() / max(conf.sum(), 1))
    for k, name in enumerate(class_names):
        res[f"IoU-{name}"] = 100 * float(iou[k])
        res[f"Dice-{name}"] = 100 * float(dice[k])
    return res


class DatasetLevelSemSegEvaluator(DatasetEvaluator):
    """Accumulates one confusion matrix over the data set at each image's original size."""

    def __init__(self, dataset_name: str, distributed: bool = True):
        meta = MetadataCatalog.get(dataset_name)
        self.class_names = list(meta.stuff_classes)
        self.ignore_label = meta.get("ignore_label", 255)
        self.dataset_name = dataset_name
        self._distributed = distributed
        self._gt_info = {d["file_name"]: d for d in DatasetCatalog.get(dataset_name)}
        self.reset()

    def reset(self):
        k = len(self.class_names)
        self._conf = np.zeros((k, k), dtype=np.int64)

    def _gt(self, file_name: str) -> np.ndarray:
        d = self._gt_info[file_name]
        return read_label_mask(
            d["sem_seg_file_name"], len(self.class_names), self.ignore_label,
            d.get("mask_value_map"), d.get("mask_threshold"),
        )

    def process(self, inputs, outputs):
        k = len(self.class_names)
        for inp, out in zip(inputs, outputs):
            pred = out["sem_seg"].argmax(dim=0).to("cpu").numpy().astype(np.int64)
            gt = self._gt(inp["file_name"])
            valid = gt != self.ignore_label
            self._conf += np.bincount(k * gt[valid] + pred[valid], minlength=k * k).reshape(k, k)

    def evaluate(self):
        conf = self._conf
        if self._distributed:
            comm.synchronize()
            confs = comm.gather(conf)
            if not comm.is_main_process():
                return {}
            conf = np.sum(confs, axis=0)
        return {"sem_seg": confusion_to_metrics(conf, self.class_names)}


@EVALUATOR_REGISTRY.register()
def sem_seg(cfg, dataset_name: str, output_dir=None):
    return DatasetLevelSemSegEvaluator(dataset_name)

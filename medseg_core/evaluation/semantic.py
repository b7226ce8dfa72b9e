"""Semantic segmentation evaluator ("sem_seg"): dataset-level and per-image metrics, labelled.

Every number says how it was computed, because the two conventions in use differ a lot on
medical data (small lesions, empty images):

* ``dataset_*@orig_res``: one confusion matrix accumulated over all images at each image's
  **original** resolution (Detectron2's ``SemSegEvaluator`` convention): per-class IoU / Dice
  (``dataset_IoU@orig_res-<class>``), their means over classes incl. background
  (``dataset_mIoU@orig_res``, ``dataset_mDice@orig_res``) and pixel accuracy. For a binary data
  set (2 classes) ``dataset_IoU@orig_res`` / ``dataset_Dice@orig_res`` are the foreground's.
  ``mIoU`` repeats ``dataset_mIoU@orig_res`` under Detectron2's usual key.
* ``per_image_*@model_res``: metrics per image, **averaged over images**, on the grid the model
  saw (the mapper's resized input, e.g. 256x256), with the ground truth resized there by nearest
  neighbour: what LGMSNet, CMUNeXt and UNeXt report (see :mod:`.semantic_paper`). Binary:
  ``per_image_IoU@model_res`` / ``per_image_F1@model_res`` with the authors' epsilons and
  empty-image behaviour. Multi-class: ``per_image_IoU@model_res-<class>`` etc. and their means.
  The model-resolution prediction is the model's ``"sem_seg_model_res"`` output when it gives
  one, else its ``"sem_seg"`` resized to the input grid by nearest neighbour.

Ground truth is read through the training mapper's decoding (value maps, thresholds for JPEG
masks, invalid values -> ignore), so binary 0/255 masks are foreground/background rather than
256 classes. A model whose number of classes differs from the data set's (zero-shot evaluation
on an incompatible label set) stops with an error naming both. Per-image figures are also
written to ``<output_dir>/per_image_metrics.json``.
"""
from __future__ import annotations

import logging
import os
from collections import OrderedDict
from typing import Dict, List, Optional

import numpy as np

from .. import compat  # noqa: F401

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm

from ..atomic import atomic_write_json
from ..data.mappers import read_label_mask
from .registry import EVALUATOR_REGISTRY
from .semantic_paper import paper_binary_scores, per_image_class_scores, resize_nearest

logger = logging.getLogger(__name__)

__all__ = ["confusion_to_metrics", "SemSegEvaluator", "DatasetLevelSemSegEvaluator"]


def confusion_to_metrics(conf: np.ndarray, class_names: List[str], suffix: str = "") -> Dict[str, float]:
    """Mean IoU / Dice, pixel accuracy and per-class IoU, Dice (in %) from a KxK confusion
    matrix (rows = ground truth, columns = prediction). Classes absent from both GT and
    prediction are NaN and left out of the means. Keys: ``mIoU<suffix>``, ``IoU<suffix>-<c>``..."""
    tp = np.diag(conf).astype(np.float64)
    gt = conf.sum(1).astype(np.float64)
    pred = conf.sum(0).astype(np.float64)
    union = gt + pred - tp
    valid = union > 0
    iou = np.where(valid, tp / np.maximum(union, 1), np.nan)
    dice = np.where(valid, 2 * tp / np.maximum(gt + pred, 1), np.nan)
    res: Dict[str, float] = OrderedDict()
    res[f"mIoU{suffix}"] = 100 * float(np.nanmean(iou)) if valid.any() else float("nan")
    res[f"mDice{suffix}"] = 100 * float(np.nanmean(dice)) if valid.any() else float("nan")
    res[f"pACC{suffix}"] = 100 * float(tp.sum() / max(conf.sum(), 1))
    for k, name in enumerate(class_names):
        res[f"IoU{suffix}-{name}"] = 100 * float(iou[k])
        res[f"Dice{suffix}-{name}"] = 100 * float(dice[k])
    return res


def _nanmean(a) -> float:
    a = np.asarray(a, dtype=np.float64)
    return float(np.nanmean(a)) if np.isfinite(a).any() else float("nan")


class SemSegEvaluator(DatasetEvaluator):
    """Dataset-level (original resolution) and per-image (model resolution) metrics."""

    def __init__(self, dataset_name: str, distributed: bool = True, output_dir: Optional[str] = None):
        meta = MetadataCatalog.get(dataset_name)
        self.class_names = list(meta.stuff_classes)
        self.ignore_label = meta.get("ignore_label", 255)
        self.dataset_name = dataset_name
        self.binary = len(self.class_names) == 2
        self._distributed = distributed
        self._output_dir = output_dir
        self._gt_info = {d["file_name"]: d for d in DatasetCatalog.get(dataset_name)}
        self.reset()

    def reset(self):
        k = len(self.class_names)
        self._conf = np.zeros((k, k), dtype=np.int64)
        self._per_image: List[Dict] = []

    def _gt(self, file_name: str) -> np.ndarray:
        d = self._gt_info[file_name]
        return read_label_mask(
            d["sem_seg_file_name"], len(self.class_names), self.ignore_label,
            d.get("mask_value_map"), d.get("mask_threshold"),
        )

    def _check_classes(self, n: int) -> None:
        k = len(self.class_names)
        if n != k:
            raise ValueError(
                f"sem_seg evaluator on '{self.dataset_name}': the model predicts {n} classes but the data "
                f"set has {k} ({', '.join(self.class_names)}). Evaluating on another data set without "
                "fine-tuning needs the same label set (a binary model on a binary data set); check "
                "DATASETS.TEST against MODEL.SEM_SEG_HEAD.NUM_CLASSES."
            )

    def process(self, inputs, outputs):
        k = len(self.class_names)
        for inp, out in zip(inputs, outputs):
            scores = out["sem_seg"]
            self._check_classes(int(scores.shape[0]))
            pred = scores.argmax(dim=0).to("cpu").numpy().astype(np.int64)
            gt = self._gt(inp["file_name"])
            if gt.shape != pred.shape:
                raise ValueError(
                    f"{self._gt_info[inp['file_name']]['sem_seg_file_name']}: mask is {gt.shape} but the "
                    f"prediction for {inp['file_name']} is {pred.shape} (height/width of the input dict)"
                )
            valid = gt != self.ignore_label
            self._conf += np.bincount(k * gt[valid] + pred[valid], minlength=k * k).reshape(k, k)

            # the model's grid: the mapper's resized image (before any stride padding)
            h, w = (int(s) for s in inp["image"].shape[-2:]) if "image" in inp else pred.shape
            if "sem_seg_model_res" in out:
                pm = out["sem_seg_model_res"].argmax(dim=0).to("cpu").numpy().astype(np.int64)
            else:
                pm = resize_nearest(pred, h, w)
            gm = resize_nearest(gt, *pm.shape)
            vm = gm != self.ignore_label
            rec = {"file_name": inp["file_name"]}
            if self.binary:
                rec["IoU"], rec["F1"] = paper_binary_scores(pm == 1, gm == 1, vm)
            else:
                iou, dice = per_image_class_scores(pm, gm, k, self.ignore_label)
                rec["IoU"], rec["Dice"] = iou.tolist(), dice.tolist()
            self._per_image.append(rec)

    def evaluate(self):
        conf, per_image = self._conf, self._per_image
        if self._distributed:
            comm.synchronize()
            confs = comm.gather(conf)
            lists = comm.gather(per_image)
            if not comm.is_main_process():
                return {}
            conf = np.sum(confs, axis=0)
            per_image = [r for lst in lists for r in lst]
        res: Dict[str, float] = OrderedDict()
        n = len(per_image)
        if self.binary:
            res["per_image_IoU@model_res"] = 100 * _nanmean([r["IoU"] for r in per_image])
            res["per_image_F1@model_res"] = 100 * _nanmean([r["F1"] for r in per_image])
        else:
            iou = np.array([r["IoU"] for r in per_image], dtype=np.float64).reshape(n, -1)
            dice = np.array([r["Dice"] for r in per_image], dtype=np.float64).reshape(n, -1)
            per_iou = [_nanmean(iou[:, c]) for c in range(len(self.class_names))]
            per_dice = [_nanmean(dice[:, c]) for c in range(len(self.class_names))]
            res["per_image_mIoU@model_res"] = 100 * _nanmean(per_iou)
            res["per_image_mDice@model_res"] = 100 * _nanmean(per_dice)
            for name, a, b in zip(self.class_names, per_iou, per_dice):
                res[f"per_image_IoU@model_res-{name}"] = 100 * a
                res[f"per_image_Dice@model_res-{name}"] = 100 * b
        ds = confusion_to_metrics(conf, self.class_names, suffix="@orig_res")
        if self.binary:
            fg = self.class_names[1]
            res["dataset_IoU@orig_res"] = ds[f"IoU@orig_res-{fg}"]
            res["dataset_Dice@orig_res"] = ds[f"Dice@orig_res-{fg}"]
        for key, v in ds.items():
            res["dataset_" + key] = v
        res["mIoU"] = ds["mIoU@orig_res"]
        res["num_images"] = n
        if self._output_dir and comm.is_main_process():
            os.makedirs(self._output_dir, exist_ok=True)
            path = os.path.join(self._output_dir, "per_image_metrics.json")
            atomic_write_json(path, {"dataset": self.dataset_name, "classes": self.class_names, "images": per_image})
        return {"sem_seg": res}


# The name the foundation used for the dataset-level evaluator; it is now one part of the above.
DatasetLevelSemSegEvaluator = SemSegEvaluator


@EVALUATOR_REGISTRY.register()
def sem_seg(cfg, dataset_name: str, output_dir=None):
    return SemSegEvaluator(dataset_name, output_dir=output_dir)

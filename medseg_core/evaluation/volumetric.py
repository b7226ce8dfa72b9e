"""The "volume" evaluator: per-class Dice and HD95 per volume at the original resolution.

Registered as ``"volume"`` in ``EVALUATOR_REGISTRY`` (the default for data sets with
``evaluator_type="volume"``). For every volume it compares the model's ``pred_label`` (the
whole volume, after :class:`~medseg_core.modeling.volumetric.VolumetricSegmentor`'s
sliding-window inference) with the label file read at its stored resolution, using MONAI's
``DiceMetric`` and ``HausdorffDistanceMetric(percentile=95)`` with the voxel spacing from the
NIfTI header (HD95 in mm). Scores are then averaged over volumes per class (nnU-Net's "per-case
Dice per class, averaged over cases"), with their sample standard deviation over volumes
(``DiceStd-<class>``, ``HD95Std-<class>``).

Conventions (stated because papers differ):

* **background is excluded** from every score and mean (``include_background=False``);
* a class absent from both ground truth and prediction of a volume is left out of that
  class's mean (NaN), as in nnU-Net; predicted voxels of a class absent from the ground
  truth give Dice 0;
* HD95 when exactly one of prediction and ground truth is empty is set to the volume's
  diagonal in mm (the largest possible distance; MONAI returns NaN/inf there) and counted in
  ``HD95-empty-<class>``;
* voxels with the ignore label are removed from both masks;
* Dice is reported in percent (like Detectron2's other metrics), HD95 in mm.

Per-volume scores are written to ``<output_dir>/volume_scores.json`` when an output folder is
given.
"""
from __future__ import annotations

import json
import logging
import math
import os
import warnings
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from .. import compat  # noqa: F401

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm

from ..data.volumes import read_nifti_header
from ..data.volumetric import read_volume_label
from .registry import EVALUATOR_REGISTRY

logger = logging.getLogger(__name__)

__all__ = ["volume_scores", "summarize_volume_scores", "VolumeEvaluator"]


def _onehot(label: np.ndarray, num_classes: int, valid: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(np.where(valid, label, 0).astype(np.int64))
    oh = torch.nn.functional.one_hot(t, num_classes).movedim(-1, 0)
    oh = oh * torch.from_numpy(valid)[None]
    return oh[None].to(torch.uint8)


def volume_scores(
    pred: np.ndarray,
    gt: np.ndarray,
    num_classes: int,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    ignore_label: int = 255,
) -> Dict[str, List[float]]:
    """Dice (fraction) and HD95 (mm) for classes 1..K-1 of one volume (see module doc).

    Returns ``{"dice": [...], "hd95": [...], "hd95_empty": [...]}``, one entry per foreground
    class; NaN marks a class absent from both masks.
    """
    from monai.metrics import DiceMetric, HausdorffDistanceMetric

    pred = np.asarray(pred)
    gt = np.asarray(gt)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from ground truth shape {gt.shape}")
    valid = gt != ignore_label
    p, g = _onehot(pred, num_classes, valid), _onehot(gt, num_classes, valid)
    spacing = [float(s) for s in spacing]
    with warnings.catch_warnings():
        # MONAI's own call of a deprecated argument, and its "empty mask" warnings that the
        # conventions below handle explicitly
        warnings.simplefilter("ignore")
        dice = DiceMetric(include_background=False, reduction="none", ignore_empty=False)(p, g)[0]
        hd = HausdorffDistanceMetric(include_background=False, percentile=95, reduction="none")(
            p, g, spacing=spacing
        )[0]
    diagonal = math.sqrt(sum((n * s) ** 2 for n, s in zip(gt.shape, spacing)))
    out: Dict[str, List[float]] = {"dice": [], "hd95": [], "hd95_empty": []}
    for k in range(1, num_classes):
        has_p, has_g = bool(p[0, k].any()), bool(g[0, k].any())
        if not has_p and not has_g:
            out["dice"].append(float("nan"))
            out["hd95"].append(float("nan"))
            out["hd95_empty"].append(0.0)
        elif has_p != has_g:
            out["dice"].append(float(dice[k - 1]) if has_g else 0.0)
            out["hd95"].append(diagonal)
            out["hd95_empty"].append(1.0)
        else:
            out["dice"].append(float(dice[k - 1]))
            out["hd95"].append(float(hd[k - 1]))
            out["hd95_empty"].append(0.0)
    return out


def summarize_volume_scores(records: List[Dict], class_names: Sequence[str]) -> Dict[str, float]:
    """Means over volumes per foreground class (NaN entries left out) and over classes."""
    res: Dict[str, float] = OrderedDict()
    fg = list(class_names[1:])
    dice = np.array([r["dice"] for r in records], dtype=np.float64).reshape(len(records), len(fg))
    hd = np.array([r["hd95"] for r in records], dtype=np.float64).reshape(len(records), len(fg))
    empty = np.array([r["hd95_empty"] for r in records], dtype=np.float64).reshape(len(records), len(fg))

    def nanmean(a):
        a = a[~np.isnan(a)]
        return float(a.mean()) if a.size else float("nan")

    def nanstd(a):
        # sample standard deviation over volumes (the spread the papers report as +/-)
        a = a[~np.isnan(a)]
        return float(a.std(ddof=1)) if a.size > 1 else float("nan")

    per_dice = [nanmean(dice[:, k]) for k in range(len(fg))]
    per_hd = [nanmean(hd[:, k]) for k in range(len(fg))]
    res["mDice"] = 100 * nanmean(np.array(per_dice))
    res["mHD95"] = nanmean(np.array(per_hd))
    for k, name in enumerate(fg):
        res[f"Dice-{name}"] = 100 * per_dice[k]
    for k, name in enumerate(fg):
        res[f"HD95-{name}"] = per_hd[k]
    for k, name in enumerate(fg):
        res[f"DiceStd-{name}"] = 100 * nanstd(dice[:, k])
    for k, name in enumerate(fg):
        res[f"HD95Std-{name}"] = nanstd(hd[:, k])
    for k, name in enumerate(fg):
        res[f"HD95-empty-{name}"] = float(empty[:, k].sum())
    res["num_volumes"] = float(len(records))
    return res


class VolumeEvaluator(DatasetEvaluator):
    """Collects per-volume scores; ``evaluate`` returns ``{"volume": {...}}`` (module doc)."""

    def __init__(self, dataset_name: str, output_dir: Optional[str] = None, distributed: bool = True):
        meta = MetadataCatalog.get(dataset_name)
        self.class_names = list(meta.stuff_classes)
        self.ignore_label = int(meta.get("ignore_label", 255))
        self.dataset_name = dataset_name
        self.output_dir = output_dir
        self._distributed = distributed
        self._gt_info = {d["file_name"]: d for d in DatasetCatalog.get(dataset_name)}
        self.reset()

    def reset(self):
        self._records: List[Dict] = []

    def process(self, inputs, outputs):
        for inp, out in zip(inputs, outputs):
            if "pred_label" not in out:
                raise KeyError(f"{inp.get('file_name')}: model output has no 'pred_label' (a volume model is expected)")
            rec = self._gt_info.get(inp["file_name"], inp)
            label_file = inp.get("label_file_name") or rec.get("label_file_name")
            if not label_file:
                raise KeyError(f"{inp['file_name']}: no label_file_name to evaluate against")
            gt = read_volume_label(label_file, len(self.class_names), self.ignore_label)
            spacing = rec.get("spacing") or read_nifti_header(label_file)[1]
            pred = out["pred_label"].to("cpu").numpy()
            if pred.shape != gt.shape:
                raise ValueError(
                    f"{inp['file_name']}: predicted label volume {pred.shape} differs from the ground truth "
                    f"{gt.shape} in {label_file}"
                )
            scores = volume_scores(pred, gt, len(self.class_names), spacing, self.ignore_label)
            scores.update(image_id=str(inp.get("image_id", inp["file_name"])), file_name=inp["file_name"])
            self._records.append(scores)

    def evaluate(self):
        records = self._records
        if self._distributed:
            comm.synchronize()
            records = [r for part in comm.gather(records) for r in part]
            if not comm.is_main_process():
                return {}
        if not records:
            logger.warning("VolumeEvaluator on %s received no volumes", self.dataset_name)
            return {}
        if self.output_dir:
            os.makedirs(self.output_dir, exist_ok=True)
            with open(os.path.join(self.output_dir, "volume_scores.json"), "w") as f:
                json.dump({"classes": self.class_names[1:], "volumes": records}, f, indent=1)
        res = summarize_volume_scores(records, self.class_names)
        logger.info(
            "Volume metrics on %s (%d volumes; background excluded; Dice in %%, HD95 in mm)",
            self.dataset_name, len(records),
        )
        return {"volume": res}


@EVALUATOR_REGISTRY.register()
def volume(cfg, dataset_name: str, output_dir=None):
    return VolumeEvaluator(dataset_name, output_dir)

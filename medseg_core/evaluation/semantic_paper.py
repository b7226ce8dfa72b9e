"""Per-image semantic metrics as the LGMSNet / CMUNeXt / UNeXt papers compute them.

Those papers report IoU and F1 from ``utils/metrics.iou_score`` of their shared code base,
called on a validation loader with batch size 1 and averaged over images (``AverageMeter``):
a **per-image mean**, on the masks **resized to the model's input size** (256x256, nearest
neighbour), with the prediction ``sigmoid(logit) > 0.5``. For one image with predicted
foreground P and ground-truth foreground G (both boolean):

* ``IoU = (|P & G| + 1e-5) / (|P | G| + 1e-5)``: an empty-vs-empty image scores 1;
* ``F1 = 2 * SE * PC / (SE + PC + 1e-6)`` with ``SE = TP / (TP + FN + 1e-6)`` and
  ``PC = TP / (TP + FP + 1e-6)``, where TP/FN/FP are counted against ``G' = (G == max(G))``.
  For a non-empty G, G' = G and F1 is the Dice coefficient (up to the epsilons). For an
  **empty** G, ``max(G)`` is False, so G' is the *whole image*: an empty prediction then scores
  F1 = 0 (while IoU = 1), and a prediction of n pixels out of N scores
  F1 = 2 (n/N) / (n/N + 1) (while IoU ~ 0). :func:`paper_binary_scores` reproduces this
  exactly; it rarely matters on lesion sets where every image has a lesion.

Ignored pixels (label 255) do not exist in those binary data sets; here they are removed from
P, G and from the image before counting (so "the whole image" above means its valid pixels).

Multi-class data sets have no such reference. :func:`per_image_class_scores` gives, per image
and class, IoU = |P & G| / |P | G| and Dice = 2 |P & G| / (|P| + |G|) over valid pixels, and
*undefined* (NaN) when the class is absent from both prediction and ground truth; per-class
figures are means over the images where they are defined, and the means over classes include
the background, like Detectron2's mIoU.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

__all__ = ["paper_binary_scores", "per_image_class_scores", "resize_nearest"]


def paper_binary_scores(pred: np.ndarray, gt: np.ndarray, valid: Optional[np.ndarray] = None) -> Tuple[float, float]:
    """(IoU, F1) of one image exactly as the authors' ``iou_score`` (module docstring)."""
    pred = np.asarray(pred, bool)
    gt = np.asarray(gt, bool)
    if valid is not None:
        pred, gt = pred[valid], gt[valid]
    smooth = 1e-5
    inter = np.logical_and(pred, gt).sum()
    union = np.logical_or(pred, gt).sum()
    iou = (inter + smooth) / (union + smooth)
    g = gt if gt.any() else np.ones_like(gt)  # the authors' GT == max(GT)
    tp = float(np.logical_and(pred, g).sum())
    fn = float(np.logical_and(~pred, g).sum())
    fp = float(np.logical_and(pred, ~g).sum())
    se = tp / (tp + fn + 1e-6)
    pc = tp / (tp + fp + 1e-6)
    f1 = 2 * se * pc / (se + pc + 1e-6)
    return float(iou), float(f1)


def per_image_class_scores(
    pred: np.ndarray, gt: np.ndarray, num_classes: int, ignore_label: int = 255
) -> Tuple[np.ndarray, np.ndarray]:
    """Per-class (IoU, Dice) arrays of one image; NaN where a class is in neither map."""
    valid = gt != ignore_label
    p, g = pred[valid].astype(np.int64), gt[valid].astype(np.int64)
    conf = np.bincount(num_classes * g + p, minlength=num_classes * num_classes).reshape(num_classes, num_classes)
    tp = np.diag(conf).astype(np.float64)
    sum_gt, sum_pred = conf.sum(1).astype(np.float64), conf.sum(0).astype(np.float64)
    union = sum_gt + sum_pred - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
        dice = np.where(union > 0, 2 * tp / (sum_gt + sum_pred), np.nan)
    return iou, dice


def resize_nearest(label: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resize of a label map (OpenCV ``INTER_NEAREST``, what the authors'
    albumentations ``Resize`` applies to masks)."""
    if label.shape == (height, width):
        return label
    import cv2

    dtype = np.uint8 if label.max() < 256 else np.int32
    out = cv2.resize(label.astype(dtype), (width, height), interpolation=cv2.INTER_NEAREST)
    return out.astype(label.dtype)

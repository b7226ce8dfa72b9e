"""Instance-segmentation metrics following the Ultralytics validator protocol ("ultralytics_segm").

The LMSF-A paper's mAP values come from the Ultralytics 8.2 ``SegmentationValidator``
(docs/lmsfa.md, "Evaluation protocols"), which differs from pycocotools. This evaluator
reproduces that protocol for the outputs of ANY instance model (LMSF-A, Mask R-CNN, Mask2Former,
...), so numbers can be set
beside the paper's tables:

* **letterbox geometry** per image: longest side resized to ``image_size`` (content
  ``min(ceil(w0 r), S) x min(ceil(h0 r), S)``), "rect" canvas ``ceil(shape / 32 + 0.5) * 32``
  per side, content centred;
* **masks scored at 1/4 of that canvas** (``mask_ratio``): ground truth and predicted masks,
  given at the original resolution, are sampled at the centres of the 1/4-grid cells (the
  Ultralytics validator rasterises GT polygons at that grid and compares them with prototype-
  resolution masks; here predictions are derived from the returned full-resolution masks, so
  any model can be scored the same way);
* **GT overlap map** (``overlap_mask``): larger instances drawn first, smaller ones win pixels
  where instances overlap (Ultralytics' default);
* **detections**: score > ``conf_thresh`` (0.001) and the ``max_det`` (300) best per image; the
  NMS itself is the model's (LMSF-A's is multi-label, IoU 0.7);
* **boxes** compared in original image coordinates;
* **matching** per image and IoU threshold (0.50:0.05:0.95): all same-class (GT, detection)
  pairs with IoU >= t, sorted by IoU, made one-to-one by unique detection then unique GT;
* **AP** per class over all images: detections sorted by confidence, precision envelope,
  trapezoid integral of ``np.interp`` at 101 recall points with sentinels (r 0 -> p 1,
  r 1 -> p 0); averaged over classes present in the GT (a class with GT and no detection
  counts 0); **P and R** at the confidence maximising the (box-smoothed, class-mean) F1.

Reported (in percent, like Detectron2's COCOEvaluator): for ``ultralytics_box`` and
``ultralytics_segm``: ``mAP50``, ``mAP50_95`` (Ultralytics' mAP50-95; no "-" in the name so that
Detectron2's csv summary keeps it), ``P``, ``R``, then per class (``mAP50_95-<class>``, ...); and
``fitness`` = 0.1 mAP50 + 0.9 mAP50-95 summed over box and mask (Ultralytics' best-checkpoint
criterion). Crowd
annotations are ignored (Ultralytics has none).
"""
from __future__ import annotations

import itertools
import json
import logging
import math
import os
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import pycocotools.mask as mask_util
import torch

from .. import compat  # noqa: F401

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.structures import BoxMode
from detectron2.utils import comm

from ..errors import DatasetError, here
from .registry import EVALUATOR_REGISTRY

logger = logging.getLogger(__name__)

__all__ = [
    "UltralyticsSegEvaluator", "letterbox_geometry", "grid_sample_masks", "match_predictions",
    "ap_per_class", "compute_ap", "IOU_THRESHOLDS",
]

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)


def letterbox_geometry(h0: int, w0: int, image_size: int, stride: int = 32) -> Tuple[int, int, int, int, int, int]:
    """Ultralytics rect-validation letterbox of an (h0, w0) image.

    Returns (canvas_h, canvas_w, content_h, content_w, top, left) in letterboxed pixels.
    """
    r = image_size / max(h0, w0)
    if r != 1:
        w, h = min(math.ceil(w0 * r), image_size), min(math.ceil(h0 * r), image_size)
    else:
        w, h = w0, h0
    ar = h0 / w0
    shape = [ar, 1.0] if ar < 1 else ([1.0, 1.0 / ar] if ar > 1 else [1.0, 1.0])
    ch, cw = (int(math.ceil(s * image_size / stride + 0.5)) * stride for s in shape)
    # Ultralytics' LetterBox with scaleup=False: content never enlarged to fill the canvas
    ratio = min(ch / h, cw / w, 1.0)
    h, w = int(round(h * ratio)), int(round(w * ratio))
    dh, dw = (ch - h) / 2, (cw - w) / 2
    return ch, cw, h, w, int(round(dh - 0.1)), int(round(dw - 0.1))


def grid_sample_masks(masks: torch.Tensor, geom: Tuple[int, int, int, int, int, int], ratio: int = 4) -> torch.Tensor:
    """(K, H0, W0) masks at the original size -> (K, canvas_h / ratio, canvas_w / ratio) bool masks,
    sampled at the 1/ratio grid cell centres of the letterboxed canvas (padding is empty)."""
    k, h0, w0 = masks.shape
    ch, cw, h, w, top, left = geom
    gh, gw = ch // ratio, cw // ratio
    yc = (torch.arange(gh, dtype=torch.float64) + 0.5) * ratio - top  # content coordinates
    xc = (torch.arange(gw, dtype=torch.float64) + 0.5) * ratio - left
    vy, vx = (yc >= 0) & (yc < h), (xc >= 0) & (xc < w)
    ry = (yc * (h0 / h)).floor().clamp(0, h0 - 1).long()
    rx = (xc * (w0 / w)).floor().clamp(0, w0 - 1).long()
    masks = masks.to("cpu")
    out = masks[:, ry][:, :, rx].bool()
    return out & vy[None, :, None] & vx[None, None, :]


def match_predictions(pred_classes: np.ndarray, true_classes: np.ndarray, iou: np.ndarray,
                      thresholds: Sequence[float] = IOU_THRESHOLDS) -> np.ndarray:
    """Ultralytics' greedy IoU matching. ``iou`` is (num_gt, num_pred). Returns (num_pred, T) bool."""
    correct = np.zeros((len(pred_classes), len(thresholds)), dtype=bool)
    if iou.size == 0:
        return correct
    iou = iou * (true_classes[:, None] == pred_classes[None, :])
    for i, t in enumerate(thresholds):
        matches = np.argwhere(iou >= t)  # (gt, pred) pairs
        if matches.shape[0] > 1:
            matches = matches[iou[matches[:, 0], matches[:, 1]].argsort(kind="stable")[::-1]]
            matches = matches[np.unique(matches[:, 1], return_index=True)[1]]
            matches = matches[np.unique(matches[:, 0], return_index=True)[1]]
        if matches.shape[0]:
            correct[matches[:, 1], i] = True
    return correct


def compute_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """Trapezoid integral of the precision envelope at 101 recall points (Ultralytics "interp")."""
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([1.0], precision, [0.0]))
    mpre = np.flip(np.maximum.accumulate(np.flip(mpre)))
    x = np.linspace(0, 1, 101)
    y = np.interp(x, mrec, mpre)
    return float(np.sum((y[1:] + y[:-1]) * np.diff(x)) / 2)


def _smooth(y: np.ndarray, f: float = 0.1) -> np.ndarray:
    nf = round(len(y) * f * 2) // 2 + 1
    p = np.ones(nf // 2)
    yp = np.concatenate((p * y[0], y, p * y[-1]), 0)
    return np.convolve(yp, np.ones(nf) / nf, mode="valid")


def ap_per_class(tp: np.ndarray, conf: np.ndarray, pred_cls: np.ndarray, target_cls: np.ndarray,
                 eps: float = 1e-16) -> Dict[str, np.ndarray]:
    """Per-class AP at every IoU threshold, and P / R at the max-F1 confidence.

    Returns ``classes`` (those with GT, sorted), ``ap`` (nc, T), ``p``, ``r`` (nc,).
    """
    order = np.argsort(-conf, kind="stable")
    tp, conf, pred_cls = tp[order], conf[order], pred_cls[order]
    classes, nt = np.unique(target_cls, return_counts=True)
    nc, nthr = len(classes), tp.shape[1]
    x = np.linspace(0, 1, 1000)
    ap = np.zeros((nc, nthr))
    p_curve, r_curve = np.zeros((nc, 1000)), np.zeros((nc, 1000))
    for ci, c in enumerate(classes):
        sel = pred_cls == c
        n_l, n_p = nt[ci], int(sel.sum())
        if n_p == 0 or n_l == 0:
            continue
        fpc = (1 - tp[sel]).cumsum(0)
        tpc = tp[sel].cumsum(0)
        recall = tpc / (n_l + eps)
        precision = tpc / (tpc + fpc)
        r_curve[ci] = np.interp(-x, -conf[sel], recall[:, 0], left=0)
        p_curve[ci] = np.interp(-x, -conf[sel], precision[:, 0], left=1)
        for j in range(nthr):
            ap[ci, j] = compute_ap(recall[:, j], precision[:, j])
    f1 = 2 * p_curve * r_curve / (p_curve + r_curve + eps)
    i = int(_smooth(f1.mean(0), 0.1).argmax()) if nc else 0
    return {"classes": classes, "ap": ap, "p": p_curve[:, i], "r": r_curve[:, i]}


def _box_iou(a: np.ndarray, b: np.ndarray, eps: float = 1e-7) -> np.ndarray:
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area_a = (a[:, 2:] - a[:, :2]).prod(-1)
    area_b = (b[:, 2:] - b[:, :2]).prod(-1)
    return inter / (area_a[:, None] + area_b[None] - inter + eps)


def _mask_iou(gt: torch.Tensor, pred: torch.Tensor, eps: float = 1e-7) -> np.ndarray:
    g = gt.reshape(gt.shape[0], -1).float()
    p = pred.reshape(pred.shape[0], -1).float()
    inter = g @ p.t()
    union = g.sum(1)[:, None] + p.sum(1)[None] - inter
    return (inter / (union + eps)).numpy()


def _decode(segm, h: int, w: int, file_name: str) -> np.ndarray:
    if isinstance(segm, list):
        polys = [list(map(float, p)) for p in segm if len(p) >= 6]
        if not polys:
            return np.zeros((h, w), np.uint8)
        rle = mask_util.merge(mask_util.frPyObjects(polys, h, w))
    elif isinstance(segm, dict):
        rle = mask_util.frPyObjects(segm, h, w) if isinstance(segm.get("counts"), list) else segm
        if isinstance(rle.get("counts"), str):
            rle = dict(rle, counts=rle["counts"].encode("ascii"))
    else:
        raise DatasetError(f"{file_name}: unsupported segmentation type {type(segm).__name__}")
    return mask_util.decode(rle)


class UltralyticsSegEvaluator(DatasetEvaluator):
    """Box and mask mAP50 / mAP50-95 / P / R by the Ultralytics protocol (module docstring)."""

    def __init__(self, dataset_name: str, image_size: int = 640, conf_thresh: float = 0.001,
                 max_det: int = 300, mask_ratio: int = 4, overlap_mask: bool = True,
                 output_dir: Optional[str] = None, distributed: bool = True) -> None:
        if image_size <= 0 or image_size % 32:
            raise ValueError(
                here() + f"image_size must be a positive multiple of 32, got {image_size}"
            )
        self.dataset_name = dataset_name
        self.image_size, self.conf_thresh, self.max_det = image_size, conf_thresh, max_det
        self.mask_ratio, self.overlap_mask = mask_ratio, overlap_mask
        self.output_dir, self.distributed = output_dir, distributed
        self.class_names = list(MetadataCatalog.get(dataset_name).get("thing_classes", []))
        self._gt: Optional[Dict] = None
        self.reset()

    def reset(self) -> None:
        self._stats: List[Dict[str, np.ndarray]] = []

    def _gt_by_id(self) -> Dict:
        if self._gt is None:
            self._gt = {d["image_id"]: d for d in DatasetCatalog.get(self.dataset_name)}
        return self._gt

    def _ground_truth(self, d: Dict, geom) -> Tuple[np.ndarray, np.ndarray, torch.Tensor]:
        h0, w0 = int(d["height"]), int(d["width"])
        anns = [a for a in d.get("annotations", []) if not a.get("iscrowd", 0)]
        classes = np.asarray([a["category_id"] for a in anns], dtype=np.int64)
        boxes = np.asarray(
            [BoxMode.convert(list(a["bbox"]), a["bbox_mode"], BoxMode.XYXY_ABS) for a in anns], dtype=np.float64
        ).reshape(-1, 4)
        if not anns:
            gh, gw = geom[0] // self.mask_ratio, geom[1] // self.mask_ratio
            return classes, boxes, torch.zeros((0, gh, gw), dtype=torch.bool)
        full = torch.from_numpy(np.stack([_decode(a["segmentation"], h0, w0, d["file_name"]) for a in anns]))
        masks = grid_sample_masks(full, geom, self.mask_ratio)
        if self.overlap_mask and len(anns) > 1:
            # index map: larger instances first, the smaller one keeps overlapping pixels
            order = torch.argsort(masks.flatten(1).sum(1), descending=True, stable=True)
            ranked = masks[order]
            idx = (ranked * torch.arange(1, len(anns) + 1).view(-1, 1, 1)).amax(0)
            ranked = idx[None] == torch.arange(1, len(anns) + 1).view(-1, 1, 1)
            classes, boxes, masks = classes[order.numpy()], boxes[order.numpy()], ranked
        return classes, boxes, masks

    def process(self, inputs: List[Dict], outputs: List[Dict]) -> None:
        gt_by_id = self._gt_by_id()
        for inp, out in zip(inputs, outputs):
            d = gt_by_id.get(inp["image_id"])
            if d is None:
                raise DatasetError(f"{self.dataset_name}: image_id {inp['image_id']} is not in the data set")
            h0, w0 = int(d["height"]), int(d["width"])
            geom = letterbox_geometry(h0, w0, self.image_size)
            gt_cls, gt_boxes, gt_masks = self._ground_truth(d, geom)

            inst = out["instances"].to("cpu")
            scores = inst.scores.numpy().astype(np.float64)
            keep = np.nonzero(scores > self.conf_thresh)[0]
            keep = keep[np.argsort(-scores[keep], kind="stable")][: self.max_det]
            scores = scores[keep]
            pred_cls = inst.pred_classes.numpy()[keep].astype(np.int64)
            pred_boxes = inst.pred_boxes.tensor.numpy()[keep].astype(np.float64)
            ntp = np.zeros((len(keep), len(IOU_THRESHOLDS)), dtype=bool)
            stat = {"conf": scores, "pred_cls": pred_cls, "target_cls": gt_cls, "tp_box": ntp, "tp_mask": ntp}
            if len(keep) and len(gt_cls):
                pm = inst.pred_masks
                if pm.dim() != 3 or tuple(pm.shape[-2:]) != (h0, w0):
                    raise ValueError(
                        here() + f"{d['file_name']}: pred_masks must be (N, {h0}, {w0}) "
                        f"full-image masks at the original size, got {tuple(pm.shape)}"
                    )
                pm = grid_sample_masks(pm[torch.from_numpy(keep)], geom, self.mask_ratio)
                stat["tp_box"] = match_predictions(pred_cls, gt_cls, _box_iou(gt_boxes, pred_boxes))
                stat["tp_mask"] = match_predictions(pred_cls, gt_cls, _mask_iou(gt_masks, pm))
            if len(keep) or len(gt_cls):
                self._stats.append(stat)

    def evaluate(self):
        stats = self._stats
        if self.distributed:
            comm.synchronize()
            stats = list(itertools.chain(*comm.gather(stats, dst=0)))
            if not comm.is_main_process():
                return {}
        if not stats:
            logger.warning("[UltralyticsSegEvaluator] no predictions and no ground truth")
            return {}
        cat = {k: np.concatenate([s[k] for s in stats], 0) for k in stats[0]}
        results = OrderedDict()
        fitness = 0.0
        for task, key in (("ultralytics_box", "tp_box"), ("ultralytics_segm", "tp_mask")):
            r = ap_per_class(cat[key].astype(np.float64), cat["conf"], cat["pred_cls"], cat["target_cls"])
            ap = r["ap"]
            res = {
                "mAP50": 100 * float(ap[:, 0].mean()) if len(ap) else 0.0,
                "mAP50_95": 100 * float(ap.mean()) if len(ap) else 0.0,
                "P": 100 * float(r["p"].mean()) if len(ap) else 0.0,
                "R": 100 * float(r["r"].mean()) if len(ap) else 0.0,
            }
            for ci, c in enumerate(r["classes"]):
                name = self.class_names[c] if c < len(self.class_names) else str(c)
                res[f"mAP50_95-{name}"] = 100 * float(ap[ci].mean())
                res[f"mAP50-{name}"] = 100 * float(ap[ci, 0])
                res[f"P-{name}"] = 100 * float(r["p"][ci])
                res[f"R-{name}"] = 100 * float(r["r"][ci])
            fitness += 0.1 * res["mAP50"] + 0.9 * res["mAP50_95"]
            results[task] = res
        results["ultralytics_segm"]["fitness"] = fitness
        if self.output_dir:
            os.makedirs(self.output_dir, exist_ok=True)
            with open(os.path.join(self.output_dir, "ultralytics_metrics.json"), "w") as f:
                json.dump(results, f, indent=2)
        return results


@EVALUATOR_REGISTRY.register()
def ultralytics_segm(cfg, dataset_name: str, output_dir=None):
    """Ultralytics-protocol box and mask metrics (TEST.ULTRALYTICS.*)."""
    u = cfg.TEST.ULTRALYTICS
    return UltralyticsSegEvaluator(
        dataset_name, image_size=u.IMAGE_SIZE, conf_thresh=u.CONF_THRESH, max_det=u.MAX_DET,
        mask_ratio=u.MASK_RATIO, overlap_mask=u.OVERLAP_MASK, output_dir=output_dir,
    )

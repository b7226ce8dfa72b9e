"""YOLO data augmentation and letterbox resizing for LMSF-A (mapper "yolo").

The LMSF-A paper trains with the Ultralytics defaults (§IV-B; docs/lmsfa.md):

* **Mosaic** (probability ``INPUT.YOLO.MOSAIC_PROB``, 1.0, never closed; with
  ``DATALOADER.SAMPLER_TRAIN "RepeatFactorTrainingSampler"`` the three extra images are drawn
  by repeat factor like the first): four images, each
  resized so that its longest side is S, are placed around a random centre of a 2S x 2S gray
  (114) canvas (Ultralytics' 4-tile layout: every image touches the centre with one corner and
  is cropped only by the canvas border);
* **random affine** (Ultralytics ``RandomPerspective`` without perspective): rotation
  (``DEGREES``), scale in [1 - SCALE, 1 + SCALE], shear (``SHEAR``), translation
  (``TRANSLATE``) about the canvas centre, cropping to S x S;
* **HSV jitter** (``HSV_H/S/V`` = 0.015 / 0.7 / 0.4) through lookup tables;
* **flips** (``FLIP_LR`` 0.5, ``FLIP_UD`` 0).

Without mosaic a sample is letterboxed to S x S (longest side S, centred, gray padding) and then
goes through the same random affine. Test images are only resized so that the longest side is S
(aspect kept); the model pads them to a multiple of 32 with gray, the "rect" letterbox of the
Ultralytics validator (padding at the bottom/right instead of centred).

Implementation choice: all geometric steps of a source image (resize, mosaic placement, affine,
flip) are composed into ONE 2x3 matrix, so each image and its instance masks are interpolated
once, straight from the original resolution. Masks are warped bilinearly (0/255) and thresholded
at half, and boxes are the tight boxes of the warped masks (Ultralytics derives them from the
warped polygons). Instances are dropped as Ultralytics' ``box_candidates`` does: box narrower or
lower than ``MIN_BOX_SIZE`` px, keeping less than ``MIN_AREA_RATIO`` of its scaled area (0.01
for segment data in Ultralytics), or with an aspect ratio above ``MAX_ASPECT_RATIO``.
"""
from __future__ import annotations

import copy
import math
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import pycocotools.mask as mask_util
import torch

import medseg_core  # noqa: F401  (NumPy-2 / Pillow shim before detectron2)
from detectron2.data import get_detection_dataset_dicts
from detectron2.structures import BitMasks, Boxes, BoxMode, Instances

from medseg_core.data.mappers import DATASET_MAPPER_REGISTRY, read_image_checked
# the deploy contract's "longest" rule is this mapper's test resize: one function for both
from medseg_core.deploy.interface import resize_longest
from medseg_core.errors import ConfigError, DatasetError, here

__all__ = ["YOLOMapper", "decode_segmentation", "random_affine_matrix", "hsv_jitter", "resize_longest"]


def decode_segmentation(segm, height: int, width: int, file_name: str = "") -> np.ndarray:
    """COCO polygons / RLE (compressed or not) -> (height, width) uint8 0/1 mask."""
    if isinstance(segm, list):
        polys = [np.asarray(p, dtype=np.float64).ravel() for p in segm]
        polys = [p for p in polys if p.size >= 6]
        if not polys:
            return np.zeros((height, width), np.uint8)
        rle = mask_util.merge(mask_util.frPyObjects([p.tolist() for p in polys], height, width))
    elif isinstance(segm, dict):
        rle = segm
        if isinstance(segm.get("counts"), list):
            rle = mask_util.frPyObjects(segm, height, width)
        elif isinstance(segm.get("counts"), str):
            rle = dict(segm, counts=segm["counts"].encode("ascii"))
    else:
        raise DatasetError(f"{file_name}: unsupported segmentation type {type(segm).__name__}")
    m = mask_util.decode(rle)
    if m.shape[:2] != (height, width):
        raise DatasetError(
            f"{file_name}: mask is {m.shape[0]}x{m.shape[1]} but the image is {height}x{width}"
        )
    return m.astype(np.uint8)


def _scale_matrix(r: float, tx: float = 0.0, ty: float = 0.0) -> np.ndarray:
    """Resize by ``r`` (pixel-centre convention, as cv2.resize) then translate; 3x3."""
    off = 0.5 * (r - 1)
    return np.array([[r, 0, off + tx], [0, r, off + ty], [0, 0, 1]], dtype=np.float64)


def random_affine_matrix(
    rng: np.random.Generator, in_hw: Tuple[int, int], out_size: int,
    degrees: float, translate: float, scale: float, shear: float,
) -> Tuple[np.ndarray, float]:
    """Ultralytics ``RandomPerspective.affine_transform`` (no perspective): 3x3 matrix from an
    ``in_hw`` canvas to an ``out_size`` square, and the drawn scale."""
    C = np.eye(3)
    C[0, 2], C[1, 2] = -in_hw[1] / 2, -in_hw[0] / 2  # canvas centre to the origin
    a = rng.uniform(-degrees, degrees)
    s = rng.uniform(1 - scale, 1 + scale)
    R = np.eye(3)
    R[:2] = cv2.getRotationMatrix2D(angle=a, center=(0, 0), scale=s)
    S = np.eye(3)
    S[0, 1] = math.tan(math.radians(rng.uniform(-shear, shear)))
    S[1, 0] = math.tan(math.radians(rng.uniform(-shear, shear)))
    T = np.eye(3)
    T[0, 2] = rng.uniform(0.5 - translate, 0.5 + translate) * out_size
    T[1, 2] = rng.uniform(0.5 - translate, 0.5 + translate) * out_size
    return T @ S @ R @ C, s


def hsv_jitter(image: np.ndarray, rng: np.random.Generator, hgain: float, sgain: float, vgain: float,
               fmt: str = "RGB") -> np.ndarray:
    """Ultralytics ``RandomHSV``: random gains in [1-g, 1+g] applied to H, S, V by lookup tables."""
    if not (hgain or sgain or vgain) or image.ndim != 3 or image.shape[2] != 3:
        return image
    r = rng.uniform(-1, 1, 3) * np.array([hgain, sgain, vgain]) + 1
    to_hsv, from_hsv = (
        (cv2.COLOR_RGB2HSV, cv2.COLOR_HSV2RGB) if fmt == "RGB" else (cv2.COLOR_BGR2HSV, cv2.COLOR_HSV2BGR)
    )
    hue, sat, val = cv2.split(cv2.cvtColor(image, to_hsv))
    x = np.arange(0, 256, dtype=r.dtype)
    lut_hue = ((x * r[0]) % 180).astype(np.uint8)
    lut_sat = np.clip(x * r[1], 0, 255).astype(np.uint8)
    lut_val = np.clip(x * r[2], 0, 255).astype(np.uint8)
    hsv = cv2.merge((cv2.LUT(hue, lut_hue), cv2.LUT(sat, lut_sat), cv2.LUT(val, lut_val)))
    return cv2.cvtColor(hsv, from_hsv)


class YOLOMapper:
    """Dataset dict -> model input with YOLO augmentation (train) or longest-side resize (test)."""

    def __init__(self, cfg, is_train: bool, pool: Optional[Sequence[Dict]] = None) -> None:
        y = cfg.INPUT.YOLO
        self.is_train = is_train
        self.size = int(y.IMAGE_SIZE)
        if self.size <= 0 or self.size % 32:
            raise ConfigError(here() + f"INPUT.YOLO.IMAGE_SIZE must be a positive multiple of 32, got {self.size}")
        self.format = cfg.INPUT.FORMAT
        self.bit_depth = int(cfg.INPUT.IMAGE_BIT_DEPTH)
        self.mosaic_prob = float(y.MOSAIC_PROB)
        self.hsv = (float(y.HSV_H), float(y.HSV_S), float(y.HSV_V))
        self.degrees, self.translate, self.scale, self.shear = (
            float(y.DEGREES), float(y.TRANSLATE), float(y.SCALE), float(y.SHEAR)
        )
        self.flip_lr, self.flip_ud = float(y.FLIP_LR), float(y.FLIP_UD)
        self.min_box, self.min_area_ratio, self.max_aspect = (
            float(y.MIN_BOX_SIZE), float(y.MIN_AREA_RATIO), float(y.MAX_ASPECT_RATIO)
        )
        self.pad_value = int(round(cfg.MODEL.LMSFA.PAD_VALUE)) if hasattr(cfg.MODEL, "LMSFA") else 114
        self.pool = None
        if is_train and self.mosaic_prob > 0:
            # the other three mosaic images are drawn from the same training dicts the loader uses
            self.pool = list(pool) if pool is not None else get_detection_dataset_dicts(
                cfg.DATASETS.TRAIN, filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS
            )
        self.pool_p = self._pool_probabilities(cfg) if self.pool is not None else None
        self._rng: Optional[np.random.Generator] = None

    def _pool_probabilities(self, cfg) -> Optional[np.ndarray]:
        """With the repeat-factor sampler, the three extra mosaic images are drawn with
        probability proportional to their repeat factors too (Detectron2's r = max(1, sqrt(t / f))
        of the rarest class in the image), so rare classes are over-sampled in every mosaic tile,
        not only in the first one the sampler picks; otherwise uniformly (Ultralytics)."""
        if cfg.DATALOADER.SAMPLER_TRAIN != "RepeatFactorTrainingSampler":
            return None
        from detectron2.data.samplers import RepeatFactorTrainingSampler

        r = RepeatFactorTrainingSampler.repeat_factors_from_category_frequency(
            self.pool, cfg.DATALOADER.REPEAT_THRESHOLD).numpy().astype(np.float64)
        return r / r.sum()

    @property
    def rng(self) -> np.random.Generator:
        # drawn from NumPy's global state, which Detectron2 seeds per data-loader worker
        if self._rng is None:
            self._rng = np.random.default_rng(np.random.randint(0, 2**31 - 1))
        return self._rng

    # ------------------------------------------------------------------ loading
    def _load(self, d: Dict) -> Tuple[np.ndarray, List[np.ndarray], List[int], List[np.ndarray]]:
        """Image, per-instance masks (uint8 0/1), classes and xyxy boxes of a dataset dict."""
        image = read_image_checked(d["file_name"], self.format, self.bit_depth)
        h, w = image.shape[:2]
        masks, classes, boxes = [], [], []
        for obj in d.get("annotations", []):
            if obj.get("iscrowd", 0):
                continue
            if "segmentation" not in obj:
                raise DatasetError(f"{d['file_name']}: annotation without 'segmentation' (instance masks are required)")
            masks.append(decode_segmentation(obj["segmentation"], h, w, d["file_name"]))
            classes.append(int(obj["category_id"]))
            boxes.append(BoxMode.convert(np.asarray(obj["bbox"], dtype=np.float64)[None], obj["bbox_mode"], BoxMode.XYXY_ABS)[0])
        return image, masks, classes, boxes

    # ------------------------------------------------------------------ train
    def _train(self, d: Dict) -> Dict:
        rng, s = self.rng, self.size
        if self.pool is not None and rng.random() < self.mosaic_prob:
            extra = (rng.integers(0, len(self.pool), 3) if self.pool_p is None
                     else rng.choice(len(self.pool), 3, p=self.pool_p))
            sources = [d] + [self.pool[i] for i in extra]
            canvas_hw = (2 * s, 2 * s)
            xc, yc = (int(rng.uniform(s / 2, 1.5 * s)) for _ in range(2))
            loaded = [self._load(x) for x in sources]
            placements = []  # (3x3 original -> canvas, tile rectangle in the canvas)
            for i, (img, _, _, _) in enumerate(loaded):
                h0, w0 = img.shape[:2]
                r = s / max(h0, w0)
                h, w = max(1, round(h0 * r)), max(1, round(w0 * r))
                if i == 0:
                    x1a, y1a, x2a, y2a = max(xc - w, 0), max(yc - h, 0), xc, yc
                    x1b, y1b = w - (x2a - x1a), h - (y2a - y1a)
                elif i == 1:
                    x1a, y1a, x2a, y2a = xc, max(yc - h, 0), min(xc + w, 2 * s), yc
                    x1b, y1b = 0, h - (y2a - y1a)
                elif i == 2:
                    x1a, y1a, x2a, y2a = max(xc - w, 0), yc, xc, min(2 * s, yc + h)
                    x1b, y1b = w - (x2a - x1a), 0
                else:
                    x1a, y1a, x2a, y2a = xc, yc, min(xc + w, 2 * s), min(2 * s, yc + h)
                    x1b, y1b = 0, 0
                placements.append((_scale_matrix(r, x1a - x1b, y1a - y1b), (x1a, y1a, x2a, y2a)))
        else:
            loaded = [self._load(d)]
            h0, w0 = loaded[0][0].shape[:2]
            r = s / max(h0, w0)
            h, w = max(1, round(h0 * r)), max(1, round(w0 * r))
            top, left = (s - h) // 2, (s - w) // 2
            canvas_hw = (s, s)
            placements = [(_scale_matrix(r, left, top), (left, top, left + w, top + h))]

        M, scale = random_affine_matrix(rng, canvas_hw, s, self.degrees, self.translate, self.scale, self.shear)
        if rng.random() < self.flip_lr:
            M = np.array([[-1, 0, s - 1], [0, 1, 0], [0, 0, 1]], dtype=np.float64) @ M
        if rng.random() < self.flip_ud:
            M = np.array([[1, 0, 0], [0, -1, s - 1], [0, 0, 1]], dtype=np.float64) @ M

        # which source covers each output pixel: map output pixel centres back to the canvas
        Minv = np.linalg.inv(M)
        gy, gx = np.mgrid[0:s, 0:s].astype(np.float64)
        cxs = Minv[0, 0] * gx + Minv[0, 1] * gy + Minv[0, 2]
        cys = Minv[1, 0] * gx + Minv[1, 1] * gy + Minv[1, 2]
        pad = self.pad_value
        out = np.full((s, s, loaded[0][0].shape[2]), pad, dtype=np.uint8)
        masks_out, classes_out, boxes_before = [], [], []
        for (img, masks, classes, boxes), (A, (x1, y1, x2, y2)) in zip(loaded, placements):
            Mi = (M @ A)[:2]
            cover = (cxs >= x1 - 0.5) & (cxs < x2 - 0.5) & (cys >= y1 - 0.5) & (cys < y2 - 0.5)
            if not cover.any():
                continue
            warped = cv2.warpAffine(img, Mi, (s, s), flags=cv2.INTER_LINEAR, borderValue=(pad, pad, pad))
            if warped.ndim == 2:
                warped = warped[..., None]
            out[cover] = warped[cover]
            if not masks:
                continue
            stack = np.stack(masks, -1) * 255
            warped_m = np.concatenate(
                [cv2.warpAffine(stack[..., j:j + 512], Mi, (s, s), flags=cv2.INTER_LINEAR, borderValue=0).reshape(s, s, -1)
                 for j in range(0, stack.shape[-1], 512)], -1
            )
            warped_m = (warped_m > 127) & cover[..., None]
            masks_out.append(warped_m.transpose(2, 0, 1))
            classes_out += classes
            # the box before the affine: in the canvas, clipped to the tile, times the affine scale
            # (box corners are pixel edges: x -> r x + t, without the pixel-centre offset)
            r, t = A[0, 0], A[:2, 2] - 0.5 * (A[0, 0] - 1)
            bb = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
            bb = np.concatenate([bb[:, :2] * r + t, bb[:, 2:] * r + t], 1)
            bb[:, 0::2] = bb[:, 0::2].clip(x1, x2)
            bb[:, 1::2] = bb[:, 1::2].clip(y1, y2)
            boxes_before.append(bb * scale)

        image = hsv_jitter(out, rng, *self.hsv, fmt=self.format) if out.shape[2] == 3 else out
        if masks_out:
            masks_np = np.concatenate(masks_out, 0)
            new_boxes, keep = self._boxes_and_filter(masks_np, np.concatenate(boxes_before, 0))
            masks_np, classes_np = masks_np[keep], np.asarray(classes_out, dtype=np.int64)[keep]
            new_boxes = new_boxes[keep]
        else:
            masks_np = np.zeros((0, s, s), dtype=bool)
            classes_np = np.zeros((0,), dtype=np.int64)
            new_boxes = np.zeros((0, 4), dtype=np.float32)
        inst = Instances((s, s))
        inst.gt_boxes = Boxes(torch.as_tensor(new_boxes, dtype=torch.float32).reshape(-1, 4))
        inst.gt_classes = torch.as_tensor(classes_np, dtype=torch.int64)
        inst.gt_masks = BitMasks(torch.from_numpy(np.ascontiguousarray(masks_np)))
        out_d = {k: v for k, v in d.items() if k != "annotations"}
        out_d["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        out_d["instances"] = inst
        return out_d

    def _boxes_and_filter(self, masks: np.ndarray, boxes_before: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Tight boxes of (K, S, S) masks (xyxy, pixel edges) and the keep mask (box_candidates)."""
        rows, cols = masks.any(2), masks.any(1)  # (K, S), (K, S)
        nonempty = rows.any(1)
        s = masks.shape[1]
        idx = np.arange(s)
        y1 = np.where(rows, idx, s).min(1)
        y2 = np.where(rows, idx, -1).max(1) + 1
        x1 = np.where(cols, idx, s).min(1)
        x2 = np.where(cols, idx, -1).max(1) + 1
        boxes = np.stack([x1, y1, x2, y2], 1).astype(np.float32)
        w2, h2 = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        w1 = boxes_before[:, 2] - boxes_before[:, 0]
        h1 = boxes_before[:, 3] - boxes_before[:, 1]
        ar = np.maximum(w2 / (h2 + 1e-16), h2 / (w2 + 1e-16))
        keep = (
            nonempty & (w2 > self.min_box) & (h2 > self.min_box)
            & (w2 * h2 / (w1 * h1 + 1e-16) > self.min_area_ratio) & (ar < self.max_aspect)
        )
        return boxes, keep

    # ------------------------------------------------------------------ test
    def _test(self, d: Dict) -> Dict:
        image = read_image_checked(d["file_name"], self.format, self.bit_depth)
        out_d = {k: v for k, v in d.items() if k != "annotations"}
        out_d.setdefault("height", image.shape[0])
        out_d.setdefault("width", image.shape[1])
        image, _ = resize_longest(image, self.size)
        if image.ndim == 2:
            image = image[..., None]
        out_d["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        return out_d

    def __call__(self, dataset_dict: Dict) -> Dict:
        d = copy.copy(dataset_dict)
        return self._train(d) if self.is_train else self._test(d)


@DATASET_MAPPER_REGISTRY.register()
def yolo(cfg, is_train: bool) -> YOLOMapper:
    """YOLO mosaic / HSV / affine / flip augmentation (train) and longest-side resize (test)."""
    return YOLOMapper(cfg, is_train)

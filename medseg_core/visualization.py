"""Prediction overlays with one fixed colour per class.

For LMSF-A's four PELD classes the paper's colours are used (Sec. IV-A: "purple: adipose;
red: bone; yellow: ligamentum flavum; green: nerve"); other class lists get a fixed palette, so
a class has the same colour in every image and in ground truth vs prediction.

Drawing is done with NumPy / OpenCV on each mask's crop (the smallest rectangle holding it), so
memory and time grow with what is drawn, not with N x H x W: Detectron2's matplotlib
``Visualizer`` allocates image-sized float RGBA buffers per mask and needed several GiB for an
8000 x 6000 frame. Masks may be dense ``(N, H, W)`` tensors or
:class:`~medseg_core.cropped_masks.CroppedMasks` (``TEST.MASK_OUTPUT "boxes"``).
"""
from __future__ import annotations

import colorsys
from typing import List, Optional, Sequence, Tuple

import numpy as np

from . import compat  # noqa: F401
from .errors import here

__all__ = [
    "PELD_COLORS", "class_colors", "draw_instances", "draw_ground_truth", "draw_semantic", "side_by_side",
    "draw_prediction", "draw_dataset_ground_truth", "semantic_labels",
]

# RGB in 0..255, keyed by normalised class name.
PELD_COLORS = {
    "adipose tissue": (160, 32, 240),
    "bone": (220, 20, 60),
    "ligamentum flavum": (255, 215, 0),
    "nerve": (0, 200, 70),
}


def _palette(n: int) -> List[Tuple[int, int, int]]:
    """Evenly spaced, saturated hues (golden-ratio stepping keeps neighbours distinct)."""
    out = []
    for i in range(n):
        r, g, b = colorsys.hsv_to_rgb((i * 0.618033988749895) % 1.0, 0.75, 0.95)
        out.append((int(r * 255), int(g * 255), int(b * 255)))
    return out


def class_colors(class_names: Sequence[str], num: int = 0) -> List[Tuple[int, int, int]]:
    """One RGB colour per class; ``num`` > len(class_names) extends the list with palette
    colours (for predicted class ids beyond the metadata's names)."""
    palette = _palette(max(len(class_names), num))
    norm = [str(c).strip().lower().replace("_", " ") for c in class_names]
    return [PELD_COLORS.get(n, palette[i]) for i, n in enumerate(norm)] + palette[len(norm):]


def _np_crop(mask: np.ndarray) -> Tuple[np.ndarray, int, int]:
    """(crop, x0, y0): the smallest rectangle of a bool array holding all its pixels."""
    rows, cols = mask.any(1), mask.any(0)
    if not rows.any():
        return mask[:0, :0], 0, 0
    r0, r1 = int(np.argmax(rows)), len(rows) - int(np.argmax(rows[::-1]))
    c0, c1 = int(np.argmax(cols)), len(cols) - int(np.argmax(cols[::-1]))
    return mask[r0:r1, c0:c1], c0, r0


def _line_width(h: int, w: int) -> int:
    return max(1, int(round(min(h, w) / 400)))


def _draw_overlays(image_rgb: np.ndarray, crops: Sequence[Tuple[np.ndarray, int, int]],
                   boxes: Optional[np.ndarray], labels: Sequence[str], colors: Sequence[Tuple[int, int, int]],
                   alpha: float = 0.45, areas: Optional[Sequence[int]] = None, rows_per_block: int = 256) -> np.ndarray:
    """Masks (cropped to their extent, blended with ``alpha``, outlined), boxes and labels drawn
    on a copy of the image; work and memory are proportional to the drawn crops, never to
    N x H x W. Larger masks are drawn first so that small ones stay visible on top. A crop may be
    a callable returning it (decoded only when drawn, one at a time); ``areas`` then orders them."""
    import cv2

    out = np.ascontiguousarray(image_rgb[..., :3] if image_rgb.ndim == 3 else np.repeat(image_rgb[..., None], 3, 2))
    out = out.copy()
    h, w = out.shape[:2]
    lw = _line_width(h, w)
    if areas is None:
        areas = [0 if callable(c) else int(c[0].sum()) for c in crops]
    order = sorted(range(len(crops)), key=lambda i: -int(areas[i]))
    for i in order:
        m, x0, y0 = crops[i] if not callable(crops[i]) else crops[i]()
        mh, mw = m.shape[:2]
        x1, y1 = min(w, x0 + mw), min(h, y0 + mh)
        if x1 <= x0 or y1 <= y0:
            continue
        m = m[: y1 - y0, : x1 - x0]
        region = out[y0:y1, x0:x1]
        for r in range(0, y1 - y0, rows_per_block):  # uint8 blend in blocks of rows: no float buffers
            blk, mb = region[r:r + rows_per_block], m[r:r + rows_per_block]
            tint = np.empty_like(blk)
            tint[:] = colors[i]
            blended = cv2.addWeighted(blk, 1 - alpha, tint, alpha, 0)
            np.copyto(blk, blended, where=mb[..., None])
        contours, _ = cv2.findContours(m.view(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        dark = tuple(int(c * 0.7) for c in colors[i])
        cv2.drawContours(region, contours, -1, dark, lw)
        del m
    scale = max(0.35, min(h, w) / 900.0)
    for i in range(len(labels)):
        color = tuple(int(c) for c in colors[i])
        if boxes is not None and i < len(boxes):
            bx0, by0, bx1, by1 = (int(round(float(v))) for v in boxes[i])
            cv2.rectangle(out, (bx0, by0), (bx1, by1), color, lw)
            tx, ty = bx0, by0
        elif not callable(crops[i]):
            _, tx, ty = crops[i]
        else:
            continue
        if not labels[i]:
            continue
        (tw, th), base = cv2.getTextSize(labels[i], cv2.FONT_HERSHEY_SIMPLEX, scale, lw)
        ty = ty - th - base - 2 if ty - th - base - 2 >= 0 else ty
        tx = min(max(tx, 0), max(w - tw, 0))
        cv2.rectangle(out, (tx, ty), (tx + tw, ty + th + base + 2), color, -1)
        ink = (0, 0, 0) if sum(color) > 380 else (255, 255, 255)
        cv2.putText(out, labels[i], (tx, ty + th + 1), cv2.FONT_HERSHEY_SIMPLEX, scale, ink, lw, cv2.LINE_AA)
    return out


def draw_instances(image_rgb: np.ndarray, instances, metadata, score_thresh: float = 0.0) -> np.ndarray:
    """Draw predicted ``Instances`` (boxes, masks, "class score" labels) on an RGB image.

    ``pred_masks`` may be a (N, H, W) tensor or :class:`~medseg_core.cropped_masks.CroppedMasks`;
    only instances scoring at least ``score_thresh`` are touched."""
    from .cropped_masks import CroppedMasks, mask_crop

    names = list(metadata.get("thing_classes", []))
    if instances.has("scores"):
        instances = instances[instances.scores >= score_thresh]
    instances = instances.to("cpu")
    classes = instances.pred_classes.tolist() if instances.has("pred_classes") else []
    colors = class_colors(names, max(classes, default=-1) + 1)
    scores = instances.scores.tolist() if instances.has("scores") else [None] * len(classes)
    labels = [f"{names[c] if c < len(names) else c} {s:.2f}" if s is not None else str(c) for c, s in zip(classes, scores)]
    boxes = instances.pred_boxes.tensor.numpy() if instances.has("pred_boxes") else None
    if instances.has("pred_masks"):
        masks = instances.pred_masks
        crops = [lambda i=i: mask_crop(masks, i) for i in range(len(instances))]  # decoded when drawn
        areas = masks.area().tolist() if isinstance(masks, CroppedMasks) else masks.flatten(1).sum(1).tolist()
    else:
        crops, areas = [(np.zeros((0, 0), bool), 0, 0)] * len(classes), None
    return _draw_overlays(image_rgb, crops, boxes, labels, [colors[c] for c in classes], areas=areas)


def _annotation_crop(seg, h: int, w: int) -> Tuple[np.ndarray, int, int]:
    """One annotation's mask cropped to its extent (polygons rasterised inside their bounds only)."""
    import cv2
    import pycocotools.mask as mask_util

    if isinstance(seg, dict):
        rle = seg if isinstance(seg.get("counts"), (bytes, str)) else mask_util.frPyObjects(seg, h, w)
        return _np_crop(mask_util.decode(rle).astype(bool))
    if isinstance(seg, list) and seg:
        pts = [np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in seg]
        allp = np.concatenate(pts)
        x0, y0 = max(int(np.floor(allp[:, 0].min())), 0), max(int(np.floor(allp[:, 1].min())), 0)
        x1, y1 = min(int(np.ceil(allp[:, 0].max())) + 1, w), min(int(np.ceil(allp[:, 1].max())) + 1, h)
        if x1 <= x0 or y1 <= y0:
            return np.zeros((0, 0), bool), 0, 0
        crop = np.zeros((y1 - y0, x1 - x0), np.uint8)
        cv2.fillPoly(crop, [np.round(p - [x0, y0]).astype(np.int32) for p in pts], 1)
        return crop.astype(bool), x0, y0
    return np.zeros((0, 0), bool), 0, 0


def draw_ground_truth(image_rgb: np.ndarray, dataset_dict: dict, metadata) -> np.ndarray:
    """Draw a Detectron2 dataset dict's annotations with the same class colours."""
    from detectron2.structures import BoxMode

    names = list(metadata.get("thing_classes", []))
    colors = class_colors(names, max([a["category_id"] for a in dataset_dict.get("annotations", [])], default=-1) + 1)
    h, w = image_rgb.shape[:2]
    crops, boxes, classes = [], [], []
    for a in dataset_dict.get("annotations", []):
        box = BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS)
        crops.append(_annotation_crop(a.get("segmentation"), h, w))
        boxes.append(box)
        classes.append(a["category_id"])
    labels = [names[c] if c < len(names) else str(c) for c in classes]
    return _draw_overlays(image_rgb, crops, np.array(boxes) if boxes else None, labels, [colors[c] for c in classes])


def draw_semantic(image_rgb: np.ndarray, label_map: np.ndarray, class_names: Sequence[str],
                  ignore_label: int = 255, alpha: float = 0.5, skip_background: bool = True,
                  rows_per_block: int = 256) -> np.ndarray:
    """Blend a label map (H x W class ids) over an RGB image; class 0 is left clear when
    ``skip_background``. Blocks of rows bound the float work buffers on big images."""
    colors = np.array(class_colors(class_names), dtype=np.float32)
    k = len(class_names)
    out = np.ascontiguousarray(image_rgb).copy()
    for r in range(0, out.shape[0], rows_per_block):
        lab = label_map[r:r + rows_per_block]
        sel = (lab >= (1 if skip_background else 0)) & (lab < k) & (lab != ignore_label)
        if not sel.any():
            continue
        block = out[r:r + rows_per_block]
        block[sel] = np.clip((1 - alpha) * block[sel].astype(np.float32) + alpha * colors[lab[sel]], 0, 255
                             ).astype(np.uint8)
    return out


def side_by_side(left: np.ndarray, right: np.ndarray, gap: int = 8) -> np.ndarray:
    h = max(left.shape[0], right.shape[0])
    canvas = np.full((h, left.shape[1] + gap + right.shape[1], 3), 255, np.uint8)
    canvas[: left.shape[0], : left.shape[1]] = left
    canvas[: right.shape[0], left.shape[1] + gap:] = right
    return canvas


def semantic_labels(sem_seg) -> np.ndarray:
    """(K, H, W) class scores (tensor or array) -> (H, W) int64 label map (argmax over K).

    LGMSNet's binary one-logit models return the scores ``[0, z]``, so the argmax is the
    sigmoid-0.5 decision there too."""
    scores = sem_seg.detach().cpu().numpy() if hasattr(sem_seg, "detach") else np.asarray(sem_seg)
    if scores.ndim != 3:
        raise ValueError(here() + f"sem_seg must be (K, H, W), got shape {scores.shape}")
    return scores.argmax(0).astype(np.int64)


def _stuff_names(metadata, num: int) -> List[str]:
    names = list(metadata.get("stuff_classes", None) or [])
    return names + [f"class {i}" for i in range(len(names), num)]


def draw_prediction(image_rgb: np.ndarray, prediction: dict, metadata, score_thresh: float = 0.0) -> np.ndarray:
    """Draw one model output dict: ``"instances"`` (instance models) take precedence over
    ``"sem_seg"`` (semantic models, drawn as a class overlay with background left clear)."""
    if "instances" in prediction:
        return draw_instances(image_rgb, prediction["instances"], metadata, score_thresh)
    if "sem_seg" in prediction:
        labels = semantic_labels(prediction["sem_seg"])
        k = int(prediction["sem_seg"].shape[0])
        return draw_semantic(image_rgb, labels, _stuff_names(metadata, k), metadata.get("ignore_label", 255))
    raise ValueError(
        here() + f"cannot draw a prediction with keys {sorted(prediction)} "
        "(expected 'instances' or 'sem_seg')"
    )


def draw_dataset_ground_truth(image_rgb: np.ndarray, dataset_dict: dict, metadata) -> np.ndarray:
    """Ground truth of a Detectron2 dataset dict: instance annotations, or the label mask of a
    semantic record (decoded as the semantic mapper does: value map / threshold / ignore)."""
    if "annotations" in dataset_dict:
        return draw_ground_truth(image_rgb, dataset_dict, metadata)
    if "sem_seg_file_name" in dataset_dict:
        from .data.mappers import read_record_mask

        names = list(metadata.get("stuff_classes", None) or [])
        ignore = dataset_dict.get("ignore_label", metadata.get("ignore_label", 255))
        num_classes = dataset_dict.get("num_classes", len(names) or 256)
        label = read_record_mask(dataset_dict, image_rgb.shape, num_classes, ignore)
        k = max(len(names), int(label[label != ignore].max(initial=0)) + 1)
        return draw_semantic(image_rgb, label, _stuff_names(metadata, k), ignore)
    raise ValueError(
        f"{dataset_dict.get('file_name', 'dataset dict')}: has neither 'annotations' nor "
        "'sem_seg_file_name': no ground truth to draw"
    )

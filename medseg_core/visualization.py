"""Prediction overlays with one fixed colour per class (Detectron2's Visualizer underneath).

For LMSF-A's four PELD classes the paper's colours are used (Sec. IV-A: "purple: adipose;
red: bone; yellow: ligamentum flavum; green: nerve"); other class lists get a fixed palette, so
a class has the same colour in every image and in ground truth vs prediction.
"""
from __future__ import annotations

import colorsys
from typing import List, Optional, Sequence, Tuple

import numpy as np

from . import compat  # noqa: F401

from detectron2.utils.visualizer import ColorMode, Visualizer

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


def _visualizer(image_rgb: np.ndarray, metadata) -> Visualizer:
    return Visualizer(image_rgb, metadata, scale=1.0, instance_mode=ColorMode.IMAGE)


def draw_instances(image_rgb: np.ndarray, instances, metadata, score_thresh: float = 0.0) -> np.ndarray:
    """Draw predicted ``Instances`` (boxes, masks, "class score" labels) on an RGB image."""
    names = list(metadata.get("thing_classes", []))
    instances = instances.to("cpu")
    if instances.has("scores"):
        instances = instances[instances.scores >= score_thresh]
    classes = instances.pred_classes.tolist() if instances.has("pred_classes") else []
    colors = class_colors(names, max(classes, default=-1) + 1)
    scores = instances.scores.tolist() if instances.has("scores") else [None] * len(classes)
    labels = [f"{names[c] if c < len(names) else c} {s:.2f}" if s is not None else str(c) for c, s in zip(classes, scores)]
    masks = instances.pred_masks.numpy() if instances.has("pred_masks") else None
    boxes = instances.pred_boxes.tensor.numpy() if instances.has("pred_boxes") else None
    vis = _visualizer(image_rgb, metadata)
    out = vis.overlay_instances(
        boxes=boxes, masks=masks, labels=labels,
        assigned_colors=[np.array(colors[c]) / 255.0 for c in classes] if classes else None,
        alpha=0.45,
    )
    return out.get_image()


def draw_ground_truth(image_rgb: np.ndarray, dataset_dict: dict, metadata) -> np.ndarray:
    """Draw a Detectron2 dataset dict's annotations with the same class colours."""
    from detectron2.structures import BoxMode
    import pycocotools.mask as mask_util

    names = list(metadata.get("thing_classes", []))
    colors = class_colors(names)
    anns = dataset_dict.get("annotations", [])
    h, w = image_rgb.shape[:2]
    masks, boxes, classes = [], [], []
    for a in anns:
        seg = a.get("segmentation")
        if isinstance(seg, dict):
            rle = seg if isinstance(seg.get("counts"), (bytes, str)) else mask_util.frPyObjects(seg, h, w)
            masks.append(mask_util.decode(rle).astype(bool))
        elif isinstance(seg, list) and seg:
            masks.append(mask_util.decode(mask_util.merge(mask_util.frPyObjects(seg, h, w))).astype(bool))
        else:
            masks.append(np.zeros((h, w), bool))
        boxes.append(BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS))
        classes.append(a["category_id"])
    vis = _visualizer(image_rgb, metadata)
    out = vis.overlay_instances(
        boxes=np.array(boxes) if boxes else None, masks=masks or None,
        labels=[names[c] for c in classes] if classes else None,
        assigned_colors=[np.array(colors[c]) / 255.0 for c in classes] if classes else None,
        alpha=0.45,
    )
    return out.get_image()


def draw_semantic(image_rgb: np.ndarray, label_map: np.ndarray, class_names: Sequence[str],
                  ignore_label: int = 255, alpha: float = 0.5, skip_background: bool = True) -> np.ndarray:
    """Blend a label map (H x W class ids) over an RGB image; class 0 is left clear when
    ``skip_background``."""
    colors = np.array(class_colors(class_names), dtype=np.float32)
    out = image_rgb.astype(np.float32).copy()
    for c in range(len(class_names)):
        if skip_background and c == 0:
            continue
        sel = label_map == c
        out[sel] = (1 - alpha) * out[sel] + alpha * colors[c]
    return np.clip(out, 0, 255).astype(np.uint8)


def side_by_side(left: np.ndarray, right: np.ndarray, gap: int = 8) -> np.ndarray:
    h = max(left.shape[0], right.shape[0])
    canvas = np.full((h, left.shape[1] + gap + right.shape[1], 3), 255, np.uint8)
    canvas[: left.shape[0], : left.shape[1]] = left
    canvas[: right.shape[0], left.shape[1] + gap:] = right
    return canvas


def set_metadata_colors(metadata, class_names: Optional[Sequence[str]] = None) -> None:
    """Store the class colours as ``thing_colors`` for Detectron2 tools that read them."""
    names = class_names or metadata.get("thing_classes", [])
    if names and metadata.get("thing_colors") is None:
        metadata.thing_colors = [list(c) for c in class_colors(names)]


def semantic_labels(sem_seg) -> np.ndarray:
    """(K, H, W) class scores (tensor or array) -> (H, W) int64 label map (argmax over K).

    LGMSNet's binary one-logit models return the scores ``[0, z]``, so the argmax is the
    sigmoid-0.5 decision there too."""
    scores = sem_seg.detach().cpu().numpy() if hasattr(sem_seg, "detach") else np.asarray(sem_seg)
    if scores.ndim != 3:
        raise ValueError(f"medseg_core/visualization.py: sem_seg must be (K, H, W), got shape {scores.shape}")
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
        f"medseg_core/visualization.py: cannot draw a prediction with keys {sorted(prediction)} "
        "(expected 'instances' or 'sem_seg')"
    )


def draw_dataset_ground_truth(image_rgb: np.ndarray, dataset_dict: dict, metadata) -> np.ndarray:
    """Ground truth of a Detectron2 dataset dict: instance annotations, or the label mask of a
    semantic record (decoded as the semantic mapper does: value map / threshold / ignore)."""
    if "annotations" in dataset_dict:
        return draw_ground_truth(image_rgb, dataset_dict, metadata)
    if "sem_seg_file_name" in dataset_dict:
        from .data.mappers import read_label_mask

        names = list(metadata.get("stuff_classes", None) or [])
        ignore = dataset_dict.get("ignore_label", metadata.get("ignore_label", 255))
        label = read_label_mask(
            dataset_dict["sem_seg_file_name"],
            num_classes=dataset_dict.get("num_classes", len(names) or 256),
            ignore_label=ignore,
            value_map=dataset_dict.get("mask_value_map"),
            threshold=dataset_dict.get("mask_threshold"),
        )
        if label.shape != image_rgb.shape[:2]:
            raise ValueError(
                f"{dataset_dict['sem_seg_file_name']}: mask is {label.shape[0]}x{label.shape[1]} but the "
                f"image {dataset_dict.get('file_name')} is {image_rgb.shape[0]}x{image_rgb.shape[1]}"
            )
        k = max(len(names), int(label[label != ignore].max(initial=0)) + 1)
        return draw_semantic(image_rgb, label, _stuff_names(metadata, k), ignore)
    raise ValueError(
        f"{dataset_dict.get('file_name', 'dataset dict')}: has neither 'annotations' nor "
        "'sem_seg_file_name': no ground truth to draw"
    )

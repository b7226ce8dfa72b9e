"""LabelMe JSON -> COCO instance segmentation converter.

The PELD spinal-endoscopy data that LMSF-A was published on is annotated in LabelMe (one JSON
per frame, polygons labelled adipose tissue / bone / ligamentum flavum / nerve). This converter
turns a folder of such files into one COCO file that :func:`register_coco_instances_checked`
reads.

Rules:

* ``polygon`` shapes become polygons; ``rectangle`` a 4-point polygon; ``circle`` a 32-gon;
  ``mask`` shapes (LabelMe >= 5, a base64 PNG inside the box given by ``points``) become
  compressed RLE. Points, lines and line strips carry no area and are skipped with a warning.
* Shapes sharing a ``label`` and a non-null ``group_id`` form one instance (an object split by
  an occluding instrument); every other shape is its own instance.
* Labels are matched to ``classes`` case-insensitively, ignoring ``_``/``-``/spaces, and through
  ``aliases`` (PELD's own tables say "Adiposity" and "Ligament"). An unknown label is an error
  naming the file, unless ``skip_unknown``.
* The image is found from ``imagePath`` next to the JSON (or a same-named image); if it is not
  on disk but ``imageData`` is embedded, it is written to ``image_root``.
"""
from __future__ import annotations

import base64
import io
import logging
import math
import os
import re
import shutil
from typing import Dict, Iterable, List, Optional, Sequence

import numpy as np
import pycocotools.mask as mask_util
from PIL import Image

from ..atomic import atomic_write_json
from ..errors import DatasetError
from .registration import IMAGE_EXTS
from .validation import image_size_from_header, read_json

logger = logging.getLogger(__name__)

__all__ = ["PELD_CLASSES", "PELD_ALIASES", "convert_labelme_folder", "labelme_to_coco"]

PELD_CLASSES = ["adipose tissue", "bone", "ligamentum flavum", "nerve"]
PELD_ALIASES = {
    "adipose": "adipose tissue",
    "adiposity": "adipose tissue",
    "fat": "adipose tissue",
    "ligament": "ligamentum flavum",
    "lf": "ligamentum flavum",
}


def _norm(label: str) -> str:
    return re.sub(r"[\s_\-]+", " ", str(label).strip().lower())


def _class_lookup(classes: Sequence[str], aliases: Optional[Dict[str, str]]) -> Dict[str, int]:
    table = {_norm(c): i + 1 for i, c in enumerate(classes)}
    for alias, target in (aliases or {}).items():
        if _norm(target) not in table:
            raise ValueError(f"alias '{alias}' points to unknown class '{target}'")
        table[_norm(alias)] = table[_norm(target)]
    return table


def _polygon_from_shape(shape: Dict, json_path: str) -> Optional[List[float]]:
    kind = shape.get("shape_type") or "polygon"
    pts = shape.get("points") or []
    try:
        pts = [(float(p[0]), float(p[1])) for p in pts]
    except (TypeError, ValueError, IndexError) as e:
        raise DatasetError(f"{json_path}: shape '{shape.get('label')}' has malformed points") from e
    if kind == "polygon":
        if len(pts) < 3:
            raise DatasetError(f"{json_path}: polygon '{shape.get('label')}' has fewer than 3 points")
    elif kind == "rectangle":
        (x0, y0), (x1, y1) = pts[0], pts[1]
        pts = [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
    elif kind == "circle":
        (cx, cy), (px, py) = pts[0], pts[1]
        r = math.hypot(px - cx, py - cy)
        pts = [(cx + r * math.cos(2 * math.pi * k / 32), cy + r * math.sin(2 * math.pi * k / 32)) for k in range(32)]
    else:
        return None
    return [c for p in pts for c in p]


def _mask_from_shape(shape: Dict, height: int, width: int, json_path: str) -> np.ndarray:
    try:
        small = np.array(Image.open(io.BytesIO(base64.b64decode(shape["mask"]))).convert("L")) > 0
    except Exception as e:  # noqa: BLE001 - any decode failure is a data error
        raise DatasetError(f"{json_path}: mask shape '{shape.get('label')}' cannot be decoded ({e})") from e
    (x0, y0) = [int(round(v)) for v in shape["points"][0]]
    full = np.zeros((height, width), dtype=np.uint8)
    h, w = small.shape
    y1, x1 = min(height, y0 + h), min(width, x0 + w)
    full[y0:y1, x0:x1] = small[: y1 - y0, : x1 - x0]
    return full


def _find_image(json_path: str, record: Dict) -> Optional[str]:
    folder = os.path.dirname(json_path)
    candidates = []
    if record.get("imagePath"):
        candidates.append(os.path.normpath(os.path.join(folder, record["imagePath"].replace("\\", "/"))))
    stem = os.path.splitext(json_path)[0]
    candidates += [stem + ext for ext in IMAGE_EXTS] + [stem + ext.upper() for ext in IMAGE_EXTS]
    for c in candidates:
        if os.path.isfile(c):
            return c
    return None


def labelme_to_coco(
    json_paths: Iterable[str],
    image_root: str,
    classes: Sequence[str] = PELD_CLASSES,
    aliases: Optional[Dict[str, str]] = PELD_ALIASES,
    skip_unknown: bool = False,
    copy_images: bool = False,
) -> Dict:
    """Convert LabelMe files into one COCO dict whose ``file_name``\\ s are relative to ``image_root``.

    With ``copy_images`` every image is copied into ``image_root``; otherwise images must
    already lie under it (the usual case: JSONs next to their images in ``image_root``).
    """
    lookup = _class_lookup(classes, aliases)
    coco = {
        "info": {"description": "converted from LabelMe by medseg_core.data.labelme"},
        "images": [], "annotations": [],
        "categories": [{"id": i + 1, "name": c, "supercategory": "anatomy"} for i, c in enumerate(classes)],
    }
    os.makedirs(image_root, exist_ok=True)
    ann_id = 1
    for img_id, json_path in enumerate(sorted(json_paths), start=1):
        rec = read_json(json_path)
        if not isinstance(rec, dict) or not isinstance(rec.get("shapes"), list):
            raise DatasetError(f"{json_path}: not a LabelMe file (no 'shapes' list)")
        image_path = _find_image(json_path, rec)
        if image_path is None:
            if not rec.get("imageData"):
                raise DatasetError(
                    f"{json_path}: image '{rec.get('imagePath')}' not found and no imageData embedded"
                )
            name = os.path.splitext(os.path.basename(json_path))[0] + ".png"
            image_path = os.path.join(image_root, name)
            try:
                Image.open(io.BytesIO(base64.b64decode(rec["imageData"]))).save(image_path)
            except Exception as e:  # noqa: BLE001
                raise DatasetError(f"{json_path}: embedded imageData cannot be decoded ({e})") from e
        elif copy_images:
            dst = os.path.join(image_root, os.path.basename(image_path))
            if os.path.abspath(dst) != os.path.abspath(image_path):
                shutil.copy2(image_path, dst)
            image_path = dst
        rel = os.path.relpath(image_path, image_root)
        if rel.startswith(".."):
            raise DatasetError(f"{image_path}: image is not under image_root {image_root} (use copy_images)")
        h, w = image_size_from_header(image_path)
        for key, val in (("imageHeight", h), ("imageWidth", w)):
            if rec.get(key) not in (None, val):
                raise DatasetError(f"{json_path}: {key}={rec[key]} but the image {image_path} has {val}")
        coco["images"].append({"id": img_id, "file_name": rel.replace(os.sep, "/"), "height": h, "width": w})

        groups: Dict[tuple, Dict] = {}
        for k, shape in enumerate(rec["shapes"]):
            label = shape.get("label", "")
            cat = lookup.get(_norm(label))
            if cat is None:
                if skip_unknown:
                    logger.warning("%s: skipping unknown label '%s'", json_path, label)
                    continue
                raise DatasetError(
                    f"{json_path}: label '{label}' is not one of the classes {list(classes)} "
                    "(pass a class list / aliases, or skip_unknown=True)"
                )
            gid = shape.get("group_id")
            key = (cat, gid) if gid is not None else (cat, f"shape{k}")
            g = groups.setdefault(key, {"category_id": cat, "polygons": [], "masks": []})
            if (shape.get("shape_type") or "polygon") == "mask":
                g["masks"].append(_mask_from_shape(shape, h, w, json_path))
                continue
            poly = _polygon_from_shape(shape, json_path)
            if poly is None:
                logger.warning("%s: skipping '%s' shape '%s' (no area)", json_path, shape.get("shape_type"), label)
                continue
            g["polygons"].append(poly)
        for g in groups.values():
            if not g["polygons"] and not g["masks"]:
                continue
            if g["masks"]:
                m = np.zeros((h, w), dtype=np.uint8)
                for mm in g["masks"]:
                    m |= mm
                if g["polygons"]:
                    m |= mask_util.decode(mask_util.merge(mask_util.frPyObjects(g["polygons"], h, w)))
                rle = mask_util.encode(np.asfortranarray(m))
                rle["counts"] = rle["counts"].decode("ascii")
                seg = rle
                rle_for_stats = mask_util.encode(np.asfortranarray(m))
            else:
                seg = g["polygons"]
                rle_for_stats = mask_util.merge(mask_util.frPyObjects(seg, h, w))
            area = float(mask_util.area(rle_for_stats))
            if area <= 0:
                logger.warning("%s: skipping an empty instance of class %d", json_path, g["category_id"])
                continue
            x, y, bw, bh = [float(v) for v in mask_util.toBbox(rle_for_stats)]
            coco["annotations"].append({
                "id": ann_id, "image_id": img_id, "category_id": g["category_id"],
                "segmentation": seg, "area": area, "bbox": [x, y, bw, bh], "iscrowd": 0,
            })
            ann_id += 1
    if not coco["images"]:
        raise DatasetError(f"{image_root}: no LabelMe files to convert")
    return coco


def _is_coco(path: str) -> bool:
    try:
        with open(path) as f:
            head = f.read(4096)
    except OSError:
        return False
    return '"shapes"' not in head and '"annotations"' in head and '"categories"' in head


def convert_labelme_folder(
    folder: str,
    out_json: str,
    classes: Sequence[str] = PELD_CLASSES,
    aliases: Optional[Dict[str, str]] = PELD_ALIASES,
    skip_unknown: bool = False,
) -> Dict:
    """Convert every ``*.json`` in ``folder`` (recursively); images stay where they are."""
    paths = []
    for dirpath, _, files in os.walk(folder):
        paths += [os.path.join(dirpath, f) for f in files if f.endswith(".json")]
    # never read our own outputs (COCO files written into the same folder) as LabelMe
    paths = [p for p in paths if os.path.abspath(p) != os.path.abspath(out_json) and not _is_coco(p)]
    if not paths:
        raise DatasetError(f"{folder}: no LabelMe .json files found")
    coco = labelme_to_coco(paths, folder, classes, aliases, skip_unknown)
    os.makedirs(os.path.dirname(os.path.abspath(out_json)), exist_ok=True)
    atomic_write_json(out_json, coco)
    logger.info("Wrote %s: %d images, %d instances", out_json, len(coco["images"]), len(coco["annotations"]))
    return coco

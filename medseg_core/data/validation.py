"""Checks that turn bad data into clear errors before training starts.

Every error is a :class:`~medseg_core.errors.DatasetError` whose message starts with the path
of the offending file and says what is wrong with it.
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional, Tuple

from PIL import Image, UnidentifiedImageError

from ..errors import DatasetError

__all__ = ["read_json", "validate_coco_dict", "image_size_from_header", "check_image_file"]


def read_json(path: str) -> Any:
    if not os.path.isfile(path):
        raise DatasetError(f"{path}: annotation file does not exist")
    try:
        with open(path, "r", encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path}: not valid JSON ({e})") from e
    except UnicodeDecodeError as e:
        raise DatasetError(f"{path}: not a UTF-8 text file ({e})") from e


def image_size_from_header(path: str) -> Tuple[int, int]:
    """(height, width) of an image, reading only its header."""
    if not os.path.isfile(path):
        raise DatasetError(f"{path}: image file does not exist")
    try:
        with Image.open(path) as im:
            w, h = im.size
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise DatasetError(f"{path}: not a readable image ({e})") from e
    return h, w


def check_image_file(path: str, expected_hw: Optional[Tuple[int, int]] = None) -> Tuple[int, int]:
    hw = image_size_from_header(path)
    if expected_hw is not None and tuple(expected_hw) != hw:
        raise DatasetError(
            f"{path}: image is {hw[0]}x{hw[1]} (HxW) but its annotation says "
            f"{expected_hw[0]}x{expected_hw[1]}"
        )
    return hw


def _require(cond: bool, json_file: str, msg: str) -> None:
    if not cond:
        raise DatasetError(f"{json_file}: not valid COCO: {msg}")


def _check_segmentation(seg: Any, img: Dict, ann_id: Any, json_file: str) -> str:
    """Return "polygon", "rle" or "none" for one annotation's segmentation."""
    if seg is None or (isinstance(seg, list) and len(seg) == 0):
        return "none"
    if isinstance(seg, dict):
        _require(
            "counts" in seg and "size" in seg,
            json_file,
            f"annotation {ann_id}: RLE segmentation needs 'counts' and 'size'",
        )
        size = list(seg["size"])
        if size != [img["height"], img["width"]]:
            raise DatasetError(
                f"{json_file}: annotation {ann_id}: mask size {size[0]}x{size[1]} does not match "
                f"image {img['file_name']} ({img['height']}x{img['width']})"
            )
        return "rle"
    _require(isinstance(seg, list), json_file, f"annotation {ann_id}: bad segmentation type")
    for poly in seg:
        _require(
            isinstance(poly, list) and len(poly) >= 6 and len(poly) % 2 == 0,
            json_file,
            f"annotation {ann_id}: a polygon needs an even number (>= 6) of coordinates",
        )
    return "polygon"


def validate_coco_dict(data: Any, json_file: str, image_root: Optional[str] = None) -> Dict:
    """Validate a COCO instance annotation dict. Returns a summary.

    Checks the structure, unique ids, that every annotation refers to a listed image and a
    listed category, mask sizes, and (with ``image_root``) that every image file exists with
    the declared size. Images without annotations are allowed.
    """
    _require(isinstance(data, dict), json_file, "top level must be an object")
    for key in ("images", "annotations", "categories"):
        _require(key in data, json_file, f"missing '{key}'")
        _require(isinstance(data[key], list), json_file, f"'{key}' must be a list")
    _require(len(data["categories"]) > 0, json_file, "'categories' is empty")
    cat_ids = set()
    for c in data["categories"]:
        _require(isinstance(c, dict) and "id" in c and "name" in c, json_file,
                 "every category needs 'id' and 'name'")
        _require(c["id"] not in cat_ids, json_file, f"duplicate category id {c['id']}")
        cat_ids.add(c["id"])
    images: Dict[Any, Dict] = {}
    for im in data["images"]:
        _require(isinstance(im, dict), json_file, "every image entry must be an object")
        for key in ("id", "file_name", "height", "width"):
            _require(key in im, json_file, f"image entry {im.get('id', '?')} has no '{key}'")
        _require(im["id"] not in images, json_file, f"duplicate image id {im['id']}")
        images[im["id"]] = im
    if not images:
        raise DatasetError(f"{json_file}: data set is empty (no images)")
    kinds = {"polygon": 0, "rle": 0, "none": 0}
    ann_ids = set()
    for a in data["annotations"]:
        _require(isinstance(a, dict), json_file, "every annotation must be an object")
        aid = a.get("id", "?")
        _require("id" in a and aid not in ann_ids, json_file, f"annotation id {aid} missing or duplicated")
        ann_ids.add(aid)
        _require("image_id" in a and a["image_id"] in images, json_file,
                 f"annotation {aid} refers to image id {a.get('image_id')} which is not listed")
        if a.get("category_id") not in cat_ids:
            raise DatasetError(
                f"{json_file}: annotation {aid} has category id {a.get('category_id')}, which "
                f"is not in the category list {sorted(cat_ids)}"
            )
        bbox = a.get("bbox")
        _require(isinstance(bbox, list) and len(bbox) == 4, json_file,
                 f"annotation {aid} needs 'bbox' as [x, y, w, h]")
        kinds[_check_segmentation(a.get("segmentation"), images[a["image_id"]], aid, json_file)] += 1
    if image_root is not None:
        for im in images.values():
            check_image_file(os.path.join(image_root, im["file_name"]), (im["height"], im["width"]))
    return {
        "num_images": len(images),
        "num_annotations": len(data["annotations"]),
        "segmentation_kinds": kinds,
        "category_ids": sorted(cat_ids),
    }


def mask_format_of(kinds: Dict[str, int]) -> str:
    """Detectron2 INPUT.MASK_FORMAT able to read every annotation of a data set."""
    return "bitmask" if kinds.get("rle", 0) > 0 else "polygon"


def list_missing(paths: List[str]) -> List[str]:
    return [p for p in paths if not os.path.isfile(p)]

"""Checks that turn bad data into clear errors before training starts.

Every error is a :class:`~medseg_core.errors.DatasetError` whose message starts with the path
of the offending file and says what is wrong with it; when several problems are found they are
all reported at once (``details``, one line each).

* :func:`validate_coco_dict`: the COCO structure, ids, categories, and every annotation's numbers:
  boxes (finite, non-negative size, inside the image), polygons (finite coordinates, at least 3
  points, inside the image), RLE masks (decoded: the run lengths must cover exactly
  height x width pixels; an invalid ``counts`` string would otherwise be read past the end of the
  mask by pycocotools); the verdicts for the RLEs are cached with the file checks. With
  ``image_root``, every image is decoded (:mod:`.file_checks`) and its size as displayed compared
  with the annotation's.
* :func:`check_semantic_files` / :func:`check_volume_files`: every image / mask / volume decoded,
  sizes of pairs compared, label values checked against the class list (a value that is neither a
  class id, a mapped value nor the ignore label is an error, not silently ignored).
* :func:`check_training_content`: a training set without a single instance / foreground pixel.
"""
from __future__ import annotations

import json
import logging
import math
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import DatasetError
from .file_checks import allowed_label_values, foreground_values, raise_problems, run_file_checks

__all__ = [
    "read_json", "validate_coco_dict", "image_size_from_header", "check_image_file", "rle_problem",
    "check_coco_images", "check_semantic_files", "check_volume_files", "check_training_content",
    "dataset_content", "EXIF_HINT", "mask_format_of", "check_dataset_for_config",
]

logger = logging.getLogger(__name__)

# what the pre-training check learned about each registered data set (for training-only checks)
_CONTENT: Dict[str, Dict[str, Any]] = {}

EXIF_HINT = (
    "annotations must describe the image as displayed (EXIF orientation applied, as LabelMe, CVAT and "
    "Detectron2 do); if yours follow the stored pixels, remove the orientation tag instead "
    "(e.g. exiftool -Orientation=1 -n FILE)"
)


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
    """(height, width) of an image as displayed (EXIF orientation applied), from its header."""
    from PIL import Image

    from .image_io import DECODE_ERRORS, exif_orientation

    if not os.path.isfile(path):
        raise DatasetError(f"{path}: image file does not exist")
    try:
        with Image.open(path) as im:
            w, h = im.size
            swapped = exif_orientation(im) in (5, 6, 7, 8)
    except DECODE_ERRORS as e:
        raise DatasetError(f"{path}: not a readable image ({e})") from e
    return (w, h) if swapped else (h, w)


def check_image_file(path: str, expected_hw: Optional[Tuple[int, int]] = None) -> Tuple[int, int]:
    hw = image_size_from_header(path)
    if expected_hw is not None and tuple(expected_hw) != hw:
        raise DatasetError(
            f"{path}: image is {hw[0]}x{hw[1]} (HxW) but its annotation says "
            f"{expected_hw[0]}x{expected_hw[1]}"
        )
    return hw


# --------------------------------------------------------------------------- annotations
def _require(cond: bool, json_file: str, msg: str) -> None:
    if not cond:
        raise DatasetError(f"{json_file}: not valid COCO: {msg}")


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _compressed_rle_counts(counts: str) -> Optional[np.ndarray]:
    """Run lengths of a COCO compressed RLE string (pycocotools' rleFrString), or None if malformed."""
    raw = np.frombuffer(counts.encode("ascii", "replace"), dtype=np.uint8).astype(np.int64) - 48
    if raw.size == 0:
        return np.zeros(0, np.int64)
    if raw.min() < 0 or raw.max() > 63:
        return None
    ends = np.flatnonzero((raw & 0x20) == 0)  # a 5-bit group without the continuation bit ends a number
    if ends.size == 0 or ends[-1] != raw.size - 1:
        return None
    starts = np.concatenate([[0], ends[:-1] + 1])
    lengths = ends - starts + 1
    if lengths.max() > 12:  # more than 60 bits: not a run length
        return None
    pos = np.arange(raw.size) - np.repeat(starts, lengths)
    vals = np.add.reduceat((raw & 0x1F) << (5 * pos), starts)
    negative = (raw[ends] & 0x10) != 0
    vals = vals - np.where(negative, np.left_shift(1, 5 * lengths), 0)
    cnts = vals.copy()
    cnts[1::2] = np.cumsum(vals[1::2])  # counts after the third are deltas to the one two back
    if cnts.size > 2:
        cnts[2::2] = np.cumsum(vals[2::2])
    return cnts


def rle_problem(seg: Dict, height: int, width: int) -> Optional[str]:
    """Why an RLE segmentation cannot be decoded at ``height`` x ``width`` (None if it can)."""
    counts = seg.get("counts")
    if isinstance(counts, bytes):
        try:
            counts = counts.decode("ascii")
        except UnicodeDecodeError:
            return "RLE 'counts' is not an ASCII string"
    if isinstance(counts, str):
        cnts = _compressed_rle_counts(counts)
        if cnts is None:
            return "RLE 'counts' is not a valid compressed RLE string"
    elif isinstance(counts, list):
        if not all(isinstance(c, int) and not isinstance(c, bool) for c in counts):
            return "uncompressed RLE 'counts' must be integers"
        cnts = np.asarray(counts, dtype=np.int64)
    else:
        return f"RLE 'counts' must be a string or a list, got {type(counts).__name__}"
    if cnts.size and cnts.min() < 0:
        return "RLE has negative run lengths"
    total = int(cnts.sum())
    if total != height * width:
        return f"RLE run lengths cover {total} pixels, not {height}x{width} = {height * width}"
    return None


def _box_problem(bbox: Any, h: int, w: int) -> Optional[str]:
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_number(v) for v in bbox)):
        return "'bbox' must be 4 numbers [x, y, w, h]"
    if not all(math.isfinite(v) for v in bbox):
        return f"bbox {bbox} is not finite"
    x, y, bw, bh = bbox
    if bw < 0 or bh < 0:
        return f"bbox {bbox} has a negative width or height"
    if x >= w or y >= h or x + bw <= 0 or y + bh <= 0:
        return f"bbox {bbox} lies outside the {h}x{w} image"
    return None


def _polygon_problem(poly: Any, h: int, w: int) -> Optional[str]:
    if not (isinstance(poly, list) and len(poly) >= 6 and len(poly) % 2 == 0):
        return "a polygon needs an even number (>= 6) of coordinates"
    if not all(_is_number(v) for v in poly):
        return "polygon coordinates must be numbers"
    if not all(math.isfinite(v) for v in poly):
        return "polygon has non-finite coordinates"
    xs, ys = poly[0::2], poly[1::2]
    if max(xs) <= 0 or min(xs) >= w or max(ys) <= 0 or min(ys) >= h:
        return f"polygon lies outside the {h}x{w} image"
    if len(set(zip(xs, ys))) < 3:
        return "polygon has fewer than 3 distinct points"
    return None


def _segmentation_kind(seg: Any) -> str:
    if seg is None or (isinstance(seg, list) and len(seg) == 0):
        return "none"
    return "rle" if isinstance(seg, dict) else "polygon"


def _segmentation_problem(seg: Any, h: int, w: int) -> Tuple[str, Optional[str]]:
    """(kind, problem) of one annotation's segmentation; kind is "polygon", "rle" or "none"."""
    if seg is None or (isinstance(seg, list) and len(seg) == 0):
        return "none", None
    if isinstance(seg, dict):
        if "counts" not in seg or "size" not in seg:
            return "rle", "RLE segmentation needs 'counts' and 'size'"
        size = seg["size"]
        if not (isinstance(size, list) and len(size) == 2) or list(size) != [h, w]:
            return "rle", f"mask size {size} does not match the image's {h}x{w}"
        return "rle", rle_problem(seg, h, w)
    if not isinstance(seg, list):
        return "polygon", "bad segmentation type"
    for poly in seg:
        problem = _polygon_problem(poly, h, w)
        if problem:
            return "polygon", problem
    return "polygon", None


def _annotation_problems(anns: List[Dict], images: Dict[Any, Dict], json_file: str) -> List[str]:
    """Per-annotation number checks, RLE decodes cached by the annotation file's size and mtime."""
    from .file_checks import _load_cache, _save_cache  # the same JSON cache as the file checks

    try:
        st = os.stat(json_file)
        stamp = [st.st_size, st.st_mtime_ns]
    except OSError:
        stamp = None
    cache_name = f"annotations:{os.path.abspath(json_file)}"
    entries = _load_cache(cache_name) if stamp else {}
    hit = entries.get("problems")
    if stamp and isinstance(hit, dict) and hit.get("stamp") == stamp and isinstance(hit.get("list"), list):
        return hit["list"]
    problems = []
    for a in anns:
        aid = a.get("id", "?")
        im = images[a["image_id"]]
        h, w = im["height"], im["width"]
        where = f"{json_file}: annotation {aid} (image {im['file_name']})"
        problem = _box_problem(a.get("bbox"), h, w)
        if problem:
            problems.append(f"{where}: {problem}")
        _, problem = _segmentation_problem(a.get("segmentation"), h, w)
        if problem:
            problems.append(f"{where}: {problem}")
        area = a.get("area", 0)
        if not _is_number(area) or not math.isfinite(area) or area < 0:
            problems.append(f"{where}: 'area' {area!r} must be a finite number >= 0")
        if a.get("iscrowd", 0) not in (0, 1):
            problems.append(f"{where}: 'iscrowd' must be 0 or 1, got {a.get('iscrowd')!r}")
    if stamp:
        _save_cache(cache_name, {"problems": {"stamp": stamp, "list": problems}})
    return problems


def validate_coco_dict(data: Any, json_file: str, image_root: Optional[str] = None,
                       dataset_name: Optional[str] = None) -> Dict:
    """Validate a COCO instance annotation dict. Returns a summary.

    Checks the structure, unique ids, that every annotation refers to a listed image and a
    listed category, every annotation's box / polygon / RLE numbers, and (with ``image_root``)
    decodes every image file and compares its displayed size with the declared one. Images
    without annotations are allowed. All problems of the annotations (and then of the image
    files) are reported together.
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
        for key in ("height", "width"):
            v = im[key]
            _require(isinstance(v, int) and not isinstance(v, bool) and v >= 1, json_file,
                     f"image {im['file_name']}: '{key}' must be a positive integer, got {v!r}")
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
        kinds[_segmentation_kind(a.get("segmentation"))] += 1
    problems = _annotation_problems(data["annotations"], images, json_file)
    raise_problems(problems, json_file, len(data["annotations"]), "annotations")
    if dataset_name:
        _CONTENT[dataset_name] = {"kind": "instances", "num_annotations": len(data["annotations"]), "source": json_file}
    if image_root is not None:
        check_coco_images(list(images.values()), image_root, json_file, dataset_name)
    return {
        "num_images": len(images),
        "num_annotations": len(data["annotations"]),
        "segmentation_kinds": kinds,
        "category_ids": sorted(cat_ids),
    }


# --------------------------------------------------------------------------- files
def _size_problem(path: str, res: Dict, expected: Sequence[int], whose: str) -> Optional[str]:
    hw = res["hw"]
    if list(hw) == list(expected):
        return None
    msg = f"{path}: image is {hw[0]}x{hw[1]} (HxW) but {whose} says {expected[0]}x{expected[1]}"
    if res.get("orientation", 1) in (5, 6, 7, 8) and list(res.get("stored_hw", [])) == list(expected):
        msg += (f"; its EXIF orientation {res['orientation']} rotates the stored {expected[0]}x{expected[1]} "
                f"pixels: {EXIF_HINT}")
    return msg


def _high_bit(content: Dict[str, Any], path: str, res: Dict) -> None:
    if "max" in res:
        content.setdefault("high_bit_max", {})[path] = res["max"]


def check_coco_images(images: Sequence[Dict], image_root: str, json_file: str,
                      dataset_name: Optional[str] = None) -> None:
    """Decode every image of a COCO file; compare displayed sizes with the declared ones."""
    paths = [os.path.join(image_root, im["file_name"]) for im in images]
    results = run_file_checks([("image", p) for p in paths], f"coco:{os.path.abspath(json_file)}")
    problems, content = [], {}
    for im, path in zip(images, paths):
        res = results[("image", path)]
        if "error" in res:
            problems.append(f"{path}: {res['error']}")
            continue
        problem = _size_problem(path, res, (im["height"], im["width"]), "its annotation")
        if problem:
            problems.append(problem)
        _high_bit(content, path, res)
    raise_problems(problems, json_file, len(paths), "images")
    if dataset_name:
        _CONTENT[dataset_name] = {**_CONTENT.get(dataset_name, {}), **content}


def check_semantic_files(records: Sequence[Dict], mask_info: Dict[str, Any], source: str,
                         dataset_name: Optional[str] = None) -> List[Tuple[int, int]]:
    """Decode every image and mask of a semantic data set; returns each image's (h, w).

    Sizes must agree, and every mask value must be a class id, a key of ``mask_value_map`` or the
    ignore label (any value with ``mask_threshold``)."""
    gray = mask_info.get("mask_threshold") is not None
    mask_kind = "mask_gray" if gray else "mask"
    tasks = [("image", r["file_name"]) for r in records] + [(mask_kind, r["sem_seg_file_name"]) for r in records]
    results = run_file_checks(tasks, f"semantic:{os.path.abspath(source)}")
    allowed = allowed_label_values(mask_info["num_classes"], mask_info["ignore_label"],
                                   mask_info.get("mask_value_map"), mask_info.get("mask_threshold"))
    has_fg = foreground_values(mask_info["num_classes"], mask_info["ignore_label"],
                               mask_info.get("mask_value_map"), mask_info.get("mask_threshold"))
    problems, sizes, content, fg = [], [], {}, False
    for r in records:
        img, msk = results[("image", r["file_name"])], results[(mask_kind, r["sem_seg_file_name"])]
        for path, res in ((r["file_name"], img), (r["sem_seg_file_name"], msk)):
            if "error" in res:
                problems.append(f"{path}: {res['error']}")
        if "error" in img or "error" in msk:
            sizes.append((0, 0))
            continue
        _high_bit(content, r["file_name"], img)
        sizes.append(tuple(img["hw"]))
        if list(msk["hw"]) != list(img["hw"]):
            problems.append(f"{r['sem_seg_file_name']}: mask is {msk['hw'][0]}x{msk['hw'][1]} (HxW) but its image "
                            f"{r['file_name']} is {img['hw'][0]}x{img['hw'][1]}")
        values = msk.get("values") or []
        if allowed is not None:
            if msk.get("n_values", 0) > len(values):
                problems.append(f"{r['sem_seg_file_name']}: mask has {msk['n_values']} distinct values: "
                                "not a label mask")
                continue
            bad = sorted(set(values) - allowed)
            if bad and mask_info.get("unknown_values") == "ignore":
                logger.warning("%s: mask values %s are not class ids: treated as ignore (%d)",
                               r["sem_seg_file_name"], bad[:10], mask_info["ignore_label"])
            elif bad:
                problems.append(
                    f"{r['sem_seg_file_name']}: mask values {bad[:10]} are neither class ids "
                    f"0..{mask_info['num_classes'] - 1}, mapped values nor the ignore label {mask_info['ignore_label']}"
                    + (f" (mask_value_map {mask_info['mask_value_map']})" if mask_info.get("mask_value_map") else "")
                )
        fg = fg or has_fg(values)
    raise_problems(problems, source, 2 * len(records), "images and masks")
    if dataset_name:
        _CONTENT[dataset_name] = {"kind": "semantic", "foreground": fg, "source": source, **content}
    return sizes


def check_volume_files(records: Sequence[Dict], num_classes: int, ignore_label: int, source: str,
                       dataset_name: Optional[str] = None) -> List[Tuple[Tuple[int, ...], Tuple[float, ...]]]:
    """Decode every image and label volume; returns each image's (shape, spacing).

    Volumes must be finite, labels integers that are class ids or the ignore label, and label
    shapes equal the image's first three axes."""
    tasks = [("volume", r["file_name"]) for r in records] + [("label_volume", r["label_file_name"]) for r in records]
    results = run_file_checks(tasks, f"volume:{os.path.abspath(source)}")
    allowed = allowed_label_values(num_classes, ignore_label)
    problems, out, channels, fg = [], [], set(), False
    for r in records:
        img, lab = results[("volume", r["file_name"])], results[("label_volume", r["label_file_name"])]
        for path, res in ((r["file_name"], img), (r["label_file_name"], lab)):
            if "error" in res:
                problems.append(f"{path}: {res['error']}")
        if "error" in img or "error" in lab:
            out.append(((0, 0, 0), (1.0, 1.0, 1.0)))
            continue
        shape, lshape = img["shape"], lab["shape"]
        channels.add(shape[3] if len(shape) == 4 else 1)
        if len(lshape) == 4 and lshape[3] == 1:
            lshape = lshape[:3]
        if len(lshape) != 3 or list(lshape) != list(shape[:3]):
            problems.append(f"{r['label_file_name']}: label shape {tuple(lab['shape'])} differs from image shape "
                            f"{tuple(shape)} of {r['file_name']}")
        bad = sorted(set(lab.get("values", [])) - allowed)
        if bad:
            problems.append(f"{r['label_file_name']}: label values {bad[:10]} are neither class ids "
                            f"0..{num_classes - 1} nor the ignore label {ignore_label}")
        fg = fg or any(1 <= v < num_classes and v != ignore_label for v in lab.get("values", []))
        out.append((tuple(shape), tuple(img["spacing"])))
    raise_problems(problems, source, 2 * len(records), "volumes")
    if dataset_name:
        _CONTENT[dataset_name] = {"kind": "volume", "foreground": fg, "channels": sorted(channels), "source": source}
    return out


def mask_format_of(kinds: Dict[str, int]) -> str:
    """Detectron2 INPUT.MASK_FORMAT able to read every annotation of a data set."""
    return "bitmask" if kinds.get("rle", 0) > 0 else "polygon"


# --------------------------------------------------------------------------- training sets
def dataset_content(name: str) -> Dict[str, Any]:
    """What the pre-training check found in a data set (after its loader ran)."""
    return dict(_CONTENT.get(name, {}))


def check_training_content(name: str, dicts: Sequence[Dict]) -> None:
    """A training set must contain something to learn: an instance, a foreground pixel / voxel."""
    info = _CONTENT.get(name, {})
    source = info.get("source", name)
    if not dicts:
        raise DatasetError(f"{source}: training set '{name}' is empty")
    kind = info.get("kind")
    if kind is None:  # registered by other code: judge from the records
        kind = "instances" if any("annotations" in d for d in dicts) else None
    if kind == "instances":
        n = sum(len(d.get("annotations", [])) for d in dicts)
        if n == 0:
            raise DatasetError(
                f"{source}: training set '{name}' has {len(dicts)} images but not a single annotated instance",
                hint="images without instances are valid negatives, but a model cannot learn from negatives only",
            )
    elif kind in ("semantic", "volume") and not info.get("foreground", True):
        what = "mask" if kind == "semantic" else "label volume"
        raise DatasetError(
            f"{source}: training set '{name}' is all background: no {what} holds a foreground class",
            hint="check the class list and mask_value_map / mask_threshold (e.g. 0/255 masks need "
                 "mask_value_map={0: 0, 255: 1})" if kind == "semantic" else "check the label files",
        )


def check_dataset_for_config(cfg, name: str, dicts: Sequence[Dict], training: bool) -> None:
    """Checks of a loaded data set that depend on the config: 16-bit images within
    ``INPUT.IMAGE_BIT_DEPTH``, the class count of semantic / volumetric sets against the model's
    (``MODEL.SEM_SEG_HEAD.NUM_CLASSES`` / ``MODEL.VOLUMETRIC.NUM_CLASSES``), volume channels against
    ``MODEL.VOLUMETRIC.IN_CHANNELS``; for training sets also :func:`check_training_content`."""
    from detectron2.data import MetadataCatalog

    from ..errors import ConfigError
    from .mappers import resolve_mapper_name

    info = _CONTENT.get(name, {})
    source = info.get("source", name)
    bits = int(cfg.INPUT.IMAGE_BIT_DEPTH)
    top = (1 << bits) - 1
    over = [f"{p}: pixel values up to {m:g} exceed INPUT.IMAGE_BIT_DEPTH {bits} (max {top})"
            for p, m in sorted(info.get("high_bit_max", {}).items()) if m > top]
    raise_problems(over, source, len(dicts), "images")
    meta = MetadataCatalog.get(name)
    classes = meta.get("stuff_classes", None)
    mapper = resolve_mapper_name(cfg, name)
    if classes and mapper == "semantic" and int(cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES) != len(classes):
        raise ConfigError(
            f"{source}: data set '{name}' has {len(classes)} classes ({', '.join(classes)}) but "
            f"MODEL.SEM_SEG_HEAD.NUM_CLASSES is {cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES}",
            hint=f"set MODEL.SEM_SEG_HEAD.NUM_CLASSES {len(classes)}",
        )
    if classes and mapper == "volume":
        v = cfg.MODEL.VOLUMETRIC
        if int(v.NUM_CLASSES) != len(classes):
            raise ConfigError(
                f"{source}: data set '{name}' has {len(classes)} classes ({', '.join(classes)}) but "
                f"MODEL.VOLUMETRIC.NUM_CLASSES is {v.NUM_CLASSES}", hint=f"set MODEL.VOLUMETRIC.NUM_CLASSES {len(classes)}",
            )
        chans = info.get("channels") or []
        if chans and chans != [int(v.IN_CHANNELS)]:
            raise ConfigError(
                f"{source}: volumes of '{name}' have {'/'.join(map(str, chans))} channel(s) but "
                f"MODEL.VOLUMETRIC.IN_CHANNELS is {v.IN_CHANNELS}", hint=f"set MODEL.VOLUMETRIC.IN_CHANNELS {chans[0]}",
            )
    if training:
        check_training_content(name, dicts)

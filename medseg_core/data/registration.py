"""Register instance (COCO), semantic (mask folder) and volumetric (NIfTI) data sets.

Registration is lazy, as in Detectron2: the loader runs when a data loader or evaluator first
asks for the data set, and it validates the files first (see :mod:`.validation`), so a bad
file stops the run before training with a message naming it.

Metadata conventions (read by the trainer to pick mappers and evaluators):

* instances: ``evaluator_type="coco"``, ``json_file``, ``image_root``, ``thing_classes``,
  ``mask_format`` ("bitmask" when any annotation is RLE, else "polygon");
* semantic: ``evaluator_type="sem_seg"``, ``stuff_classes``, ``ignore_label``,
  ``mask_value_map`` (raw pixel value -> class id, applied by the mapper) or
  ``mask_threshold`` (binary masks: gray > threshold is class 1);
* volumes: ``evaluator_type="volume"``, ``stuff_classes``, ``ignore_label``.
"""
from __future__ import annotations

import logging
import os
from typing import Dict, List, Optional, Sequence

from .. import compat  # noqa: F401

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json

from ..errors import DatasetError
from .validation import check_semantic_files, check_volume_files, mask_format_of, read_json, validate_coco_dict

logger = logging.getLogger(__name__)

__all__ = [
    "register_coco_instances_checked",
    "register_semantic_folder",
    "register_volume_folder",
    "resolve_mask_format",
    "load_semantic_folder",
    "load_volume_folder",
]

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")


def _register(name: str, loader, **meta) -> None:
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, loader)
    MetadataCatalog.get(name).set(**meta)


# --------------------------------------------------------------------------- instances
def _load_checked_coco(name: str, json_file: str, image_root: str, validate: bool) -> List[Dict]:
    data = read_json(json_file)
    summary = validate_coco_dict(data, json_file, image_root if validate else None, dataset_name=name)
    meta = MetadataCatalog.get(name)
    names = [c["name"] for c in sorted(data["categories"], key=lambda c: c["id"])]
    if meta.get("thing_classes") is not None and list(meta.thing_classes) != names:
        raise DatasetError(
            f"{json_file}: categories {names} differ from the classes registered for "
            f"'{name}' ({list(meta.thing_classes)})"
        )
    meta.mask_format = mask_format_of(summary["segmentation_kinds"])
    dicts = load_coco_json(json_file, image_root, name)
    if not dicts:
        raise DatasetError(f"{json_file}: data set '{name}' is empty")
    logger.info(
        "Loaded %d images / %d instances from %s (%s masks)",
        summary["num_images"], summary["num_annotations"], json_file, meta.mask_format,
    )
    return dicts


def register_coco_instances_checked(
    name: str,
    json_file: str,
    image_root: str,
    thing_classes: Optional[Sequence[str]] = None,
    validate: bool = True,
    **extra_meta,
) -> None:
    """Register a COCO instance-segmentation file (polygons or compressed RLE).

    ``thing_classes`` may be given to avoid reading the file at registration; otherwise the
    category list is read now (so demos and evaluators know the class names).
    """
    json_file, image_root = os.fspath(json_file), os.fspath(image_root)
    if thing_classes is None:
        data = read_json(json_file)
        if not isinstance(data, dict) or not isinstance(data.get("categories"), list):
            raise DatasetError(f"{json_file}: not valid COCO: missing 'categories' list")
        thing_classes = [c["name"] for c in sorted(data["categories"], key=lambda c: c["id"])]
    _register(
        name,
        lambda: _load_checked_coco(name, json_file, image_root, validate),
        json_file=json_file,
        image_root=image_root,
        evaluator_type="coco",
        thing_classes=list(thing_classes),
        **extra_meta,
    )


def resolve_mask_format(cfg) -> None:
    """Replace ``INPUT.MASK_FORMAT: auto`` by what the training sets need.

    "bitmask" reads both polygons and RLE, "polygon" only polygons, so any RLE set forces
    bitmask. Needs only the JSON (no image reads).
    """
    if cfg.INPUT.MASK_FORMAT != "auto":
        return
    fmt = "polygon"
    for name in list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST):
        if name not in DatasetCatalog.list():
            continue
        meta = MetadataCatalog.get(name)
        if meta.get("evaluator_type") != "coco":
            continue
        kind = meta.get("mask_format")
        if kind is None and meta.get("json_file"):
            data = read_json(meta.json_file)
            anns = data.get("annotations", []) if isinstance(data, dict) else []
            kind = "bitmask" if any(isinstance(a.get("segmentation"), dict) for a in anns) else "polygon"
            meta.mask_format = kind
        if kind == "bitmask":
            fmt = "bitmask"
    was_frozen = cfg.is_frozen()
    cfg.defrost()
    cfg.INPUT.MASK_FORMAT = fmt
    if was_frozen:
        cfg.freeze()


# --------------------------------------------------------------------------- semantic
def _stem_map(folder: str, exts: Sequence[str]) -> Dict[str, str]:
    if not os.path.isdir(folder):
        raise DatasetError(f"{folder}: folder does not exist")
    out = {}
    for f in sorted(os.listdir(folder)):
        stem, ext = os.path.splitext(f)
        if ext.lower() in exts:
            out[stem] = os.path.join(folder, f)
    return out


# How a missing file is named, per kind of data set: (what an image is, its name pattern when
# missing, what its partner is, the plural for the summary line).
_IMAGE_PAIRING = ("image", ".*", "mask", "images")
_VOLUME_PAIRING = ("volume", ".nii.gz", "label volume", "volumes")


def _pair_by_stem(
    images: Dict[str, str],
    partners: Dict[str, str],
    ids: Optional[Sequence[str]],
    image_dir: str,
    partner_dir: str,
    partner_key: str,
    naming: Sequence[str],
) -> List[Dict]:
    """One record per id (default: every image stem) holding the image and its same-named partner
    (mask or label volume) under ``partner_key``; every missing file of the split is reported at
    once, and an empty result is refused."""
    from .file_checks import raise_problems

    item, missing_pattern, partner, plural = naming
    ids = sorted(images) if ids is None else list(ids)
    dicts, missing = [], []
    for i in ids:
        if i not in images:
            missing.append(f"{os.path.join(image_dir, i)}{missing_pattern}: {item} listed in the split is missing")
        elif i not in partners:
            missing.append(f"{images[i]}: no {partner} with the same name in {partner_dir}")
        else:
            dicts.append({"file_name": images[i], partner_key: partners[i], "image_id": i})
    raise_problems(missing, image_dir, len(ids), plural)
    if not dicts:
        raise DatasetError(f"{image_dir}: data set is empty (no {plural})")
    return dicts


def load_semantic_folder(
    image_dir: str,
    mask_dir: str,
    ids: Optional[Sequence[str]] = None,
    validate: bool = True,
    mask_info: Optional[Dict] = None,
    dataset_name: Optional[str] = None,
) -> List[Dict]:
    """Pair images and masks by file stem; with ``validate`` decode both (cached) and check sizes
    and mask values (:func:`~.validation.check_semantic_files`).

    ``mask_info`` (``num_classes``, ``ignore_label``, ``mask_value_map``, ``mask_threshold``) is
    what the mapper needs to decode a mask; it travels with every record."""
    info = {"num_classes": 256, "ignore_label": 255, "mask_value_map": None, "mask_threshold": None}
    info.update(mask_info or {})
    images = _stem_map(image_dir, IMAGE_EXTS)
    masks = _stem_map(mask_dir, IMAGE_EXTS)
    dicts = _pair_by_stem(images, masks, ids, image_dir, mask_dir, "sem_seg_file_name", _IMAGE_PAIRING)
    for rec in dicts:
        rec.update(info)
    if validate:
        sizes = check_semantic_files(dicts, info, image_dir, dataset_name)
        for rec, (h, w) in zip(dicts, sizes):
            rec.update(height=h, width=w)
    return dicts


def read_split_file(path: str) -> List[str]:
    if not os.path.isfile(path):
        raise DatasetError(f"{path}: split file does not exist")
    with open(path) as f:
        return [line.strip() for line in f if line.strip()]


def register_semantic_folder(
    name: str,
    image_dir: str,
    mask_dir: str,
    stuff_classes: Sequence[str],
    ids: Optional[Sequence[str]] = None,
    ignore_label: int = 255,
    mask_value_map: Optional[Dict[int, int]] = None,
    mask_threshold: Optional[int] = None,
    validate: bool = True,
    unknown_values: str = "error",
    **extra_meta,
) -> None:
    """Register a folder of images with same-named label masks.

    Pixel values are class ids unless ``mask_value_map`` remaps them (e.g. {0: 0, 255: 1} for
    0/255 lesion masks) or ``mask_threshold`` binarises them (gray > threshold -> 1, for
    JPEG-compressed 0/255 masks). A value that is neither mapped nor a valid class id nor
    ``ignore_label`` stops the pre-training check naming the mask (``unknown_values="error"``);
    ``"ignore"`` treats such values as ``ignore_label`` with a warning naming each mask (for a
    known, documented defect of a public data set). The mapper never trains them as a class.
    """
    if unknown_values not in ("error", "ignore"):
        raise ValueError(f"unknown_values must be 'error' or 'ignore', got {unknown_values!r}")
    ids = list(ids) if ids is not None else None
    # What the mapper needs to decode a mask travels with every record.
    mask_info = {
        "num_classes": len(stuff_classes),
        "ignore_label": ignore_label,
        "mask_value_map": dict(mask_value_map) if mask_value_map else None,
        "mask_threshold": mask_threshold,
        "unknown_values": unknown_values,
    }

    def load():
        return load_semantic_folder(image_dir, mask_dir, ids, validate, mask_info, dataset_name=name)

    _register(
        name,
        load,
        image_root=image_dir,
        sem_seg_root=mask_dir,
        evaluator_type="sem_seg",
        stuff_classes=list(stuff_classes),
        ignore_label=ignore_label,
        mask_value_map=dict(mask_value_map) if mask_value_map else None,
        mask_threshold=mask_threshold,
        **extra_meta,
    )


# --------------------------------------------------------------------------- volumes
def load_volume_folder(
    image_dir: str, label_dir: str, ids: Optional[Sequence[str]] = None, validate: bool = True,
    num_classes: int = 256, ignore_label: int = 255, dataset_name: Optional[str] = None,
) -> List[Dict]:
    """Pair ``<id>.nii.gz`` images and labels; with ``validate`` decode both (cached) and check
    shapes and label values (:func:`~.validation.check_volume_files`)."""

    def stems(folder):
        if not os.path.isdir(folder):
            raise DatasetError(f"{folder}: folder does not exist")
        return {f[: -len(".nii.gz")] if f.endswith(".nii.gz") else os.path.splitext(f)[0]: os.path.join(folder, f)
                for f in sorted(os.listdir(folder)) if f.endswith((".nii.gz", ".nii"))}

    images, labels = stems(image_dir), stems(label_dir)
    dicts = _pair_by_stem(images, labels, ids, image_dir, label_dir, "label_file_name", _VOLUME_PAIRING)
    if validate:
        found = check_volume_files(dicts, num_classes, ignore_label, image_dir, dataset_name)
        for rec, (shape, spacing) in zip(dicts, found):
            rec.update(shape=tuple(int(s) for s in shape), spacing=tuple(float(s) for s in spacing))
    return dicts


def register_volume_folder(
    name: str,
    image_dir: str,
    label_dir: str,
    stuff_classes: Sequence[str],
    ids: Optional[Sequence[str]] = None,
    ignore_label: int = 255,
    validate: bool = True,
    **extra_meta,
) -> None:
    """Register NIfTI image/label volume pairs (``<id>.nii.gz`` in both folders)."""
    ids = list(ids) if ids is not None else None
    _register(
        name,
        lambda: load_volume_folder(image_dir, label_dir, ids, validate, len(stuff_classes), ignore_label, name),
        image_root=image_dir,
        label_root=label_dir,
        evaluator_type="volume",
        stuff_classes=list(stuff_classes),
        ignore_label=ignore_label,
        **extra_meta,
    )

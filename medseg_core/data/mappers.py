"""Dataset mappers, chosen by name through ``DATASET_MAPPER_REGISTRY``.

``INPUT.DATASET_MAPPER_NAME`` selects one; empty picks the default for the data set's
``evaluator_type`` ("coco" -> "instance", "sem_seg" -> "semantic", "volume" -> "volume").
Projects register their own (e.g. LMSF-A's YOLO mosaic mapper) in the same registry.

Every mapper reads through :mod:`.image_io` (EXIF orientation applied to images and masks,
16-bit images scaled by ``INPUT.IMAGE_BIT_DEPTH``) and turns an unreadable image or mask into a
:class:`~medseg_core.errors.DatasetError` that names the file.
"""
from __future__ import annotations

import copy
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch

from .. import compat  # noqa: F401

from detectron2.data import DatasetMapper, MetadataCatalog
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.utils.registry import Registry

from ..errors import DatasetError
from .image_io import read_image, read_label_array

DATASET_MAPPER_REGISTRY = Registry("DATASET_MAPPER")
DATASET_MAPPER_REGISTRY.__doc__ = """
Dataset mappers by name. A registered object is called as ``obj(cfg, is_train)`` and returns a
callable that maps one Detectron2 dataset dict to the model's input dict.
"""

DEFAULT_MAPPER_BY_TYPE = {"coco": "instance", "sem_seg": "semantic", "volume": "volume"}

__all__ = [
    "DATASET_MAPPER_REGISTRY", "build_dataset_mapper", "read_image_checked", "read_label_mask", "read_record_mask",
]


def read_image_checked(file_name: str, fmt: str, bit_depth: int = 16) -> np.ndarray:
    """:func:`.image_io.read_image`: displayed orientation, 16-bit scaled, errors naming the file."""
    return read_image(file_name, fmt, bit_depth)


def read_label_mask(
    file_name: str,
    num_classes: int,
    ignore_label: int = 255,
    value_map: Optional[Dict[int, int]] = None,
    threshold: Optional[int] = None,
) -> np.ndarray:
    """Read a label mask as int64 class ids; unmapped or out-of-range values -> ``ignore_label``
    (the pre-training check refuses such values in training data; see :mod:`.file_checks`)."""
    raw = read_label_array(file_name, gray=threshold is not None)
    if threshold is not None:
        return (raw > threshold).astype(np.int64)
    if value_map:
        lut_size = max(int(raw.max()) + 1, max(int(k) for k in value_map) + 1)
        lut = np.full(lut_size, ignore_label, dtype=np.int64)
        for k, v in value_map.items():
            lut[int(k)] = int(v)
        return lut[raw]
    out = raw.copy()
    out[(raw >= num_classes) & (raw != ignore_label)] = ignore_label
    return out


def read_record_mask(record: Dict, image_shape: Sequence[int], num_classes: int, ignore_label: int) -> np.ndarray:
    """The label mask of a semantic record (``sem_seg_file_name``, decoded with the record's
    ``mask_value_map`` / ``mask_threshold``); a mask whose size differs from the image's
    (``image_shape``, HxW first) is refused naming both files."""
    mask = read_label_mask(
        record["sem_seg_file_name"],
        num_classes=num_classes,
        ignore_label=ignore_label,
        value_map=record.get("mask_value_map"),
        threshold=record.get("mask_threshold"),
    )
    if mask.shape != tuple(image_shape[:2]):
        raise DatasetError(
            f"{record['sem_seg_file_name']}: mask is {mask.shape[0]}x{mask.shape[1]} but image "
            f"{record.get('file_name')} is {image_shape[0]}x{image_shape[1]}"
        )
    return mask


def resolve_mapper_name(cfg, dataset_name: Optional[str]) -> str:
    """``INPUT.DATASET_MAPPER_NAME``, or the default for the data set's ``evaluator_type``."""
    name = cfg.INPUT.DATASET_MAPPER_NAME
    if name:
        return name
    etype = MetadataCatalog.get(dataset_name).get("evaluator_type", "coco") if dataset_name else "coco"
    return DEFAULT_MAPPER_BY_TYPE.get(etype, "instance")


def build_dataset_mapper(cfg, is_train: bool, dataset_name: Optional[str] = None) -> Callable:
    ds = dataset_name
    if not cfg.INPUT.DATASET_MAPPER_NAME and not ds:
        ds = cfg.DATASETS.TRAIN[0] if is_train else cfg.DATASETS.TEST[0]
    return DATASET_MAPPER_REGISTRY.get(resolve_mapper_name(cfg, ds))(cfg, is_train)


class CheckedDatasetMapper(DatasetMapper):
    """Detectron2's ``DatasetMapper`` reading through :mod:`.image_io` (file-naming errors,
    16-bit scaling, EXIF orientation); instance models only (no semantic / proposal inputs)."""

    def __init__(self, cfg, is_train: bool = True):
        super().__init__(cfg, is_train)
        self.bit_depth = int(cfg.INPUT.IMAGE_BIT_DEPTH)

    def __call__(self, dataset_dict):
        d = copy.deepcopy(dataset_dict)
        image = read_image_checked(d["file_name"], self.image_format, self.bit_depth)
        try:
            utils.check_image_size(d, image)
        except utils.SizeMismatchError as e:
            raise DatasetError(f"{d['file_name']}: {e}") from e
        aug_input = T.AugInput(image)
        transforms = self.augmentations(aug_input)
        image = aug_input.image
        d["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        if not self.is_train:
            d.pop("annotations", None)
            return d
        if "annotations" in d:
            self._transform_annotations(d, transforms, image.shape[:2])
        return d


@DATASET_MAPPER_REGISTRY.register()
def instance(cfg, is_train: bool):
    """Detectron2's standard instance mapper (resize shortest edge, flip) with checked reads."""
    return CheckedDatasetMapper(cfg, is_train)


class Rot90Transform(T.Transform):
    """Exact rotation by ``k`` x 90 degrees (counter-clockwise, ``np.rot90``): no interpolation,
    so label masks keep their values and binary edges stay where they were."""

    def __init__(self, h: int, w: int, k: int):
        super().__init__()
        self._set_attributes(locals())
        self.k = int(k) % 4

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(np.rot90(img, self.k, axes=(0, 1)))

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        return self.apply_image(segmentation)

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        x, y = coords[:, 0].copy(), coords[:, 1].copy()
        h, w = self.h, self.w
        for _ in range(self.k):  # one CCW quarter turn maps (x, y) in (h, w) to (y, w - x)
            x, y = y, w - x
            h, w = w, h
        return np.stack([x, y], axis=1)

    def inverse(self) -> T.Transform:
        h, w = (self.w, self.h) if self.k % 2 else (self.h, self.w)
        return Rot90Transform(h, w, (4 - self.k) % 4)


class RandomRotate90(T.Augmentation):
    """albumentations' ``RandomRotate90`` (LGMSNet's training transform): with probability
    ``prob`` rotate by k x 90 degrees, k drawn uniformly from {0, 1, 2, 3}."""

    def __init__(self, prob: float = 0.5):
        super().__init__()
        self.prob = prob

    def get_transform(self, image):
        h, w = image.shape[:2]
        if self._rand_range() < self.prob:
            return Rot90Transform(h, w, int(np.random.randint(4)))
        return T.NoOpTransform()


class RandomFlipAny(T.Augmentation):
    """albumentations' ``Flip`` (LGMSNet's training transform): with probability ``prob`` flip
    horizontally, vertically or both, each with equal chance."""

    def __init__(self, prob: float = 0.5):
        super().__init__()
        self.prob = prob

    def get_transform(self, image):
        h, w = image.shape[:2]
        if self._rand_range() >= self.prob:
            return T.NoOpTransform()
        kind = int(np.random.randint(3))
        if kind == 0:
            return T.HFlipTransform(w)
        if kind == 1:
            return T.VFlipTransform(h)
        return T.TransformList([T.HFlipTransform(w), T.VFlipTransform(h)])


class SemanticMapper:
    """Image + label mask mapper for semantic segmentation.

    Training, in LGMSNet's order (geometric augmentation on the original image, then resize):
    random 90-degree rotation (``INPUT.RANDOM_ROTATE90``: albumentations ``RandomRotate90``,
    exact ``np.rot90``), flips (``INPUT.RANDOM_FLIP``: "horizontal" / "vertical" flip with
    p = 0.5, "both" = albumentations ``Flip``: with p = 0.5 one of horizontal, vertical or both,
    "none"), then the fixed resize (``INPUT.FIXED_SIZE``; bilinear image, nearest mask). Test:
    only the resize (or Detectron2's shortest-edge resize when no fixed size is set), and the
    mask is not read (evaluators read it at the original resolution). Sizes that are not a
    multiple of the network's stride are padded by the meta-architecture.

    Masks are decoded through the data set's ``mask_value_map`` (e.g. 0/255 -> 0/1) or
    ``mask_threshold`` (JPEG masks: gray > threshold -> 1); values that are neither mapped nor
    valid class ids become the ignore label 255 (see ``register_semantic_folder``).
    """

    def __init__(self, cfg, is_train: bool):
        self.is_train = is_train
        self.image_format = cfg.INPUT.FORMAT
        self.bit_depth = int(cfg.INPUT.IMAGE_BIT_DEPTH)
        fh, fw = cfg.INPUT.FIXED_SIZE
        augs: List[T.Augmentation] = []
        if is_train:
            if cfg.INPUT.RANDOM_ROTATE90:
                augs.append(RandomRotate90(0.5))
            flip = cfg.INPUT.RANDOM_FLIP
            if flip == "horizontal":
                augs.append(T.RandomFlip(horizontal=True, vertical=False))
            elif flip == "vertical":
                augs.append(T.RandomFlip(horizontal=False, vertical=True))
            elif flip == "both":
                augs.append(RandomFlipAny(0.5))
            elif flip != "none":
                raise ValueError(f"INPUT.RANDOM_FLIP must be horizontal, vertical, both or none, got {flip!r}")
        if fh > 0 and fw > 0:
            augs.append(T.Resize((fh, fw)))
        elif not is_train and cfg.INPUT.MIN_SIZE_TEST > 0:
            augs.append(T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST))
        self.augs = T.AugmentationList(augs)

    def __call__(self, dataset_dict: Dict) -> Dict:
        d = copy.deepcopy(dataset_dict)
        image = read_image_checked(d["file_name"], self.image_format, self.bit_depth)
        sem = None
        if "sem_seg_file_name" in d and self.is_train:
            sem = read_record_mask(d, image.shape, d.get("num_classes", 256), d.get("ignore_label", 255))
        d.setdefault("height", image.shape[0])
        d.setdefault("width", image.shape[1])
        # uint8 masks resize through PIL (nearest); keep wider ids (> 255 classes) as they are
        if sem is not None and sem.max() < 256:
            sem = sem.astype(np.uint8)
        aug_input = T.AugInput(image, sem_seg=sem)
        self.augs(aug_input)
        d["image"] = torch.as_tensor(np.ascontiguousarray(aug_input.image.transpose(2, 0, 1)))
        d.pop("sem_seg", None)
        if sem is not None:
            d["sem_seg"] = torch.as_tensor(np.ascontiguousarray(aug_input.sem_seg).astype(np.int64))
        return d


@DATASET_MAPPER_REGISTRY.register()
def semantic(cfg, is_train: bool):
    return SemanticMapper(cfg, is_train)

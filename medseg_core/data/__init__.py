"""Data sets, converters and dataset mappers shared by every project."""
from .. import compat  # noqa: F401

from .builtin import datasets_root, missing_builtin_reason, register_all_builtin
from .labelme import PELD_CLASSES, convert_labelme_folder, labelme_to_coco
from .registration import (
    register_coco_instances_checked,
    register_semantic_folder,
    register_volume_folder,
    resolve_mask_format,
)
from .smoke import SMOKE_NOTICE, ensure_smoke_instances, make_smoke_labelme, register_smoke_instances
from .smoke import ensure_smoke_volumes, register_smoke_volumes
from .smoke import ensure_smoke_semantic, register_smoke_semantic
from .split import split_coco_file, stratified_split
from .mappers import DATASET_MAPPER_REGISTRY, build_dataset_mapper
from . import volumetric  # noqa: F401  (registers the "volume" mapper)

# Registering the shared development sets by name on import, as Detectron2's builtin data
# sets do; a missing folder registers nothing.
register_all_builtin()
register_smoke_instances()
register_smoke_volumes()
register_smoke_semantic()

__all__ = [
    "datasets_root", "missing_builtin_reason", "register_all_builtin", "PELD_CLASSES",
    "convert_labelme_folder", "labelme_to_coco", "register_coco_instances_checked",
    "register_semantic_folder", "register_volume_folder", "resolve_mask_format", "SMOKE_NOTICE",
    "ensure_smoke_instances", "make_smoke_labelme", "register_smoke_instances",
    "ensure_smoke_volumes", "register_smoke_volumes", "ensure_smoke_semantic",
    "register_smoke_semantic", "split_coco_file", "stratified_split", "DATASET_MAPPER_REGISTRY",
    "build_dataset_mapper",
]

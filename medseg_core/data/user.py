"""Register a user's own instance data from one path, whatever its layout.

Accepted layouts (checked in this order):

1. a folder with ``annotations/instances_{train,val[,test]}.json`` and ``images/`` (this
   project's layout, also that of ../shared/data): registered as is;
2. a COCO ``.json`` file: split 8:1:1 (stratified, deterministic) next to the outputs, images
   resolved relative to the file's folder (or ``image_root``);
3. a folder of LabelMe ``.json`` files (PELD's format) with their images: converted to COCO
   with the PELD class list (or ``classes``), then split 8:1:1.
"""
from __future__ import annotations

import logging
import os
from typing import Dict, Optional, Sequence

from ..errors import DatasetError
from .labelme import PELD_ALIASES, PELD_CLASSES, convert_labelme_folder
from .registration import register_coco_instances_checked
from .split import split_coco_file

logger = logging.getLogger(__name__)

__all__ = ["register_user_instances"]


def register_user_instances(
    path: str,
    work_dir: str,
    prefix: str = "user",
    classes: Optional[Sequence[str]] = None,
    image_root: Optional[str] = None,
    group_key: Optional[str] = None,
) -> Dict[str, str]:
    """Register ``<prefix>_{train,val,test}`` from ``path``; returns split -> data set name."""
    path = os.path.abspath(os.path.expanduser(path))
    if not os.path.exists(path):
        raise DatasetError(f"{path}: data path does not exist")
    split_jsons: Dict[str, str] = {}
    if os.path.isdir(path) and os.path.isdir(os.path.join(path, "annotations")):
        for split in ("train", "val", "test"):
            js = os.path.join(path, "annotations", f"instances_{split}.json")
            if os.path.isfile(js):
                split_jsons[split] = js
        if "train" not in split_jsons:
            raise DatasetError(f"{path}/annotations: no instances_train.json")
        image_root = image_root or os.path.join(path, "images")
    else:
        if os.path.isfile(path):
            if not path.endswith(".json"):
                raise DatasetError(f"{path}: expected a COCO .json file or a folder")
            all_json = path
            image_root = image_root or os.path.dirname(path)
        else:
            all_json = os.path.join(work_dir, "annotations", "instances_all.json")
            convert_labelme_folder(path, all_json, classes or PELD_CLASSES, PELD_ALIASES)
            image_root = path
        split_jsons = split_coco_file(all_json, os.path.join(work_dir, "annotations"), group_key=group_key)
    names = {}
    for split, js in split_jsons.items():
        name = f"{prefix}_{split}"
        register_coco_instances_checked(name, js, image_root)
        names[split] = name
    logger.info("Registered %s from %s", ", ".join(names.values()), path)
    return names

"""Registration of the project's public development data sets by name.

Root: ``$MEDSEG_DATASETS`` if set, else ``../shared/data`` next to the repository. Nothing is
registered when the root does not exist (a user's fresh clone); :func:`datasets_root` and
:func:`missing_builtin_reason` tell tests why.

Names (a split is registered only when its files exist, so a held-out ``test`` split is picked
up automatically where it is present):

=============================  ===========  ==================================================
name                           kind         content
=============================  ===========  ==================================================
endoscapes_seg50_{split}       instances    6 classes, COCO RLE, 854x480 laparoscopy frames
endoscapes_seg50_sem_{split}   semantic     7 classes incl. background, 255 = ignore
ufba425_teeth_{split}          instances    32 FDI tooth classes, COCO RLE, 512x512 X-rays
kvasir_seg_{split}             semantic     binary polyp masks (JPEG 0/255, gray > 127 = polyp)
kvasir_seg_inst_{split}        instances    polyp instances, COCO RLE
msd_hippocampus_{split}        volumes      NIfTI, labels 0 bg / 1 anterior / 2 posterior
=============================  ===========  ==================================================
"""
from __future__ import annotations

import os
from typing import List, Optional

from .registration import (
    read_split_file,
    register_coco_instances_checked,
    register_semantic_folder,
    register_volume_folder,
)

ENDOSCAPES_CLASSES = [
    "cystic_plate", "calot_triangle", "cystic_artery", "cystic_duct", "gallbladder", "tool",
]
TEETH_CLASSES = [str(q * 10 + t) for q in (1, 2, 3, 4) for t in range(1, 9)]
SPLITS = ("train", "val", "test")


def repo_root() -> str:
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def datasets_root() -> str:
    env = os.environ.get("MEDSEG_DATASETS")
    if env:
        return os.path.abspath(os.path.expanduser(env))
    return os.path.normpath(os.path.join(repo_root(), "..", "shared", "data"))


def missing_builtin_reason() -> Optional[str]:
    root = datasets_root()
    if not os.path.isdir(root):
        return (
            f"shared data sets not found at {root} (set MEDSEG_DATASETS to the folder holding "
            "endoscapes-seg50, ufba425-teeth, kvasir-seg and msd-hippocampus)"
        )
    return None


def register_all_builtin(root: Optional[str] = None) -> List[str]:
    """Register every shared data set found under ``root``; returns the registered names."""
    root = root or datasets_root()
    names: List[str] = []
    if not os.path.isdir(root):
        return names
    for split in SPLITS:
        d = os.path.join(root, "endoscapes-seg50")
        js = os.path.join(d, "annotations", f"instances_{split}.json")
        if os.path.isfile(js):
            register_coco_instances_checked(
                f"endoscapes_seg50_{split}", js, os.path.join(d, "images"),
                thing_classes=ENDOSCAPES_CLASSES,
            )
            names.append(f"endoscapes_seg50_{split}")
        if os.path.isdir(os.path.join(d, "masks", split)):
            register_semantic_folder(
                f"endoscapes_seg50_sem_{split}",
                os.path.join(d, "images", split), os.path.join(d, "masks", split),
                stuff_classes=["background"] + ENDOSCAPES_CLASSES, ignore_label=255,
                # val frame 153_32700 holds value 7 (labels shifted by one, per the data set's
                # README); kept, as before, with 7 read as ignore and a warning naming the file
                unknown_values="ignore",
            )
            names.append(f"endoscapes_seg50_sem_{split}")

        d = os.path.join(root, "ufba425-teeth")
        js = os.path.join(d, "annotations", f"instances_{split}.json")
        if os.path.isfile(js):
            register_coco_instances_checked(
                f"ufba425_teeth_{split}", js, os.path.join(d, "images"), thing_classes=TEETH_CLASSES
            )
            names.append(f"ufba425_teeth_{split}")

        d = os.path.join(root, "kvasir-seg")
        if os.path.isdir(os.path.join(d, "masks", split)):
            split_file = os.path.join(d, "splits", f"{split}.txt")
            register_semantic_folder(
                f"kvasir_seg_{split}",
                os.path.join(d, "images", split), os.path.join(d, "masks", split),
                stuff_classes=["background", "polyp"], ignore_label=255, mask_threshold=127,
                ids=read_split_file(split_file) if os.path.isfile(split_file) else None,
            )
            names.append(f"kvasir_seg_{split}")
        js = os.path.join(d, "annotations", f"instances_{split}.json")
        if os.path.isfile(js):
            register_coco_instances_checked(
                f"kvasir_seg_inst_{split}", js, os.path.join(d, "images"), thing_classes=["polyp"]
            )
            names.append(f"kvasir_seg_inst_{split}")

        d = os.path.join(root, "msd-hippocampus")
        if os.path.isdir(os.path.join(d, "labels", split)):
            register_volume_folder(
                f"msd_hippocampus_{split}",
                os.path.join(d, "images", split), os.path.join(d, "labels", split),
                stuff_classes=["background", "anterior", "posterior"], ignore_label=255,
            )
            names.append(f"msd_hippocampus_{split}")
    return names


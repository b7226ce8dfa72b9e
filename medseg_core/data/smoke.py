"""A small synthetic **smoke-test** data set, generated on the fly (not medical data).

It exists so that the quick-start and the tests run on a fresh machine without any download:
coloured, textured shapes on a noisy reddish background, labelled with LMSF-A's four PELD
class names and written as LabelMe JSON + PNG, exactly the format PELD ships in. It exercises
the real pipeline (LabelMe conversion, stratified split, registration, training, COCO
evaluation), but numbers measured on it say nothing about medical performance.
"""
from __future__ import annotations

import json
import os
from typing import Dict, List

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .labelme import PELD_CLASSES

__all__ = ["make_smoke_labelme", "SMOKE_NOTICE"]

SMOKE_NOTICE = (
    "No data path given: generating a small SYNTHETIC smoke-test data set (coloured shapes "
    "with PELD class names, not medical images). It checks that the pipeline runs end to end; "
    "its accuracy numbers mean nothing clinically. Pass a data path to use real data."
)

# Class -> (base RGB, shape kind). Distinct colours keep the task learnable in a few iterations.
_STYLE = {
    "adipose tissue": ((225, 205, 110), "blob"),
    "bone": ((235, 235, 225), "polygon"),
    "ligamentum flavum": ((230, 180, 40), "band"),
    "nerve": ((250, 240, 245), "curve"),
}


def _shape_points(kind: str, rng: np.random.Generator, size: int) -> List[List[float]]:
    cx, cy = rng.uniform(0.2, 0.8, 2) * size
    if kind == "blob":
        r = rng.uniform(0.08, 0.18) * size
        ang = np.sort(rng.uniform(0, 2 * np.pi, 14))
        rad = r * rng.uniform(0.7, 1.2, 14)
        return [[cx + a * np.cos(t), cy + a * np.sin(t)] for a, t in zip(rad, ang)]
    if kind == "polygon":
        r = rng.uniform(0.1, 0.2) * size
        ang = np.sort(rng.uniform(0, 2 * np.pi, 6))
        return [[cx + r * np.cos(t), cy + r * np.sin(t)] for t in ang]
    # bands and curves: a thick or thin poly-line outlined as a polygon
    width = (0.06 if kind == "band" else 0.025) * size
    t = np.linspace(-0.5, 0.5, 12)
    length = rng.uniform(0.3, 0.6) * size
    theta = rng.uniform(0, np.pi)
    bend = rng.uniform(-0.15, 0.15) * size
    xs = cx + t * length * np.cos(theta) - np.sin(theta) * bend * (1 - 4 * t**2)
    ys = cy + t * length * np.sin(theta) + np.cos(theta) * bend * (1 - 4 * t**2)
    nx, ny = -np.sin(theta) * width / 2, np.cos(theta) * width / 2
    upper = [[x + nx, y + ny] for x, y in zip(xs, ys)]
    lower = [[x - nx, y - ny] for x, y in zip(xs[::-1], ys[::-1])]
    return upper + lower


def make_smoke_labelme(out_dir: str, num_images: int = 30, size: int = 256, seed: int = 0) -> Dict:
    """Write ``num_images`` PNG frames and their LabelMe JSONs into ``out_dir``."""
    os.makedirs(out_dir, exist_ok=True)
    rng = np.random.default_rng(seed)
    counts = {c: 0 for c in PELD_CLASSES}
    for i in range(num_images):
        bg = rng.normal(0, 12, (size, size, 3)) + np.array([150, 60, 55])
        img = Image.fromarray(np.clip(bg, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(1.5))
        draw = ImageDraw.Draw(img)
        shapes = []
        # every class appears in most frames, so that an 8:1:1 split can stratify
        for cls in PELD_CLASSES:
            if rng.random() < 0.25:
                continue
            color, kind = _STYLE[cls]
            pts = _shape_points(kind, rng, size)
            pts = [[float(np.clip(x, 0, size - 1)), float(np.clip(y, 0, size - 1))] for x, y in pts]
            jitter = tuple(int(np.clip(c + rng.normal(0, 8), 0, 255)) for c in color)
            draw.polygon([tuple(p) for p in pts], fill=jitter)
            shapes.append({"label": cls, "points": pts, "group_id": None, "shape_type": "polygon", "flags": {}})
            counts[cls] += 1
        name = f"smoke_{i:03d}"
        img.save(os.path.join(out_dir, name + ".png"))
        record = {
            "version": "5.2.1", "flags": {}, "shapes": shapes, "imagePath": name + ".png",
            "imageData": None, "imageHeight": size, "imageWidth": size,
        }
        with open(os.path.join(out_dir, name + ".json"), "w") as f:
            json.dump(record, f)
    return {"num_images": num_images, "instances_per_class": counts, "folder": out_dir}


def smoke_root() -> str:
    """Where the generated smoke sets live: ``$MEDSEG_SMOKE_DIR`` or ``<repo>/datasets/smoke``."""
    from .builtin import repo_root

    return os.environ.get("MEDSEG_SMOKE_DIR") or os.path.join(repo_root(), "datasets", "smoke")


def ensure_smoke_instances(root: str = "", num_images: int = 30, size: int = 256) -> Dict[str, str]:
    """Generate (once) the LabelMe smoke set, convert it to COCO and split it 8:1:1.

    Returns split -> COCO json path. Generation goes to a temporary folder that is renamed
    into place, so concurrent or interrupted runs never see half a data set.
    """
    import shutil
    import tempfile

    from .labelme import convert_labelme_folder
    from .split import split_coco_file

    root = root or os.path.join(smoke_root(), "peld_instances")
    paths = {s: os.path.join(root, "annotations", f"instances_{s}.json") for s in ("train", "val", "test")}
    if all(os.path.isfile(p) for p in paths.values()):
        return paths
    parent = os.path.dirname(os.path.abspath(root))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".smoke-", dir=parent)
    try:
        make_smoke_labelme(os.path.join(tmp, "images"), num_images=num_images, size=size)
        all_json = os.path.join(tmp, "annotations", "instances_all.json")
        convert_labelme_folder(os.path.join(tmp, "images"), all_json)
        split_coco_file(all_json, os.path.join(tmp, "annotations"))
        if os.path.isdir(root):
            shutil.rmtree(root)
        os.replace(tmp, root)
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    return paths


def register_smoke_instances() -> None:
    """Register ``smoke_peld_{train,val,test}``; the set is generated on first use."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from .registration import _load_checked_coco

    root = os.path.join(smoke_root(), "peld_instances")
    for split in ("train", "val", "test"):
        name = f"smoke_peld_{split}"
        json_file = os.path.join(root, "annotations", f"instances_{split}.json")
        image_root = os.path.join(root, "images")

        def load(name=name, json_file=json_file, image_root=image_root):
            ensure_smoke_instances(root)
            return _load_checked_coco(name, json_file, image_root, validate=True)

        if name in DatasetCatalog.list():
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
        DatasetCatalog.register(name, load)
        MetadataCatalog.get(name).set(
            json_file=json_file, image_root=image_root, evaluator_type="coco",
            thing_classes=list(PELD_CLASSES), mask_format="polygon", smoke_test=True,
        )

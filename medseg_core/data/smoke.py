"""A small synthetic **smoke-test** data set, generated on the fly (not medical data).

It exists so that the quick-start and the tests run on a fresh machine without any download:
coloured, textured shapes on a noisy reddish background, labelled with LMSF-A's four PELD
class names and written as LabelMe JSON + PNG, exactly the format PELD ships in. It exercises
the real pipeline (LabelMe conversion, stratified split, registration, training, COCO
evaluation), but numbers measured on it say nothing about medical performance.
"""
from __future__ import annotations

import contextlib
import json
import os
from typing import Callable, Dict, Iterator, List

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


@contextlib.contextmanager
def _exclusive(folder: str) -> Iterator[None]:
    """An exclusive lock on ``folder/.smoke.lock`` (POSIX ``flock``; no lock elsewhere)."""
    os.makedirs(folder, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(os.path.join(folder, ".smoke.lock"), "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _generate_once(root: str, is_complete: Callable[[str], bool], write: Callable[[str], None], prefix: str) -> None:
    """Generate a set into ``root`` unless ``is_complete(root)``: ``write`` fills a temporary
    sibling folder that is then renamed into place, so that concurrent or interrupted runs never
    see half a set. One generator at a time (DDP ranks start together); the others then find it
    complete."""
    import shutil
    import tempfile

    if is_complete(root):
        return
    parent = os.path.dirname(os.path.abspath(root))
    with _exclusive(parent):
        if is_complete(root):
            return
        tmp = tempfile.mkdtemp(prefix=prefix, dir=parent)
        try:
            write(tmp)
            if is_complete(root):  # another process finished first: keep its (identical) set
                return
            if os.path.isdir(root):  # left by an interrupted earlier attempt
                shutil.rmtree(root)
            os.replace(tmp, root)
        except OSError:
            # another process may have put a complete set in place meanwhile
            if not is_complete(root):
                raise
        finally:
            if os.path.isdir(tmp):
                shutil.rmtree(tmp, ignore_errors=True)


def _has_marker(folder: str) -> bool:
    return os.path.isfile(os.path.join(folder, "COMPLETE"))


def _write_marker(folder: str) -> None:
    open(os.path.join(folder, "COMPLETE"), "w").close()


def smoke_root() -> str:
    """Where the generated smoke sets live: ``$MEDSEG_SMOKE_DIR``, else ``<repo>/datasets/smoke`` in
    a source checkout, else (an installed wheel) ``$XDG_CACHE_HOME/medseg-d2/smoke``."""
    from .builtin import repo_root

    if os.environ.get("MEDSEG_SMOKE_DIR"):
        return os.environ["MEDSEG_SMOKE_DIR"]
    if os.path.isfile(os.path.join(repo_root(), "setup.py")):
        return os.path.join(repo_root(), "datasets", "smoke")
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "medseg-d2", "smoke")


def ensure_smoke_instances(root: str = "", num_images: int = 30, size: int = 256) -> Dict[str, str]:
    """Generate (once) the LabelMe smoke set, convert it to COCO and split it 8:1:1.

    Returns split -> COCO json path. Generation goes to a temporary folder that is renamed
    into place, so concurrent or interrupted runs never see half a data set.
    """
    from .labelme import convert_labelme_folder
    from .split import split_coco_file

    splits = ("train", "val", "test")
    root = root or os.path.join(smoke_root(), "peld_instances")

    def is_complete(folder: str) -> bool:
        return all(os.path.isfile(os.path.join(folder, "annotations", f"instances_{s}.json")) for s in splits)

    def write(folder: str) -> None:
        make_smoke_labelme(os.path.join(folder, "images"), num_images=num_images, size=size)
        all_json = os.path.join(folder, "annotations", "instances_all.json")
        convert_labelme_folder(os.path.join(folder, "images"), all_json)
        split_coco_file(all_json, os.path.join(folder, "annotations"))

    _generate_once(root, is_complete, write, ".smoke-")
    return {s: os.path.join(root, "annotations", f"instances_{s}.json") for s in splits}


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


# --------------------------------------------------------------------------- volumes
SMOKE_VOLUME_CLASSES = ["background", "bright", "dark"]
# (split, number of volumes); sizes are deliberately not multiples of 16 (padding path)
_SMOKE_VOLUME_SPLITS = (("train", 8), ("val", 3))


def make_smoke_volumes(out_dir: str, split: str, num_volumes: int, seed: int = 0) -> List[str]:
    """Write ``num_volumes`` small synthetic NIfTI image/label pairs (not medical data).

    Each volume (about 20 x 26 x 18 voxels, spacing 1 x 1 x 1.5 mm) holds a noisy background
    with two touching ellipsoids: class 1 brighter and class 2 darker than the background, the
    shape of a 3-label hippocampus crop. Images alternate between float32 and uint8 storage,
    like the real set.
    """
    import nibabel as nib

    img_dir = os.path.join(out_dir, "images", split)
    lab_dir = os.path.join(out_dir, "labels", split)
    os.makedirs(img_dir, exist_ok=True)
    os.makedirs(lab_dir, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = []
    for i in range(num_volumes):
        shape = (int(rng.integers(18, 23)), int(rng.integers(23, 29)), int(rng.integers(16, 21)))
        grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1).astype(np.float64)
        label = np.zeros(shape, np.uint8)
        centre = np.array(shape) / 2 + rng.uniform(-2, 2, 3)
        axis = rng.normal(size=3)
        axis /= np.linalg.norm(axis)
        for cls, sign in ((1, 1.0), (2, -1.0)):
            c = centre + sign * axis * rng.uniform(2.5, 3.5)
            radii = rng.uniform(2.5, 4.5, 3)
            inside = (((grid - c) / radii) ** 2).sum(-1) <= 1.0
            label[inside & (label == 0)] = cls
        image = 100.0 + rng.normal(0, 12, shape)
        image[label == 1] += 70.0
        image[label == 2] -= 55.0
        name = f"smoke_vol_{split}_{i:02d}"
        affine = np.diag([1.0, 1.0, 1.5, 1.0])
        data = image.astype(np.float32) if i % 2 == 0 else np.clip(image, 0, 255).astype(np.uint8)
        nib.save(nib.Nifti1Image(data, affine), os.path.join(img_dir, name + ".nii.gz"))
        nib.save(nib.Nifti1Image(label, affine), os.path.join(lab_dir, name + ".nii.gz"))
        names.append(name)
    return names


def ensure_smoke_volumes(root: str = "") -> str:
    """Generate (once, atomically) the volume smoke set; returns its root folder."""
    root = root or os.path.join(smoke_root(), "volumes")

    def write(folder: str) -> None:
        for k, (split, n) in enumerate(_SMOKE_VOLUME_SPLITS):
            make_smoke_volumes(folder, split, n, seed=100 + k)
        _write_marker(folder)

    _generate_once(root, _has_marker, write, ".smoke-vol-")
    return root


def register_smoke_volumes() -> None:
    """Register ``smoke_vol_{train,val}`` (NIfTI, 3 labels); generated on first use."""
    from .registration import _register, load_volume_folder

    root = os.path.join(smoke_root(), "volumes")
    for split, _ in _SMOKE_VOLUME_SPLITS:
        img_dir = os.path.join(root, "images", split)
        lab_dir = os.path.join(root, "labels", split)

        def load(img_dir=img_dir, lab_dir=lab_dir, name=f"smoke_vol_{split}"):
            ensure_smoke_volumes(root)
            return load_volume_folder(img_dir, lab_dir, None, validate=True, num_classes=len(SMOKE_VOLUME_CLASSES),
                                      ignore_label=255, dataset_name=name)

        _register(
            f"smoke_vol_{split}", load, image_root=img_dir, label_root=lab_dir,
            evaluator_type="volume", stuff_classes=list(SMOKE_VOLUME_CLASSES), ignore_label=255,
            smoke_test=True,
        )


# --------------------------------------------------------------------------- semantic masks
SMOKE_SEMANTIC_CLASSES = ["background"] + list(PELD_CLASSES)
SMOKE_BINARY_CLASSES = ["background", "structure"]


def ensure_smoke_semantic(root: str = "") -> str:
    """Render (once, atomically) semantic masks for the LabelMe smoke set; returns their root.

    ``<root>/multiclass/<stem>.png`` holds class ids 0 (background) .. 4 (PELD class order),
    painted in the LabelMe shape order, i.e. exactly how the image's shapes overlap;
    ``<root>/binary/<stem>.png`` holds 0 / 255 (any structure), the encoding of real binary
    lesion masks, so the 0/255 -> 0/1 remapping is exercised.
    """
    root = root or os.path.join(smoke_root(), "peld_semantic")
    if _has_marker(root):
        return root
    inst_root = os.path.join(smoke_root(), "peld_instances")
    ensure_smoke_instances(inst_root)
    image_dir = os.path.join(inst_root, "images")
    class_id = {c: i + 1 for i, c in enumerate(PELD_CLASSES)}

    def write(folder: str) -> None:
        for sub in ("multiclass", "binary"):
            os.makedirs(os.path.join(folder, sub))
        for f in sorted(os.listdir(image_dir)):
            if not f.endswith(".json"):
                continue
            with open(os.path.join(image_dir, f)) as fh:
                rec = json.load(fh)
            mask = Image.new("L", (rec["imageWidth"], rec["imageHeight"]), 0)
            draw = ImageDraw.Draw(mask)
            for shape in rec["shapes"]:
                draw.polygon([tuple(p) for p in shape["points"]], fill=class_id[shape["label"]])
            stem = os.path.splitext(f)[0]
            mask.save(os.path.join(folder, "multiclass", stem + ".png"))
            binary = (np.asarray(mask) > 0).astype(np.uint8) * 255
            Image.fromarray(binary).save(os.path.join(folder, "binary", stem + ".png"))
        _write_marker(folder)

    _generate_once(root, _has_marker, write, ".smoke-sem-")
    return root


def register_smoke_semantic() -> None:
    """Register ``smoke_peld_sem_{train,val,test}`` (5 classes incl. background) and
    ``smoke_binary_{train,val,test}`` (structure vs background, 0/255 masks); the split is the
    one of ``smoke_peld_*`` and everything is generated on first use."""
    from .registration import _register, load_semantic_folder

    inst_root = os.path.join(smoke_root(), "peld_instances")
    root = os.path.join(smoke_root(), "peld_semantic")
    image_dir = os.path.join(inst_root, "images")
    variants = (
        ("smoke_peld_sem", "multiclass", SMOKE_SEMANTIC_CLASSES, None),
        ("smoke_binary", "binary", SMOKE_BINARY_CLASSES, {0: 0, 255: 1}),
    )
    for prefix, sub, classes, value_map in variants:
        for split in ("train", "val", "test"):
            mask_dir = os.path.join(root, sub)
            json_file = os.path.join(inst_root, "annotations", f"instances_{split}.json")

            def load(mask_dir=mask_dir, json_file=json_file, classes=classes, value_map=value_map,
                     name=f"{prefix}_{split}"):
                ensure_smoke_semantic(root)
                with open(json_file) as fh:
                    ids = [os.path.splitext(im["file_name"])[0] for im in json.load(fh)["images"]]
                info = dict(num_classes=len(classes), ignore_label=255, mask_value_map=value_map, mask_threshold=None)
                return load_semantic_folder(image_dir, mask_dir, ids, validate=True, mask_info=info, dataset_name=name)

            _register(
                f"{prefix}_{split}", load, image_root=image_dir, sem_seg_root=mask_dir,
                evaluator_type="sem_seg", stuff_classes=list(classes), ignore_label=255,
                mask_value_map=value_map, mask_threshold=None, smoke_test=True,
            )

"""LabelMe -> COCO conversion on a hand-made file, and the stratified splitter."""
import base64
import io
import json
import os

import numpy as np
import pycocotools.mask as mask_util
import pytest
from PIL import Image

from medseg_core.data.labelme import PELD_CLASSES, convert_labelme_folder, labelme_to_coco
from medseg_core.data.split import split_coco_file, stratified_split
from medseg_core.errors import DatasetError


def _write_image(path, h=40, w=60):
    Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(path)


def _labelme(shapes, image_path="frame.png", h=40, w=60):
    return {"version": "5.2.1", "flags": {}, "shapes": shapes, "imagePath": image_path,
            "imageData": None, "imageHeight": h, "imageWidth": w}


def _shape(label, points, kind="polygon", group_id=None):
    return {"label": label, "points": points, "group_id": group_id, "shape_type": kind, "flags": {}}


@pytest.fixture
def labelme_dir(tmp_path):
    _write_image(tmp_path / "frame.png")
    shapes = [
        # a 10x10 square of bone: area 100 exactly
        _shape("bone", [[10, 10], [20, 10], [20, 20], [10, 20]]),
        # a rectangle given by two corners, with the paper's alias "Ligament"
        _shape("Ligament", [[30, 5], [40, 15]], kind="rectangle"),
        # nerve split in two parts by an instrument: same group_id -> one instance
        _shape("nerve", [[0, 30], [5, 30], [5, 35], [0, 35]], group_id=1),
        _shape("nerve", [[50, 30], [55, 30], [55, 35], [50, 35]], group_id=1),
        # a point carries no area and is skipped
        _shape("adipose_tissue", [[3, 3]], kind="point"),
    ]
    (tmp_path / "frame.json").write_text(json.dumps(_labelme(shapes)))
    return tmp_path


def test_labelme_conversion(labelme_dir):
    out = labelme_dir / "coco.json"
    coco = convert_labelme_folder(str(labelme_dir), str(out))
    assert [c["name"] for c in coco["categories"]] == PELD_CLASSES
    assert coco["images"] == [{"id": 1, "file_name": "frame.png", "height": 40, "width": 60}]
    anns = {a["category_id"]: a for a in coco["annotations"]}
    assert sorted(anns) == [2, 3, 4]  # bone, ligamentum flavum, nerve; the point is dropped
    assert anns[2]["bbox"] == [10.0, 10.0, 10.0, 10.0] and anns[2]["area"] == 100.0
    assert anns[3]["bbox"] == [30.0, 5.0, 10.0, 10.0]
    nerve = anns[4]
    assert len(nerve["segmentation"]) == 2  # one instance, two polygons
    assert nerve["bbox"] == [0.0, 30.0, 55.0, 5.0] and nerve["area"] == 50.0
    # the written file round-trips and is not picked up as LabelMe on a second run
    assert json.loads(out.read_text())["annotations"] == coco["annotations"]
    assert len(convert_labelme_folder(str(labelme_dir), str(out))["annotations"]) == 3


def test_labelme_mask_shape_and_embedded_image(tmp_path):
    small = np.zeros((4, 6), np.uint8)
    small[1:3, 2:5] = 255
    buf = io.BytesIO()
    Image.fromarray(small).save(buf, format="PNG")
    img_buf = io.BytesIO()
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(img_buf, format="PNG")
    rec = _labelme([{"label": "bone", "points": [[10, 5], [15, 8]], "group_id": None,
                     "shape_type": "mask", "mask": base64.b64encode(buf.getvalue()).decode()}],
                   image_path="missing.png", h=20, w=30)
    rec["imageData"] = base64.b64encode(img_buf.getvalue()).decode()
    (tmp_path / "a.json").write_text(json.dumps(rec))
    coco = labelme_to_coco([str(tmp_path / "a.json")], str(tmp_path / "images"))
    (ann,) = coco["annotations"]
    m = mask_util.decode(ann["segmentation"])
    assert m.sum() == 6 and m[6:8, 12:15].all()
    assert os.path.isfile(tmp_path / "images" / "a.png")


def test_labelme_unknown_label_names_the_file(labelme_dir):
    rec = _labelme([_shape("dura", [[0, 0], [5, 0], [5, 5]])])
    (labelme_dir / "bad.json").write_text(json.dumps(rec))
    with pytest.raises(DatasetError, match=r"bad\.json: label 'dura'"):
        convert_labelme_folder(str(labelme_dir), str(labelme_dir / "out.json"))


def _coco_with_labels(labels_per_image, groups=None):
    images, anns = [], []
    for i, labels in enumerate(labels_per_image, start=1):
        im = {"id": i, "file_name": f"{i}.png", "height": 8, "width": 8}
        if groups:
            im["patient"] = groups[i - 1]
        images.append(im)
        for lab in labels:
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": lab,
                         "bbox": [0, 0, 2, 2], "area": 4, "iscrowd": 0,
                         "segmentation": [[0, 0, 2, 0, 2, 2, 0, 2]]})
    cats = [{"id": c, "name": f"c{c}"} for c in (1, 2, 3, 4)]
    return {"images": images, "annotations": anns, "categories": cats}


def test_split_is_deterministic_and_stratified(tmp_path):
    rng = np.random.default_rng(0)
    labels = [sorted(set(rng.choice([1, 2, 3, 4], size=rng.integers(0, 4), p=[0.4, 0.3, 0.2, 0.1]).tolist()))
              for _ in range(200)]
    src = tmp_path / "all.json"
    src.write_text(json.dumps(_coco_with_labels(labels)))
    a = split_coco_file(str(src), str(tmp_path / "a"))
    b = split_coco_file(str(src), str(tmp_path / "b"))
    parts = {}
    for name in ("train", "val", "test"):
        da, db = json.load(open(a[name])), json.load(open(b[name]))
        assert da == db  # same input + seed -> byte-identical content
        parts[name] = da
    ids = [sorted(im["id"] for im in parts[n]["images"]) for n in ("train", "val", "test")]
    assert sorted(sum(ids, [])) == list(range(1, 201))  # a partition
    assert [len(x) for x in ids] == [160, 20, 20]  # 8:1:1
    total = {c: sum(c in l for l in labels) for c in (1, 2, 3, 4)}
    for name, frac in (("train", 0.8), ("val", 0.1), ("test", 0.1)):
        for c in (1, 2, 3, 4):
            n = sum(a["category_id"] == c for a in parts[name]["annotations"])
            assert abs(n - frac * total[c]) <= 1.0, (name, c, n, frac * total[c])
    # a different seed gives a different (still valid) split
    c = split_coco_file(str(src), str(tmp_path / "c"), seed=1)
    assert json.load(open(c["val"]))["images"] != parts["val"]["images"]


def test_split_keeps_groups_together(tmp_path):
    labels = [[1 + (i % 4)] for i in range(60)]
    groups = [f"p{i // 6}" for i in range(60)]  # 10 patients x 6 frames
    src = tmp_path / "all.json"
    src.write_text(json.dumps(_coco_with_labels(labels, groups)))
    paths = split_coco_file(str(src), str(tmp_path / "out"), group_key="patient")
    seen = {}
    for name, p in paths.items():
        for im in json.load(open(p))["images"]:
            assert seen.setdefault(im["patient"], name) == name
    assert sorted(len({im["patient"] for im in json.load(open(p))["images"]}) for p in paths.values()) == [1, 1, 8]


def test_stratified_split_rare_label_goes_where_needed():
    units = {f"u{i}": {1: 1} for i in range(8)}
    units.update({"r1": {2: 1}, "r2": {2: 1}})
    train, val, test = stratified_split(units, (0.8, 0.1, 0.1))
    assert len(train) + len(val) + len(test) == 10
    assert len(train) == 8 and len(val) == 1 and len(test) == 1

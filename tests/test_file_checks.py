"""The pre-training check decodes every file (cached, in parallel) and reports all bad files at
once; pixel formats and EXIF orientation are decoded one way everywhere; degenerate annotations
and training sets without anything to learn are refused."""
import json
import os

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from detectron2.data import DatasetCatalog
from PIL import Image

from medseg_core.data import register_coco_instances_checked, register_semantic_folder, register_volume_folder
from medseg_core.data.file_checks import _cache_path, last_check_stats, run_file_checks
from medseg_core.data.image_io import read_image, read_label_array
from medseg_core.data.mappers import SemanticMapper
from medseg_core.data.validation import check_dataset_for_config, rle_problem
from medseg_core.errors import ConfigError, DatasetError
from medseg_core.testing import load_test_cfg

from conftest import CONFIGS

LGMS_CFG = os.path.join(CONFIGS, "quick_schedules", "lgmsnet_instant_test.yaml")


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDSEG_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _rgb(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)


def _jpeg(path, h=32, w=48, orientation=None, seed=0):
    im = Image.fromarray(_rgb(h, w, seed))
    if orientation:
        exif = Image.Exif()
        exif[0x0112] = orientation
        im.save(path, exif=exif, quality=90)
    else:
        im.save(path, quality=90)


def _truncate(path, keep=0.4):
    raw = open(path, "rb").read()
    open(path, "wb").write(raw[: int(len(raw) * keep)])


def _rle(mask):
    r = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": r["size"], "counts": r["counts"].decode()}


def _coco(tmp_path, n=3, h=32, w=48):
    images, anns = [], []
    for i in range(n):
        _jpeg(tmp_path / f"im{i}.jpg", h, w, seed=i)
        m = np.zeros((h, w), bool)
        m[5:20, 5:30] = True
        images.append({"id": i + 1, "file_name": f"im{i}.jpg", "height": h, "width": w})
        anns.append({"id": i + 1, "image_id": i + 1, "category_id": 1, "bbox": [5, 5, 25, 15], "area": 375,
                     "iscrowd": 0, "segmentation": _rle(m)})
    return {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "bone"}]}


def _register(tmp_path, data, name="fc_test"):
    js = tmp_path / "ann.json"
    js.write_text(json.dumps(data))
    register_coco_instances_checked(name, str(js), str(tmp_path), thing_classes=["bone"])
    return name


def test_every_bad_file_is_reported_at_once(tmp_path):
    """Truncated JPEG, garbage file, missing file and an invalid RLE string: one error listing all."""
    data = _coco(tmp_path, n=5)
    _truncate(tmp_path / "im0.jpg")  # header intact: a header-only check passes it
    (tmp_path / "im1.jpg").write_bytes(b"not an image")
    os.remove(tmp_path / "im2.jpg")
    data["annotations"][3]["segmentation"]["counts"] = "not~rle\x7f"
    name = _register(tmp_path, data)
    with pytest.raises(DatasetError) as e:
        DatasetCatalog.get(name)
    # annotation problems are found first (no image read needed), then the image files
    assert "annotation 4 (image im3.jpg): RLE 'counts' is not a valid compressed RLE string" in str(e.value)
    data["annotations"][3]["segmentation"] = _rle(np.ones((32, 48), bool))
    (tmp_path / "ann.json").write_text(json.dumps(data))
    with pytest.raises(DatasetError) as e:
        DatasetCatalog.get(name)
    details = e.value.details
    assert str(e.value).endswith("3 problems in 5 images found by the pre-training check (each listed above); "
                                 "nothing was started")
    assert any(d.startswith(str(tmp_path / "im0.jpg")) and "cannot decode image" in d for d in details)
    assert any(d.startswith(str(tmp_path / "im1.jpg")) and "cannot identify image file" in d for d in details)
    assert any(d == f"{tmp_path / 'im2.jpg'}: image file does not exist" for d in details)


def test_truncated_jpeg_is_found_although_its_header_is_fine(tmp_path):
    _jpeg(tmp_path / "a.jpg", 64, 64)
    with Image.open(tmp_path / "a.jpg") as im:
        assert im.size == (64, 64)
    _truncate(tmp_path / "a.jpg")
    res = run_file_checks([("image", str(tmp_path / "a.jpg"))], "t")
    assert "cannot decode image" in res[("image", str(tmp_path / "a.jpg"))]["error"]


@pytest.mark.parametrize("counts,problem", [
    ("0:", "RLE run lengths cover 10 pixels, not 4x4 = 16"),
    ("0`0", None),  # [0, 16]: all 16 pixels set
    ("ab\x10", "not a valid compressed RLE string"),
    ("c", "not a valid compressed RLE string"),  # continuation bit set on the last character
    ([3, -1, 14], "negative run lengths"),
    ([4, 4, 4], "cover 12 pixels"),
])
def test_invalid_rle_is_refused_before_pycocotools_reads_it(counts, problem):
    found = rle_problem({"size": [4, 4], "counts": counts}, 4, 4)
    assert found is None if problem is None else problem in found


def test_rle_parser_agrees_with_pycocotools():
    rng = np.random.default_rng(0)
    for _ in range(20):
        m = rng.random((37, 53)) < rng.random()
        assert rle_problem(_rle(m), 37, 53) is None


def test_degenerate_annotations_are_all_listed(tmp_path):
    data = _coco(tmp_path, n=1)
    base = data["annotations"][0]
    poly = [[5, 5, 20, 5, 20, 20, 5, 20]]
    bad = [
        dict(bbox=[float("nan"), 2, 10, 10]),
        dict(bbox=[2, 2, -4, 10]),
        dict(bbox=[100, 100, 10, 10]),
        dict(segmentation=[[5, 5, float("inf"), 5, 20, 20]]),
        dict(segmentation=[[200, 200, 210, 200, 210, 210]]),
        dict(segmentation=[[5, 5, 5, 5, 5, 5, 9, 9]]),
        dict(area=-3),
    ]
    data["annotations"] = [{**base, "segmentation": poly, "id": i + 1, **b} for i, b in enumerate(bad)]
    name = _register(tmp_path, data, "fc_degenerate")
    with pytest.raises(DatasetError) as e:
        DatasetCatalog.get(name)
    text = "\n".join(e.value.details)
    for needle in ("annotation 1 (image im0.jpg): bbox [nan, 2, 10, 10] is not finite",
                   "annotation 2 (image im0.jpg): bbox [2, 2, -4, 10] has a negative width or height",
                   "annotation 3 (image im0.jpg): bbox [100, 100, 10, 10] lies outside the 32x48 image",
                   "annotation 4 (image im0.jpg): polygon has non-finite coordinates",
                   "annotation 5 (image im0.jpg): polygon lies outside the 32x48 image",
                   "annotation 6 (image im0.jpg): polygon has fewer than 3 distinct points",
                   "annotation 7 (image im0.jpg): 'area' -3 must be a finite number >= 0"):
        assert needle in text
    assert str(e.value).startswith(str(tmp_path / "ann.json") + ": 7 problems in 7 annotations")


def test_second_check_decodes_nothing_and_a_changed_file_is_decoded_again(tmp_path, private_cache):
    data = _coco(tmp_path, n=4)
    name = _register(tmp_path, data, "fc_cache")
    DatasetCatalog.get(name)
    key = f"coco:{tmp_path / 'ann.json'}"
    assert last_check_stats(key)["decoded"] == 4
    DatasetCatalog.get(name)
    assert last_check_stats(key)["decoded"] == 0
    _truncate(tmp_path / "im2.jpg")  # size and mtime change: decoded again, and found
    with pytest.raises(DatasetError, match=r"im2\.jpg: cannot decode image"):
        DatasetCatalog.get(name)
    assert last_check_stats(key)["decoded"] == 1
    # the cache is plain JSON (never a pickle) and a corrupt cache is ignored, not trusted
    cache = _cache_path(key)
    assert json.load(open(cache))["version"] == 1
    open(cache, "w").write("{ broken")
    with pytest.raises(DatasetError, match=r"im2\.jpg: cannot decode image"):
        DatasetCatalog.get(name)
    assert last_check_stats(key)["decoded"] == 4


def test_parallel_check_finds_the_same_as_serial(tmp_path, monkeypatch):
    paths = []
    for i in range(30):
        p = tmp_path / f"p{i}.jpg"
        _jpeg(p, 16, 16, seed=i)
        if i % 7 == 3:
            _truncate(p)
        paths.append(("image", str(p)))
    monkeypatch.setenv("MEDSEG_CACHE_DIR", str(tmp_path / "c1"))
    par = run_file_checks(paths, "par", workers=2)
    assert last_check_stats("par")["workers"] == 2
    monkeypatch.setenv("MEDSEG_CACHE_DIR", str(tmp_path / "c2"))
    ser = run_file_checks(paths, "ser", workers=1)
    assert par == ser
    assert sorted(k[1] for k, v in par.items() if "error" in v) == [str(tmp_path / f"p{i}.jpg") for i in (10, 17, 24, 3)]


# ----------------------------------------------------------------------------- pixel formats
def test_16bit_png_is_scaled_by_its_bit_depth_not_clipped(tmp_path):
    raw = np.array([[0, 257, 32768, 65535]], np.uint16)
    Image.fromarray(raw).save(tmp_path / "x16.png")
    assert Image.open(tmp_path / "x16.png").mode == "I;16"
    img = read_image(str(tmp_path / "x16.png"), "RGB")
    assert img.dtype == np.uint8 and img.shape == (1, 4, 3)
    assert img[0, :, 0].tolist() == [0, 1, 128, 255]  # Detectron2's read_image gives 0, 255, 255, 255
    twelve = np.array([[0, 2048, 4095]], np.uint16)
    Image.fromarray(twelve).save(tmp_path / "x12.png")
    assert read_image(str(tmp_path / "x12.png"), "L", bit_depth=12)[0, :, 0].tolist() == [0, 128, 255]
    with pytest.raises(DatasetError, match=r"x16\.png: pixel values 0\.\.65535 exceed the 12-bit range 0\.\.4095"):
        read_image(str(tmp_path / "x16.png"), "RGB", bit_depth=12)


def test_float_image_is_refused_naming_file_and_mode(tmp_path):
    Image.fromarray(np.zeros((4, 4), np.float32)).save(tmp_path / "f.tif")
    with pytest.raises(DatasetError, match=r"f\.tif: 32-bit floating-point image \(mode F\)"):
        read_image(str(tmp_path / "f.tif"), "RGB")
    res = run_file_checks([("image", str(tmp_path / "f.tif"))], "float")
    assert "mode F" in res[("image", str(tmp_path / "f.tif"))]["error"]


def test_16bit_images_over_the_configured_depth_stop_training(tmp_path):
    (tmp_path / "img").mkdir(), (tmp_path / "msk").mkdir()
    for i, top in enumerate((4000, 60000)):
        Image.fromarray(np.full((8, 8), top, np.uint16)).save(tmp_path / "img" / f"x{i}.png")
        m = np.zeros((8, 8), np.uint8)
        m[:4] = 1
        Image.fromarray(m).save(tmp_path / "msk" / f"x{i}.png")
    register_semantic_folder("fc_16bit", str(tmp_path / "img"), str(tmp_path / "msk"), ["bg", "fg"])
    dicts = DatasetCatalog.get("fc_16bit")
    cfg = load_test_cfg(LGMS_CFG, "INPUT.IMAGE_BIT_DEPTH", 12)
    with pytest.raises(DatasetError, match=r"x1\.png: pixel values up to 60000 exceed INPUT.IMAGE_BIT_DEPTH 12"):
        check_dataset_for_config(cfg, "fc_16bit", dicts, training=True)
    check_dataset_for_config(load_test_cfg(LGMS_CFG), "fc_16bit", dicts, training=True)


def test_exif_rotation_is_applied_to_images_and_masks_alike(tmp_path):
    """A portrait photo stored landscape with orientation 6: image, mask and sizes all follow the
    displayed orientation, in the check, the mapper and the drawing alike."""
    (tmp_path / "img").mkdir(), (tmp_path / "msk").mkdir()
    _jpeg(tmp_path / "img" / "p.jpg", 32, 48, orientation=6)  # stored 32x48, displayed 48x32
    stored = np.zeros((32, 48), np.uint8)
    stored[:, :10] = 1  # left band as stored -> top band as displayed (rotated 90 deg clockwise)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(tmp_path / "msk" / "p.png", exif=exif)
    assert read_image(str(tmp_path / "img" / "p.jpg"), "RGB").shape[:2] == (48, 32)
    mask = read_label_array(str(tmp_path / "msk" / "p.png"))
    assert mask.shape == (48, 32) and mask[:10].all() and not mask[10:].any()
    register_semantic_folder("fc_exif", str(tmp_path / "img"), str(tmp_path / "msk"), ["bg", "fg"])
    (d,) = DatasetCatalog.get("fc_exif")
    assert (d["height"], d["width"]) == (48, 32)
    out = SemanticMapper(load_test_cfg(None, "INPUT.RANDOM_FLIP", "none"), is_train=True)(d)
    assert tuple(out["image"].shape[1:]) == (48, 32) and torch.equal(out["sem_seg"], torch.from_numpy(mask))


def test_coco_sizes_must_describe_the_displayed_image(tmp_path):
    data = _coco(tmp_path, n=1, h=32, w=48)
    _jpeg(tmp_path / "im0.jpg", 32, 48, orientation=8)  # displayed 48x32, the JSON says stored 32x48
    name = _register(tmp_path, data, "fc_exif_coco")
    with pytest.raises(DatasetError, match=r"im0\.jpg: image is 48x32 \(HxW\) but its annotation says 32x48; "
                                           r"its EXIF orientation 8 rotates the stored 32x48 pixels: annotations "
                                           r"must describe the image as displayed"):
        DatasetCatalog.get(name)


# ----------------------------------------------------------------------------- label values
def _semantic(tmp_path, masks, **kw):
    (tmp_path / "img").mkdir(exist_ok=True), (tmp_path / "msk").mkdir(exist_ok=True)
    for i, m in enumerate(masks):
        Image.fromarray(_rgb(*m.shape[:2], seed=i)).save(tmp_path / "img" / f"s{i}.png")
        Image.fromarray(m).save(tmp_path / "msk" / f"s{i}.png")
    name = kw.pop("name")
    register_semantic_folder(name, str(tmp_path / "img"), str(tmp_path / "msk"), kw.pop("classes", ["bg", "fg"]), **kw)
    return name


def test_semantic_label_problems_are_named(tmp_path):
    ok = np.zeros((8, 8), np.uint8)
    ok[:2] = 1
    unknown = ok.copy()
    unknown[5, 5] = 7
    colour = np.zeros((8, 8, 3), np.uint8)
    colour[:2, :, 0] = 200
    name = _semantic(tmp_path, [ok, unknown, colour], name="fc_labels")
    with pytest.raises(DatasetError) as e:
        DatasetCatalog.get(name)
    text = "\n".join(e.value.details)
    assert f"{tmp_path / 'msk' / 's1.png'}: mask values [7] are neither class ids 0..1" in text
    assert f"{tmp_path / 'msk' / 's2.png'}: colour mask (mode RGB) with unequal channels" in text


def test_non_integer_float_mask_is_refused(tmp_path):
    (tmp_path / "img").mkdir(), (tmp_path / "msk").mkdir()
    Image.fromarray(_rgb(4, 4)).save(tmp_path / "img" / "f.png")
    Image.fromarray(np.full((4, 4), 0.5, np.float32)).save(tmp_path / "msk" / "f.tif")
    register_semantic_folder("fc_float", str(tmp_path / "img"), str(tmp_path / "msk"), ["bg", "fg"])
    with pytest.raises(DatasetError, match=r"f\.tif: floating-point mask has non-integer values"):
        DatasetCatalog.get("fc_float")


def test_all_background_and_empty_training_sets_are_refused(tmp_path):
    # 0/255 masks registered without a value map: every structure pixel is the ignore label
    m = np.zeros((8, 8), np.uint8)
    m[:3] = 255
    name = _semantic(tmp_path, [m, m], name="fc_allbg")
    dicts = DatasetCatalog.get(name)
    cfg = load_test_cfg(LGMS_CFG)
    with pytest.raises(DatasetError, match=r"training set 'fc_allbg' is all background") as e:
        check_dataset_for_config(cfg, name, dicts, training=True)
    assert "mask_value_map={0: 0, 255: 1}" in e.value.hint
    check_dataset_for_config(cfg, name, dicts, training=False)  # a test set may be all negative
    data = _coco(tmp_path, n=2)
    data["annotations"] = []
    name = _register(tmp_path, data, "fc_noinst")
    with pytest.raises(DatasetError, match=r"training set 'fc_noinst' has 2 images but not a single annotated "
                                           r"instance"):
        check_dataset_for_config(load_test_cfg(None), name, DatasetCatalog.get(name), training=True)


def test_semantic_class_count_must_match_the_model(tmp_path):
    m = np.zeros((8, 8), np.uint8)
    m[:3] = 1
    name = _semantic(tmp_path, [m], name="fc_nc")
    cfg = load_test_cfg(LGMS_CFG, "MODEL.SEM_SEG_HEAD.NUM_CLASSES", 3)
    with pytest.raises(ConfigError, match=r"data set 'fc_nc' has 2 classes \(bg, fg\) but "
                                          r"MODEL.SEM_SEG_HEAD.NUM_CLASSES is 3"):
        check_dataset_for_config(cfg, name, DatasetCatalog.get(name), training=True)


def _nii(path, arr, dtype=np.float32):
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.asarray(arr, dtype=dtype), np.eye(4)), str(path))


def test_volume_problems_are_all_listed(tmp_path):
    (tmp_path / "img").mkdir(), (tmp_path / "lab").mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        _nii(tmp_path / "img" / f"v{i}.nii.gz", rng.random((6, 7, 8)))
        lab = np.zeros((6, 7, 8))
        lab[2:4, 2:4, 2:4] = 1
        _nii(tmp_path / "lab" / f"v{i}.nii.gz", lab)
    _truncate(tmp_path / "img" / "v0.nii.gz", keep=0.5)  # gzip header fine, data cut
    _nii(tmp_path / "lab" / "v1.nii.gz", np.full((6, 7, 8), 0.5))
    lab = np.zeros((6, 7, 8))
    lab[0, 0, 0] = 9
    _nii(tmp_path / "lab" / "v2.nii.gz", lab)
    _nii(tmp_path / "lab" / "v3.nii.gz", np.zeros((6, 7, 9)))
    register_volume_folder("fc_vol", str(tmp_path / "img"), str(tmp_path / "lab"), ["bg", "a", "b"])
    with pytest.raises(DatasetError) as e:
        DatasetCatalog.get("fc_vol")
    text = "\n".join(e.value.details)
    assert f"{tmp_path / 'img' / 'v0.nii.gz'}: corrupt or truncated NIfTI file" in text
    assert f"{tmp_path / 'lab' / 'v1.nii.gz'}: label volume has non-integer values (e.g. 0.5)" in text
    assert f"{tmp_path / 'lab' / 'v2.nii.gz'}: label values [9] are neither class ids 0..2 nor the ignore label 255" in text
    assert f"{tmp_path / 'lab' / 'v3.nii.gz'}: label shape (6, 7, 9) differs from image shape (6, 7, 8)" in text

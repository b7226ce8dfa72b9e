"""Semantic data path: generated smoke sets, the semantic mapper's decoding and augmentation."""
import numpy as np
from PIL import Image

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data import transforms as T

from medseg_core.data.mappers import RandomFlipAny, RandomRotate90, Rot90Transform, SemanticMapper
from medseg_core.testing import load_test_cfg


def test_smoke_semantic_sets_are_registered_with_their_classes():
    multi = DatasetCatalog.get("smoke_peld_sem_train")
    binary = DatasetCatalog.get("smoke_binary_val")
    assert MetadataCatalog.get("smoke_peld_sem_val").stuff_classes == [
        "background", "adipose tissue", "bone", "ligamentum flavum", "nerve"
    ]
    assert MetadataCatalog.get("smoke_binary_train").stuff_classes == ["background", "structure"]
    # same split as the instance smoke set
    inst = {d["file_name"] for d in DatasetCatalog.get("smoke_peld_train")}
    assert {d["file_name"] for d in multi} == inst
    m = np.asarray(Image.open(multi[0]["sem_seg_file_name"]))
    assert set(np.unique(m)) <= {0, 1, 2, 3, 4} and len(np.unique(m)) > 2
    b = np.asarray(Image.open(binary[0]["sem_seg_file_name"]))
    assert set(np.unique(b)) == {0, 255}


def test_binary_mapper_yields_foreground_where_the_mask_is_white():
    cfg = load_test_cfg(None, "INPUT.RANDOM_FLIP", "none", "INPUT.FIXED_SIZE", "(128, 128)")
    d = DatasetCatalog.get("smoke_binary_train")[0]
    out = SemanticMapper(cfg, is_train=True)(d)
    raw = np.asarray(Image.open(d["sem_seg_file_name"]).resize((128, 128), Image.NEAREST))
    sem = out["sem_seg"].numpy()
    assert out["image"].shape == (3, 128, 128) and sem.shape == (128, 128)
    assert set(np.unique(sem)) == {0, 1}
    assert np.array_equal(sem == 1, raw == 255)
    # multi-class ids pass through unchanged
    d = DatasetCatalog.get("smoke_peld_sem_train")[0]
    sem = SemanticMapper(load_test_cfg(None, "INPUT.RANDOM_FLIP", "none"), True)(d)["sem_seg"].numpy()
    assert np.array_equal(sem, np.asarray(Image.open(d["sem_seg_file_name"])))
    # the test mapper resizes the image only; masks are read by the evaluator
    out = SemanticMapper(cfg, is_train=False)(d)
    assert "sem_seg" not in out and out["height"] == 256 and out["image"].shape == (3, 128, 128)


def test_rot90_is_exact_and_keeps_labels():
    img = np.random.default_rng(0).integers(0, 255, (5, 7, 3)).astype(np.uint8)
    seg = np.random.default_rng(1).integers(0, 3, (5, 7)).astype(np.uint8)
    for k in range(4):
        t = Rot90Transform(5, 7, k)
        assert np.array_equal(t.apply_image(img), np.rot90(img, k))
        assert np.array_equal(t.apply_segmentation(seg), np.rot90(seg, k))
        assert np.array_equal(t.inverse().apply_segmentation(t.apply_segmentation(seg)), seg)


def test_random_rotate90_and_flip_sample_all_cases():
    img = np.arange(6, dtype=np.uint8).reshape(2, 3, 1).repeat(3, axis=2)
    np.random.seed(0)
    shapes, flips = set(), set()
    for _ in range(200):
        aug_in = T.AugInput(img.copy())
        T.AugmentationList([RandomRotate90(1.0)])(aug_in)
        shapes.add(aug_in.image.shape[:2])
        aug_in = T.AugInput(img.copy())
        T.AugmentationList([RandomFlipAny(1.0)])(aug_in)
        flips.add(aug_in.image[..., 0].tobytes())
    assert shapes == {(2, 3), (3, 2)}
    # horizontal, vertical and both are all drawn (prob 1 never leaves the image as it is)
    assert len(flips) == 3 and img[..., 0].tobytes() not in flips


def test_kvasir_jpeg_masks_decode_to_foreground(shared_data):
    d = DatasetCatalog.get("kvasir_seg_val")[0]
    cfg = load_test_cfg(None, "INPUT.RANDOM_FLIP", "none", "INPUT.FIXED_SIZE", "(256, 256)")
    sem = SemanticMapper(cfg, is_train=True)(d)["sem_seg"].numpy()
    gray = np.asarray(Image.open(d["sem_seg_file_name"]).convert("L").resize((256, 256), Image.NEAREST))
    assert set(np.unique(sem)) == {0, 1}
    # 1 exactly where the (resized) JPEG mask is white
    assert np.array_equal(sem == 1, gray > 127)
    assert 0.01 < (sem == 1).mean() < 0.9

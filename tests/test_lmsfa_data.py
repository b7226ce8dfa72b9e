"""The YOLO mapper of LMSF-A ("yolo"): letterbox geometry, flips, mosaic, HSV, box filtering and
the longest-side test resize, on real endoscapes frames and on hand-built images."""
import numpy as np
import pytest
import torch

import medseg_core  # noqa: F401
from detectron2.data import DatasetCatalog
from detectron2.structures import BoxMode
import pycocotools.mask as mask_util

from medseg_core.data import DATASET_MAPPER_REGISTRY
from medseg_core.testing import load_test_cfg
from lmsfa.yolo_mapper import YOLOMapper, hsv_jitter

NO_AUG = ["INPUT.YOLO.MOSAIC_PROB", "0.0", "INPUT.YOLO.SCALE", "0.0", "INPUT.YOLO.TRANSLATE", "0.0",
          "INPUT.YOLO.FLIP_LR", "0.0", "INPUT.YOLO.HSV_H", "0.0", "INPUT.YOLO.HSV_S", "0.0",
          "INPUT.YOLO.HSV_V", "0.0"]


def _cfg(*opts):
    import os

    here = os.path.dirname(os.path.abspath(__file__))
    return load_test_cfg(os.path.join(here, "..", "configs", "Endoscapes-InstanceSegmentation", "Base-LMSFA.yaml"),
                         "DATASETS.VALIDATE", "False", *opts)


def _toy_dict(tmp_path, h=40, w=80):
    """An 80x40 image, left half red and right half blue, one instance = a 20x10 rectangle."""
    import cv2

    img = np.zeros((h, w, 3), np.uint8)
    img[:, : w // 2] = (0, 0, 255)  # BGR red
    img[:, w // 2:] = (255, 0, 0)
    f = str(tmp_path / "toy.png")
    cv2.imwrite(f, img)
    m = np.zeros((h, w), np.uint8)
    m[10:20, 8:28] = 1
    rle = mask_util.encode(np.asfortranarray(m))
    return {"file_name": f, "image_id": 1, "height": h, "width": w, "annotations": [
        {"segmentation": rle, "category_id": 2, "iscrowd": 0, "bbox": [8, 10, 20, 10], "bbox_mode": BoxMode.XYWH_ABS},
    ]}


def test_letterbox_without_augmentation_is_exact(tmp_path):
    # 80x40 -> 160x80 (ratio 2) centred in a 160x160 canvas: rows 40..119, gray padding above/below
    cfg = _cfg("INPUT.YOLO.IMAGE_SIZE", "160", *NO_AUG)
    out = YOLOMapper(cfg, is_train=True)(_toy_dict(tmp_path))
    img = out["image"]
    assert tuple(img.shape) == (3, 160, 160) and img.dtype == torch.uint8
    assert (img[:, :40] == 114).all() and (img[:, 120:] == 114).all()
    assert img[:, 60, 20].tolist() == [255, 0, 0] and img[:, 60, 140].tolist() == [0, 0, 255]  # RGB
    inst = out["instances"]
    assert inst.gt_classes.tolist() == [2]
    # the 20x10 box at (8, 10) becomes 40x20 at (16, 20 + 40)
    assert inst.gt_boxes.tensor.tolist() == [[16.0, 60.0, 56.0, 80.0]]
    assert int(inst.gt_masks.tensor.sum()) == 40 * 20


def test_flip_mirrors_image_and_masks(tmp_path):
    d = _toy_dict(tmp_path)
    plain = YOLOMapper(_cfg("INPUT.YOLO.IMAGE_SIZE", "160", *NO_AUG), True)(d)
    flip_opts = list(NO_AUG)
    flip_opts[flip_opts.index("INPUT.YOLO.FLIP_LR") + 1] = "1.0"
    flipped = YOLOMapper(_cfg("INPUT.YOLO.IMAGE_SIZE", "160", *flip_opts), True)(d)
    assert torch.equal(flipped["image"], plain["image"].flip(-1))
    assert torch.equal(flipped["instances"].gt_masks.tensor, plain["instances"].gt_masks.tensor.flip(-1))
    assert flipped["instances"].gt_boxes.tensor.tolist() == [[104.0, 60.0, 144.0, 80.0]]


def test_instances_pushed_out_of_the_image_are_dropped(tmp_path):
    # scale 0.5 drawn for sure (SCALE 0.5 -> [0.5, 1.5]); translate the content far away: the
    # right third of the 160 canvas keeps no instance pixel -> no instance, boxes filtered
    d = _toy_dict(tmp_path)
    d["annotations"][0]["segmentation"] = mask_util.encode(np.asfortranarray(
        np.pad(np.ones((2, 2), np.uint8), ((0, 38), (0, 78)))))  # a 2x2 speck in the corner
    d["annotations"][0]["bbox"] = [0, 0, 2, 2]
    out = YOLOMapper(_cfg("INPUT.YOLO.IMAGE_SIZE", "160", *NO_AUG), True)(d)
    # 2x2 -> 4x4 after the x2 resize: kept (> MIN_BOX_SIZE 2)
    assert len(out["instances"]) == 1
    out = YOLOMapper(_cfg("INPUT.YOLO.IMAGE_SIZE", "64", *NO_AUG), True)(d)
    # 2x2 -> 1.6x1.6 at 64 px: narrower than 2 px -> dropped
    assert len(out["instances"]) == 0
    assert out["instances"].gt_masks.tensor.shape == (0, 64, 64)


def test_hsv_jitter_is_identity_without_gains_and_keeps_gray():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
    assert np.array_equal(hsv_jitter(img, rng, 0.0, 0.0, 0.0), img)
    gray = np.full((4, 4, 3), 114, np.uint8)
    out = hsv_jitter(gray, rng, 0.015, 0.7, 0.0)  # value gain 0: saturation of gray stays 0
    assert np.array_equal(out, gray)


def test_mosaic_on_real_frames_keeps_masks_and_boxes_consistent(shared_data):
    cfg = _cfg("INPUT.YOLO.IMAGE_SIZE", "256")
    np.random.seed(0)
    mapper = DATASET_MAPPER_REGISTRY.get("yolo")(cfg, True)
    assert mapper.pool is not None and len(mapper.pool) == 343
    dicts = DatasetCatalog.get("endoscapes_seg50_train")
    counts = []
    for d in dicts[:6]:
        out = mapper(d)
        assert tuple(out["image"].shape) == (3, 256, 256)
        inst = out["instances"]
        m = inst.gt_masks.tensor
        assert m.shape == (len(inst), 256, 256) and m.dtype == torch.bool
        assert ((inst.gt_classes >= 0) & (inst.gt_classes < 6)).all()
        for mask, box in zip(m, inst.gt_boxes.tensor):
            ys, xs = torch.nonzero(mask, as_tuple=True)
            # boxes are the tight boxes of the warped masks (pixel edges)
            assert box.tolist() == [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]
            assert box[2] - box[0] > 2 and box[3] - box[1] > 2
        counts.append(len(inst))
    assert sum(counts) > 0


def test_test_mapper_resizes_longest_side_and_drops_annotations(shared_data):
    d = DatasetCatalog.get("endoscapes_seg50_val")[0]
    out = DATASET_MAPPER_REGISTRY.get("yolo")(_cfg("INPUT.YOLO.IMAGE_SIZE", "320"), False)(d)
    assert tuple(out["image"].shape) == (3, 180, 320)
    assert (out["height"], out["width"]) == (480, 854)
    assert "annotations" not in out and "instances" not in out


def test_bad_image_size_is_rejected():
    with pytest.raises(ValueError, match="IMAGE_SIZE"):
        YOLOMapper(_cfg("INPUT.YOLO.IMAGE_SIZE", "100"), False)

"""The Ultralytics-protocol evaluator ("ultralytics_segm") on hand-computed cases."""
import numpy as np
import pytest
import torch

import medseg_core  # noqa: F401
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import Boxes, BoxMode, Instances
import pycocotools.mask as mask_util

from medseg_core.evaluation import EVALUATOR_REGISTRY
from medseg_core.evaluation.ultralytics import (
    UltralyticsSegEvaluator, ap_per_class, compute_ap, grid_sample_masks, letterbox_geometry, match_predictions,
)


def test_trapezoid_101_point_ap_hand_computed():
    # 2 GTs; detections by confidence: TP, FP, TP -> recall .5 .5 1, precision 1 .5 2/3.
    # Envelope: 1 up to recall 0.5, 2/3 after. np.interp at 101 points gives 1 for x < .5,
    # 2/3 for .5 <= x < 1 and the sentinel 0 at x = 1, so the trapezoid integral is
    # 0.49 + 0.01 (1 + 2/3) / 2 + 0.49 * 2/3 + 0.01 (2/3) / 2 = 0.828333...
    ap = compute_ap(np.array([0.5, 0.5, 1.0]), np.array([1.0, 0.5, 2 / 3]))
    assert ap == pytest.approx(0.49 + 0.01 * (5 / 6) + 0.49 * 2 / 3 + 0.01 / 3, abs=1e-9)
    # (COCO's step sampling would give (51 + 50 * 2/3) / 101 = 0.83498: a different protocol)
    assert abs(ap - (51 + 50 * 2 / 3) / 101) > 5e-3


def test_ap_per_class_averages_gt_classes_and_max_f1_point():
    # class 0: 2 GT, detections (0.9 TP, 0.8 FP, 0.7 TP); class 1: 1 GT, no detection (AP 0);
    # class 2: detections only (no GT) -> not averaged
    tp = np.array([[1], [0], [1], [0]], dtype=float)
    conf = np.array([0.9, 0.8, 0.7, 0.95])
    pred_cls = np.array([0, 0, 0, 2])
    target_cls = np.array([0, 0, 1])
    r = ap_per_class(tp, conf, pred_cls, target_cls)
    assert r["classes"].tolist() == [0, 1]
    assert r["ap"][0, 0] == pytest.approx(0.828333333, abs=1e-6)
    assert r["ap"][1, 0] == 0.0
    # class 0 reaches recall 1 at precision 2/3 (conf 0.7): the best F1 (0.8) of that class
    assert r["r"][0] == pytest.approx(1.0, abs=1e-6)
    assert r["p"][0] == pytest.approx(2 / 3, abs=1e-3)


def test_matching_follows_ultralytics_uniqueness_rules():
    # one class; GT A, GT B (rows), detections 1 and 2 (columns, in confidence order)
    iou = np.array([[0.82, 0.87], [0.0, 0.0]])
    correct = match_predictions(np.array([0, 0]), np.array([0, 0]), iou)
    # t <= 0.80: both pairs qualify; after "unique detection" the pairs are ordered by detection
    # index, so "unique GT" keeps (A, detection 1) although detection 2 overlaps A more.
    assert correct[0].tolist() == [True] * 7 + [False] * 3
    # t = 0.85: only (A, 2) qualifies
    assert correct[1].tolist() == [False] * 7 + [True] + [False] * 2
    # classes must agree
    assert not match_predictions(np.array([1, 1]), np.array([0, 0]), iou).any()


def test_letterbox_geometry_matches_ultralytics_rect_validation():
    # 854x480 at 640: content 640x360, canvas ceil(11.25 + .5)*32 = 384 by ceil(20 + .5)*32 = 672
    assert letterbox_geometry(480, 854, 640) == (384, 672, 360, 640, 12, 16)
    # PELD frames 1080x720: content 640x427 in a 672x448 canvas, masks at 168x112 (docs/lmsfa.md)
    assert letterbox_geometry(720, 1080, 640) == (448, 672, 427, 640, 10, 16)
    assert letterbox_geometry(512, 512, 640) == (672, 672, 640, 640, 16, 16)


def test_grid_sampling_places_content_inside_canvas():
    m = torch.zeros(1, 480, 854, dtype=torch.bool)
    m[0, :240, :427] = True  # top-left quarter of the frame
    g = grid_sample_masks(m, letterbox_geometry(480, 854, 640), 4)
    assert g.shape == (1, 96, 168)
    # content rows 3..92 (12/4 .. (12+360)/4), columns 4..163; the quarter is rows 3..47, cols 4..83
    assert not g[0, :3].any() and not g[0, :, :4].any()
    assert g[0, 3:48, 4:84].all()
    assert int(g.sum()) == 45 * 80


def _register_toy(name):
    # 640x320 at image size 640: no resize, canvas 352x672, content offset (16, 16), so the
    # 1/4 grid samples original columns 2, 6, 10, ... (x = 4j - 14) exactly
    h, w = 320, 640
    gt1 = np.zeros((h, w), np.uint8)
    gt1[100:300, 100:300] = 1
    gt2 = np.zeros((h, w), np.uint8)
    gt2[50:150, 320:620] = 1

    def ann(m, c):
        rle = mask_util.encode(np.asfortranarray(m))
        rle["counts"] = rle["counts"].decode("ascii")
        ys, xs = np.nonzero(m)
        return {"segmentation": rle, "category_id": c, "iscrowd": 0,
                "bbox": [float(xs.min()), float(ys.min()), float(xs.max() + 1 - xs.min()), float(ys.max() + 1 - ys.min())],
                "bbox_mode": BoxMode.XYWH_ABS}

    dicts = [{"file_name": "toy.jpg", "image_id": 7, "height": h, "width": w,
              "annotations": [ann(gt1, 0), ann(gt2, 1)]}]
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, lambda: dicts)
    MetadataCatalog.get(name).set(thing_classes=["a", "b"])
    return torch.from_numpy(np.stack([gt1, gt2])).bool(), (h, w)


def _instances(masks, boxes, scores, classes, hw):
    inst = Instances(hw)
    inst.pred_masks = masks
    inst.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32))
    inst.scores = torch.tensor(scores)
    inst.pred_classes = torch.tensor(classes)
    return inst


def test_evaluator_end_to_end_perfect_and_partial():
    gt, hw = _register_toy("toy_ultralytics_eval")
    ev = UltralyticsSegEvaluator("toy_ultralytics_eval", image_size=640, distributed=False)
    perfect = _instances(gt, [[100, 100, 300, 300], [320, 50, 620, 150]], [0.9, 0.8], [0, 1], hw)
    ev.reset()
    ev.process([{"image_id": 7}], [{"instances": perfect}])
    res = ev.evaluate()
    # a perfect class scores 0.995, not 1: the sentinel precision 0 at recall 1 enters the
    # last trapezoid (0.99 .. 1.0) -- a known property of the Ultralytics AP
    assert res["ultralytics_segm"]["mAP50_95"] == pytest.approx(99.5, abs=1e-6)
    assert res["ultralytics_box"]["mAP50"] == pytest.approx(99.5, abs=1e-6)
    assert res["ultralytics_segm"]["fitness"] == pytest.approx(199.0, abs=1e-6)

    # class-b mask keeps columns 320..529 of its GT's 320..619: the grid samples 52 of the GT's
    # 75 columns (322..526 vs 322..618, step 4), IoU 52/75 = 0.693 -> positive at t = .5 .. .65;
    # its box stays exact
    part = gt.clone()
    part[1, :, 530:] = False
    # plus a false positive of class a scored below the 0.001 threshold (dropped)
    fp_mask = torch.zeros(1, *hw, dtype=torch.bool)
    fp_mask[0, 250:300, 10:60] = True
    partial = _instances(torch.cat([part, fp_mask]), [[100, 100, 300, 300], [320, 50, 620, 150], [10, 250, 60, 300]],
                         [0.9, 0.8, 0.0005], [0, 1, 0], hw)
    ev.reset()
    ev.process([{"image_id": 7}], [{"instances": partial}])
    res = ev.evaluate()
    # class a AP .995 everywhere; class b .995 at 4 of 10 thresholds -> (0.995 + 0.398) / 2
    assert res["ultralytics_segm"]["mAP50"] == pytest.approx(99.5, abs=1e-6)
    assert res["ultralytics_segm"]["mAP50_95"] == pytest.approx(69.65, abs=1e-6)
    assert res["ultralytics_segm"]["mAP50_95-b"] == pytest.approx(39.8, abs=1e-6)
    assert res["ultralytics_box"]["mAP50_95"] == pytest.approx(99.5, abs=1e-6)


def test_registered_and_rejects_roi_masks():
    assert "ultralytics_segm" in EVALUATOR_REGISTRY
    gt, hw = _register_toy("toy_ultralytics_eval2")
    ev = UltralyticsSegEvaluator("toy_ultralytics_eval2", image_size=640, distributed=False)
    roi = _instances(torch.ones(1, 1, 28, 28, dtype=torch.bool), [[0, 0, 10, 10]], [0.9], [0], hw)
    with pytest.raises(ValueError, match="full-image masks"):
        ev.process([{"image_id": 7}], [{"instances": roi}])

"""The "volume" evaluator: Dice / HD95 against hand-made volumes and the conventions it states."""
import json
import math
import os

import numpy as np
import pytest
import torch

import medseg_core  # noqa: F401
import medseg_core.data  # noqa: F401  (registers smoke_vol_*)
from detectron2.data import DatasetCatalog

from medseg_core.data.volumetric import read_volume_label
from medseg_core.evaluation import build_evaluators
from medseg_core.evaluation.volumetric import VolumeEvaluator, summarize_volume_scores, volume_scores
from medseg_core.testing import load_test_cfg


pytestmark = pytest.mark.usefixtures("one_thread")


def _two_cubes():
    gt = np.zeros((10, 10, 10), np.int64)
    gt[2:5, 2:5, 2:5] = 1  # 27 voxels
    gt[6:8, 6:8, 6:8] = 2  # 8 voxels
    return gt


def test_perfect_prediction():
    gt = _two_cubes()
    s = volume_scores(gt, gt, 3)
    assert s["dice"] == [1.0, 1.0] and s["hd95"] == [0.0, 0.0] and s["hd95_empty"] == [0.0, 0.0]


def test_hand_computed_dice_hd95_with_spacing_and_missing_class():
    gt = _two_cubes()
    pred = gt.copy()
    pred[2:5, 2:5, 5] = 1  # one extra 3x3 slice next to the class-1 cube along axis 2
    pred[pred == 2] = 0  # class 2 missed entirely
    s = volume_scores(pred, gt, 3, spacing=(1.0, 1.0, 2.0))
    # Dice_1 = 2 * 27 / (36 + 27)
    assert math.isclose(s["dice"][0], 54 / 63, rel_tol=1e-6)
    # the extra slice is one voxel = 2 mm away from the ground-truth surface; 9 of the 34
    # surface voxels of the prediction (> 5%) lie there, so the 95th percentile is 2 mm
    assert math.isclose(s["hd95"][0], 2.0, rel_tol=1e-6)
    # missed class: Dice 0, HD95 = volume diagonal in mm, counted as empty
    assert s["dice"][1] == 0.0
    assert math.isclose(s["hd95"][1], math.sqrt(10**2 + 10**2 + 20**2), rel_tol=1e-6)
    assert s["hd95_empty"] == [0.0, 1.0]
    # isotropic spacing: the same slice is 1 mm away
    assert math.isclose(volume_scores(pred, gt, 3)["hd95"][0], 1.0, rel_tol=1e-6)


def test_absent_class_conventions_and_ignore_label():
    gt = _two_cubes()
    gt[gt == 2] = 0  # class 2 absent from the ground truth
    both_empty = volume_scores(gt, gt, 3)
    assert both_empty["dice"][0] == 1.0 and math.isnan(both_empty["dice"][1]) and math.isnan(both_empty["hd95"][1])
    pred = gt.copy()
    pred[0, 0, 0] = 2  # a false positive of a class absent from the ground truth
    fp = volume_scores(pred, gt, 3)
    assert fp["dice"][1] == 0.0 and fp["hd95_empty"][1] == 1.0
    # the same false positive on an ignored voxel does not count
    gt_ign = gt.copy()
    gt_ign[0, 0, 0] = 255
    assert math.isnan(volume_scores(pred, gt_ign, 3)["dice"][1])
    with pytest.raises(ValueError, match="shape"):
        volume_scores(pred[:-1], gt, 3)


def test_summary_means_over_volumes_skip_nan():
    records = [
        {"dice": [1.0, float("nan")], "hd95": [0.0, float("nan")], "hd95_empty": [0.0, 0.0]},
        {"dice": [0.5, 0.8], "hd95": [2.0, 4.0], "hd95_empty": [0.0, 0.0]},
    ]
    res = summarize_volume_scores(records, ["background", "a", "b"])
    assert math.isclose(res["Dice-a"], 75.0) and math.isclose(res["Dice-b"], 80.0)
    assert math.isclose(res["mDice"], 77.5)
    assert math.isclose(res["HD95-a"], 1.0) and math.isclose(res["HD95-b"], 4.0)
    assert math.isclose(res["mHD95"], 2.5)
    assert res["num_volumes"] == 2.0
    assert "Dice-background" not in res  # background excluded
    # sample std over volumes: a has two volumes (1.0, 0.5), b only one
    assert math.isclose(res["DiceStd-a"], 100 * math.sqrt(0.125)) and math.isnan(res["DiceStd-b"])
    assert math.isclose(res["HD95Std-a"], math.sqrt(2.0))


def test_evaluator_on_smoke_volumes_perfect_and_wrong(tmp_path, repo_root):
    cfg = load_test_cfg(os.path.join(repo_root, "configs/quick_schedules/lightmedseg_instant_test.yaml"))
    evaluator = build_evaluators(cfg, "smoke_vol_val", str(tmp_path))
    assert isinstance(evaluator, VolumeEvaluator)
    dicts = DatasetCatalog.get("smoke_vol_val")
    evaluator.reset()
    for d in dicts:
        gt = read_volume_label(d["label_file_name"], 3)
        evaluator.process([{"file_name": d["file_name"], "image_id": d["image_id"]}],
                          [{"pred_label": torch.from_numpy(gt)}])
    res = evaluator.evaluate()["volume"]
    assert res["mDice"] == 100.0 and res["mHD95"] == 0.0 and res["num_volumes"] == len(dicts)
    with open(os.path.join(tmp_path, "volume_scores.json")) as f:
        assert len(json.load(f)["volumes"]) == len(dicts)

    evaluator.reset()
    for d in dicts:
        gt = read_volume_label(d["label_file_name"], 3)
        swapped = np.where(gt == 1, 2, np.where(gt == 2, 1, gt))  # the two classes swapped
        evaluator.process([{"file_name": d["file_name"]}], [{"pred_label": torch.from_numpy(swapped)}])
    res = evaluator.evaluate()["volume"]
    assert res["Dice-bright"] < 30 and res["Dice-dark"] < 30 and res["mHD95"] > 0

    evaluator.reset()
    with pytest.raises(ValueError, match="differs from the ground truth"):
        evaluator.process([{"file_name": dicts[0]["file_name"]}], [{"pred_label": torch.zeros(4, 4, 4, dtype=torch.long)}])

"""The "sem_seg" evaluator against hand-computed masks: the paper's per-image metrics at the
model's resolution vs dataset-level metrics at the original resolution."""
import numpy as np
import pytest
import torch
from PIL import Image

from detectron2.data import DatasetCatalog

from medseg_core.data import register_semantic_folder
from medseg_core.evaluation.semantic import SemSegEvaluator
from medseg_core.evaluation.semantic_paper import paper_binary_scores, per_image_class_scores, resize_nearest


def test_paper_binary_scores_hand_computed():
    gt = np.zeros((4, 4), bool)
    gt[0, :3] = gt[1, :3] = True  # 6 px
    pred = np.zeros((4, 4), bool)
    pred[1, :] = True  # 4 px, 3 of them on the GT
    iou, f1 = paper_binary_scores(pred, gt)
    assert iou == pytest.approx((3 + 1e-5) / (7 + 1e-5))
    se, pc = 3 / (6 + 1e-6), 3 / (4 + 1e-6)
    assert f1 == pytest.approx(2 * se * pc / (se + pc + 1e-6))
    assert f1 == pytest.approx(0.6, abs=1e-5)  # = Dice 2*3/(4+6)


def test_paper_binary_scores_empty_images_follow_the_authors_code():
    empty = np.zeros((10, 10), bool)
    # empty vs empty: IoU 1 but F1 0 (GT == max(GT) turns an empty GT into the whole image)
    assert paper_binary_scores(empty, empty) == pytest.approx((1.0, 0.0), abs=1e-6)
    pred = empty.copy()
    pred[0, :5] = True  # 5 of 100 px predicted on an empty GT
    iou, f1 = paper_binary_scores(pred, empty)
    assert iou == pytest.approx(1e-5 / (5 + 1e-5))
    se, pc = 5 / (100 + 1e-6), 5 / (5 + 1e-6)
    assert f1 == pytest.approx(2 * se * pc / (se + pc + 1e-6))
    # ignored pixels are removed from the image before counting
    valid = np.ones((10, 10), bool)
    valid[5:] = False
    se = 5 / (50 + 1e-6)
    assert paper_binary_scores(pred, empty, valid)[1] == pytest.approx(2 * se * pc / (se + pc + 1e-6))


def test_per_image_class_scores_nan_for_absent_classes():
    gt = np.array([[0, 0, 1, 1], [0, 0, 1, 255]])
    pred = np.array([[0, 1, 1, 1], [0, 0, 0, 2]])
    iou, dice = per_image_class_scores(pred, gt, 4)
    # class 0: tp 3, gt 4, pred 4 -> IoU 3/5; class 1: tp 2, gt 3, pred 3 -> 2/4; class 2 only in
    # an ignored pixel -> absent; class 3 absent
    assert iou[:2] == pytest.approx([3 / 5, 2 / 4])
    assert dice[:2] == pytest.approx([6 / 8, 4 / 6])
    assert np.isnan(iou[2]) and np.isnan(iou[3])


def test_resize_nearest_keeps_label_values():
    lab = np.array([[0, 1], [2, 255]])
    out = resize_nearest(lab, 4, 4)
    assert out.shape == (4, 4) and set(np.unique(out)) == {0, 1, 2, 255}


def _register_binary(tmp_path, name, masks):
    (tmp_path / "img").mkdir()
    (tmp_path / "msk").mkdir()
    for i, m in enumerate(masks):
        Image.fromarray(np.zeros(m.shape + (3,), np.uint8)).save(tmp_path / "img" / f"{i}.png")
        Image.fromarray((m * 255).astype(np.uint8)).save(tmp_path / "msk" / f"{i}.png")
    register_semantic_folder(name, str(tmp_path / "img"), str(tmp_path / "msk"), ["background", "lesion"],
                             mask_value_map={0: 0, 255: 1})
    return DatasetCatalog.get(name)


def _scores(pred: np.ndarray) -> torch.Tensor:
    z = torch.as_tensor(np.where(pred, 5.0, -5.0), dtype=torch.float32)
    return torch.stack([torch.zeros_like(z), z])


def test_per_image_and_dataset_level_differ_as_they_should(tmp_path):
    big = np.zeros((8, 8), np.uint8)
    big[:5, :2] = 1  # 10 px, predicted perfectly
    small = np.zeros((8, 8), np.uint8)
    small[0, :2] = 1  # 2 px, missed entirely
    dicts = _register_binary(tmp_path, "eval_hand_binary", [big, small])
    ev = SemSegEvaluator("eval_hand_binary", distributed=False, output_dir=str(tmp_path / "out"))
    ev.reset()
    for d, pred in zip(dicts, (big.astype(bool), np.zeros((8, 8), bool))):
        inp = {"file_name": d["file_name"], "image": torch.zeros(3, 8, 8)}
        ev.process([inp], [{"sem_seg": _scores(pred), "sem_seg_model_res": _scores(pred)}])
    res = ev.evaluate()["sem_seg"]
    # per image: IoU 1 and ~0 -> mean 0.5; F1 1 and 0 -> 0.5
    assert res["per_image_IoU@model_res"] == pytest.approx(50.0, abs=1e-3)
    assert res["per_image_F1@model_res"] == pytest.approx(50.0, abs=1e-3)
    # dataset level: 10 TP, 2 FN -> IoU 10/12, Dice 20/22
    assert res["dataset_IoU@orig_res"] == pytest.approx(100 * 10 / 12)
    assert res["dataset_Dice@orig_res"] == pytest.approx(100 * 20 / 22)
    assert res["dataset_IoU@orig_res-background"] == pytest.approx(100 * 116 / 118)
    assert res["mIoU"] == res["dataset_mIoU@orig_res"]
    assert (tmp_path / "out" / "per_image_metrics.json").is_file()


def test_model_resolution_metrics_use_the_model_grid(tmp_path):
    # original 8x8 GT: left half lesion. The model saw a 4x4 input and predicted the left
    # half there too (perfect at model res); at the original size its bilinear-resized scores
    # are given as a shifted mask (2 columns too wide), which only the dataset level sees.
    gt = np.zeros((8, 8), np.uint8)
    gt[:, :4] = 1
    (d,) = _register_binary(tmp_path, "eval_hand_res", [gt])
    model_res = np.zeros((4, 4), bool)
    model_res[:, :2] = True
    orig = np.zeros((8, 8), bool)
    orig[:, :6] = True
    ev = SemSegEvaluator("eval_hand_res", distributed=False)
    ev.reset()
    ev.process([{"file_name": d["file_name"], "image": torch.zeros(3, 4, 4)}],
               [{"sem_seg": _scores(orig), "sem_seg_model_res": _scores(model_res)}])
    res = ev.evaluate()["sem_seg"]
    assert res["per_image_IoU@model_res"] == pytest.approx(100.0)
    assert res["dataset_IoU@orig_res"] == pytest.approx(100 * 32 / 48)
    # without a model-resolution output the original-size prediction is resized to the input grid
    ev.reset()
    ev.process([{"file_name": d["file_name"], "image": torch.zeros(3, 4, 4)}], [{"sem_seg": _scores(orig)}])
    res = ev.evaluate()["sem_seg"]
    assert res["per_image_IoU@model_res"] == pytest.approx(100 * 8 / 12, abs=1e-3)


def test_multiclass_per_class_figures(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "msk").mkdir()
    gts = [np.array([[0, 0, 1, 1], [0, 0, 1, 1]], np.uint8), np.array([[2, 2, 0, 0], [2, 255, 0, 0]], np.uint8)]
    preds = [np.array([[0, 0, 1, 1], [0, 0, 0, 0]]), np.array([[2, 2, 0, 0], [0, 0, 0, 0]])]
    for i, m in enumerate(gts):
        Image.fromarray(np.zeros((2, 4, 3), np.uint8)).save(tmp_path / "img" / f"{i}.png")
        Image.fromarray(m).save(tmp_path / "msk" / f"{i}.png")
    register_semantic_folder("eval_hand_multi", str(tmp_path / "img"), str(tmp_path / "msk"), ["bg", "a", "b"])
    dicts = DatasetCatalog.get("eval_hand_multi")
    ev = SemSegEvaluator("eval_hand_multi", distributed=False)
    ev.reset()
    for d, p in zip(dicts, preds):
        scores = torch.nn.functional.one_hot(torch.as_tensor(p), 3).permute(2, 0, 1).float()
        ev.process([{"file_name": d["file_name"], "image": torch.zeros(3, 2, 4)}], [{"sem_seg": scores}])
    res = ev.evaluate()["sem_seg"]
    # class a: only image 0 (tp 2, gt 4, pred 2) -> IoU 0.5; class b: only image 1 (tp 2, gt 3,
    # pred 2; the ignored pixel is left out) -> 2/3; bg: image 0 4/6, image 1 4/5
    assert res["per_image_IoU@model_res-a"] == pytest.approx(50.0)
    assert res["per_image_IoU@model_res-b"] == pytest.approx(100 * 2 / 3)
    assert res["per_image_IoU@model_res-bg"] == pytest.approx(100 * (4 / 6 + 4 / 5) / 2)
    assert res["per_image_mIoU@model_res"] == pytest.approx((50.0 + 100 * 2 / 3 + 100 * (4 / 6 + 4 / 5) / 2) / 3)
    # dataset level: a tp 2 / union 4; b tp 2 / union 3; bg tp 8 / (gt 8 + pred 11 - 8)
    assert res["dataset_IoU@orig_res-a"] == pytest.approx(50.0)
    assert res["dataset_IoU@orig_res-b"] == pytest.approx(100 * 2 / 3)
    assert res["dataset_IoU@orig_res-bg"] == pytest.approx(100 * 8 / 11)


def test_class_count_mismatch_is_a_clear_error(tmp_path):
    m = np.zeros((4, 4), np.uint8)
    (d,) = _register_binary(tmp_path, "eval_hand_mismatch", [m])
    ev = SemSegEvaluator("eval_hand_mismatch", distributed=False)
    ev.reset()
    with pytest.raises(ValueError, match=r"predicts 7 classes but the data set has 2 \(background, lesion\)"):
        ev.process([{"file_name": d["file_name"], "image": torch.zeros(3, 4, 4)}], [{"sem_seg": torch.zeros(7, 4, 4)}])

"""The issue-4 target: tools/compare.py over the instant-test configs of all five models
(Mask R-CNN, Swin Mask R-CNN, Mask2Former, YOLOv8-seg, LMSF-A) finishes on the CPU and writes
the table, the CSV and the plot."""
import csv
import importlib.util
import os

import pytest

import medseg_core  # noqa: F401

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QS = os.path.join(REPO, "configs", "quick_schedules")


FIVE = [
    "mask_rcnn_R50_FPN_scratch_bn_instant_test.yaml", "mask_rcnn_swin_t_FPN_instant_test.yaml",
    "mask2former_R50_instant_test.yaml", "yolov8seg_instant_test.yaml", "lmsfa_instant_test.yaml",
]


def test_compare_five_instant_models(tmp_path, capsys):
    """The issue's target: tools/compare.py over the instant-test configs of Mask R-CNN, Swin Mask
    R-CNN, Mask2Former, YOLOv8-seg and LMSF-A finishes on the CPU and writes table, CSV, plot
    (shortened further here: 1 iteration, 128 px, 10 detections, counting at 128 x 128)."""
    spec = importlib.util.spec_from_file_location("compare_tool", os.path.join(REPO, "tools", "compare.py"))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    out = tmp_path / "cmp"
    rc = tool.main(
        ["--configs"] + [os.path.join(QS, f) for f in FIVE]
        + ["--output-dir", str(out), "--latency-runs", "20", "--latency-warmup", "1", "--complexity-shape", "3,128,128",
           "--", "SOLVER.MAX_ITER", "1", "INPUT.MIN_SIZE_TRAIN", "(128,)", "INPUT.MAX_SIZE_TRAIN", "128",
           "INPUT.MIN_SIZE_TEST", "128", "INPUT.MAX_SIZE_TEST", "128", "TEST.DETECTIONS_PER_IMAGE", "10",
           "MODEL.MASK2FORMER.TEST_TOPK_PER_IMAGE", "10", "MODEL.LMSFA.TEST_MAX_DET", "10",
           "MODEL.RPN.POST_NMS_TOPK_TEST", "50"]
    )
    printed = capsys.readouterr().out
    assert rc == 0, printed[-3000:]
    assert "reference: lmsfa" in printed
    with open(out / "comparison.csv") as f:
        rows = {r["model"]: r for r in csv.DictReader(f)}
    assert list(rows) == ["mask_rcnn_R50_FPN_scratch_bn", "mask_rcnn_swin_t_FPN", "mask2former_R50", "yolov8seg", "lmsfa"]
    for name, r in rows.items():
        for k in ("mask_map50", "mask_map", "box_map", "precision", "recall", "ar100", "params_m", "gflops_paper",
                  "gflops_fvcore", "latency_ms", "fps", "train_min"):
            assert r[k] != "", f"{name}: {k} missing"
    # parameter counts of the five models at 4 classes
    assert float(rows["lmsfa"]["params_m"]) == pytest.approx(1.825, abs=0.01)
    assert float(rows["yolov8seg"]["params_m"]) == pytest.approx(3.2644, abs=0.001)
    assert float(rows["mask_rcnn_R50_FPN_scratch_bn"]["params_m"]) == pytest.approx(43.987304)
    assert float(rows["mask_rcnn_swin_t_FPN"]["params_m"]) == pytest.approx(47.38269)
    assert float(rows["mask2former_R50"]["params_m"]) == pytest.approx(44.003845)
    # the network-only latency exists for the models with complexity_forward
    assert rows["lmsfa"]["net_latency_ms"] != "" and rows["mask2former_R50"]["net_latency_ms"] != ""
    assert rows["mask_rcnn_R50_FPN_scratch_bn"]["net_latency_ms"] == ""
    md = (out / "comparison.md").read_text()
    assert md.count("\n| ") >= 5 + 1 + 5 + 1  # main table + per-class table rows and headers
    assert (out / "comparison.png").stat().st_size > 10_000

"""tools/compare.py protocols: equal epochs, equal minutes, learning curves, repeat-factor
sampling, the reference model from the config, and what a rerun reuses or refuses."""
import csv
import math
import os

import pytest

import medseg_core  # noqa: F401

from medseg_core.comparison import (
    Comparison, ModelSpec, Protocol, config_diff, curve_rows, summarize_curves,
)
from medseg_core.config import load_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QS = os.path.join(REPO, "configs", "quick_schedules")
YOLO11 = os.path.join(QS, "yolo11seg_instant_test.yaml")
LMSFA = os.path.join(QS, "lmsfa_instant_test.yaml")
SMALL = ["INPUT.YOLO.IMAGE_SIZE", "64", "TEST.ULTRALYTICS.IMAGE_SIZE", "64", "MODEL.LMSFA.TEST_MAX_DET", "10"]


def _comparison(out, models, protocol, messages, **kw):
    return Comparison(models, str(out), seeds=[0], opts=SMALL, latency_runs=20, latency_warmup=1,
                      complexity_shape=(3, 64, 64), progress=messages.append, protocol=protocol, **kw)


def test_protocol_arguments():
    assert Protocol().kind == "iterations" and Protocol(epochs=2).kind == "epochs"
    assert Protocol(budget_minutes=30, clock="cpu").describe().startswith("equal time: 30 min of cpu clock")
    for bad in (dict(epochs=1, budget_minutes=1), dict(clock="gpu"), dict(curve_points=1), dict(epochs=-1)):
        with pytest.raises(ValueError):
            Protocol(**bad)
    assert Protocol(repeat_threshold=0.3).common_opts() == [
        "DATALOADER.SAMPLER_TRAIN", "RepeatFactorTrainingSampler", "DATALOADER.REPEAT_THRESHOLD", "0.3"]


def test_config_diff_ignores_defaults_and_output_dir():
    cfg = load_config(YOLO11, ["OUTPUT_DIR", "/x", "SOLVER.MAX_ITER", "3"])
    d = config_diff(cfg)
    assert d["SOLVER.MAX_ITER"] == 3 and d["MODEL.LMSFA.ARCH"] == "YOLO11"
    assert "OUTPUT_DIR" not in d and "SOLVER.BUDGET.MINUTES" not in d and "TEST.CURVE.POINTS" not in d


def test_reference_from_the_config_not_the_name(tmp_path):
    c = Comparison([ModelSpec("a", YOLO11), ModelSpec("b", LMSFA)], str(tmp_path))
    assert c.reference == "b"  # lmsfa_instant_test.yaml sets TEST.COMPARISON_REFERENCE
    assert Comparison([ModelSpec("lmsfa_like_name", YOLO11)], str(tmp_path)).reference is None
    assert Comparison([ModelSpec("a", YOLO11), ModelSpec("b", LMSFA)], str(tmp_path), reference="a").reference == "a"
    # --repeat-factor reaches every model's training config; --epochs its schedule
    c = Comparison([ModelSpec("a", YOLO11)], str(tmp_path), protocol=Protocol(epochs=2, repeat_threshold=0.3))
    tcfg = c._cfg(c.models[0], 0, train=True)
    assert tcfg.DATALOADER.SAMPLER_TRAIN == "RepeatFactorTrainingSampler" and tcfg.DATALOADER.REPEAT_THRESHOLD == 0.3
    assert tcfg.SOLVER.MAX_ITER == 12 and tcfg.SOLVER.WARMUP_ITERS == 4 and tcfg.TEST.EVAL_PERIOD == 0  # 3 * 12 / 8
    with pytest.raises(ValueError, match="repeat-factor"):
        Comparison([ModelSpec("a", YOLO11)], str(tmp_path), test_set="smoke_peld_sem_val",
                   protocol=Protocol(repeat_threshold=0.5))


def _run(name, seed, points):
    curve = [{"point": k, "iteration": 10 * k, "images_seen": 40 * k, "seconds": {"wall": 60.0 * k, "cpu": 30.0 * k},
              "results": {"segm": {"AP": ap}}} for k, ap in points[:-1]]
    n = len(points)
    return {"name": name, "seed": seed, "results": {"segm": {"AP": points[-1][1]}},
            "train": {"curve": curve, "n_train": 20, "iterations": 10 * n, "images_seen": 40 * n,
                      "seconds_by_clock": {"wall": 60.0 * n, "cpu": 30.0 * n}}}


def test_curve_rows_and_mean_spread_over_seeds():
    runs = [_run("m", 0, [(1, 2.0), (2, 4.0), (3, 9.0)]), _run("m", 1, [(1, 4.0), (2, 6.0), (3, 11.0)]),
            _run("n", 0, [(1, 1.0), (2, 1.5)])]
    rows = curve_rows(runs, "coco", clock="cpu")
    assert [(r["model"], r["seed"], r["point"]) for r in rows][:3] == [("m", 0, 1), ("m", 0, 2), ("m", 0, 3)]
    last = rows[2]  # the final evaluation is the last point
    assert last["iteration"] == 30 and last["images_seen"] == 120 and last["epochs"] == 6.0
    assert last["train_minutes"] == 1.5 and last["mask_map"] == 9.0
    s = {c.name: c for c in summarize_curves(rows, "coco", ["n", "m"])}
    assert s["m"].seeds == 2 and s["m"].points == [1, 2, 3]
    assert s["m"].mean == [3.0, 5.0, 10.0] and s["m"].minutes == [0.5, 1.0, 1.5]
    assert s["m"].std[0] == pytest.approx(math.sqrt(2.0))
    assert s["n"].seeds == 1 and math.isnan(s["n"].std[0])


def test_epochs_protocol_end_to_end_and_rerun(tmp_path):
    msgs = []
    comp = _comparison(tmp_path, [ModelSpec("y11", YOLO11)], Protocol(epochs=1, curve_points=3, clock="cpu"), msgs)
    runs = comp.run()
    assert not comp.failed, msgs
    train = runs[0]["train"]
    # 24 smoke training images, batch 4: ceil(1 * 24 / 4) = 6 iterations, 24 images seen = 1 epoch
    assert train["iterations"] == 6 and train["images_seen"] == 24 and train["n_train"] == 24
    assert train["epochs"] == 1.0 and train["clock"] == "cpu" and train["seconds"] > 0
    assert [p["point"] for p in train["curve"]] == [1, 2] and [p["iteration"] for p in train["curve"]] == [2, 4]
    paths = comp.write_outputs(runs)
    with open(paths["curves_csv"]) as f:
        rows = list(csv.DictReader(f))
    assert [r["point"] for r in rows] == ["1", "2", "3"] and rows[-1]["iteration"] == "6"
    with open(paths["curves_plot"], "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    md = open(paths["markdown"]).read()
    assert "equal epochs: 1 passes" in md and "learning-curve evaluations excluded" in md
    assert "| Images seen | Epochs |" in md

    # same command: skipped; another protocol in the same directory: the training is not reused
    msgs.clear()
    _comparison(tmp_path, [ModelSpec("y11", YOLO11)], Protocol(epochs=1, curve_points=3, clock="cpu"), msgs).run()
    assert any("finished earlier, skipped" in m for m in msgs)
    msgs.clear()
    other = _comparison(tmp_path, [ModelSpec("y11", YOLO11)], Protocol(epochs=2, clock="cpu"), msgs)
    other.run()
    assert other.failed and "other settings" in other.failed[0][2]
    assert os.path.isfile(tmp_path / "train" / "y11" / "seed0" / "model_final.pth")  # nothing lost


def test_budget_protocol_end_to_end(tmp_path):
    msgs = []
    comp = _comparison(tmp_path, [ModelSpec("y11", YOLO11)], Protocol(budget_minutes=0.2, curve_points=3), msgs)
    runs = comp.run()
    assert not comp.failed, msgs
    t = runs[0]["train"]
    assert t["budget_minutes"] == 0.2 and t["stopped_by"] in ("budget", "plan")
    # how many iterations fit in 12 s depends on the machine (1 under heavy load): the budget, not
    # the config's 8 fixed iterations, ended training, and every iteration saw the batch of 4
    assert t["iterations"] >= 1 and t["images_seen"] == 4 * t["iterations"]
    assert 1 <= len(t["curve"]) <= 2 and all(p["point"] in (1, 2) for p in t["curve"])
    assert t["seconds_by_clock"]["wall"] >= 0.2 * 60 * 0.8  # ends within an iteration of the budget
    assert any("training for 0.2 min of wall clock" in m for m in msgs)

"""tools/compare.py and medseg_core.comparison: columns, best/second-best marks, Welch test,
resuming a half-finished comparison (on a real, tiny Mask R-CNN run)."""
import csv
import math
import os

import pytest

import medseg_core  # noqa: F401

from medseg_core.comparison import (
    EFFICIENCY_COLUMNS, TASKS, Comparison, ModelSpec, extract_metrics, rank_marks, render_markdown,
    summarize, unify_flops_convention, welch_one_sided_p, write_csv,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INSTANCE_HEADERS = [
    "mask mAP50", "mask mAP50-95", "box mAP50-95", "P", "R", "AR@100", "Params (M)", "GFLOPs (paper conv.)",
    "GFLOPs (fvcore)", "Latency (ms)", "FPS", "Net latency (ms)", "Train time (min)",
]


def _run(name, seed, mask50, mask, box, p, r, ar, params, gflops, fvcore, ms, train_s, per_class=None):
    """A run record as Comparison persists it (numbers in the evaluators' percent units)."""
    segm = {"AP50": mask50, "AP": mask, "AR@100": ar}
    for c, v in (per_class or {}).items():
        segm[f"AP-{c}"] = v
    return {
        "name": name, "config": f"{name}.yaml", "seed": seed,
        "results": {"segm": segm, "bbox": {"AP": box}, "ultralytics_segm": {"P": p, "R": r}},
        "complexity": {"params": params, "gflops_paper": gflops, "gflops_fvcore": fvcore, "convention": "thop2x"},
        "latency": {"median_ms": ms, "fps": 1000.0 / ms},
        "train": {"seconds": train_s},
    }


# Paper Tables II and IV (Mask R-CNN, Swin Mask R-CNN, Mask2Former, YOLOv8-seg with the x10 typo
# corrected, LMSF-A); latency from the FPS column, invented training times.
PAPER_ROWS = [
    _run("mask_rcnn", 0, 75.9, 41.1, 45.0, 74.8, 61.9, 55.0, 43.9e6, 259.0, 130.0, 1000 / 13.6, 3600,
         {"bone": 30.0, "nerve": 50.0}),
    _run("swin_mask_rcnn", 0, 74.4, 36.5, 40.0, 75.2, 68.4, 50.0, 47.4e6, 264.0, 132.0, 1000 / 9.3, 5400,
         {"bone": 20.0, "nerve": 60.0}),
    _run("mask2former", 0, 74.8, 43.4, 44.0, 78.4, 65.6, 58.0, 44.4e6, 262.1, 131.0, 1000 / 17.0, 7200,
         {"bone": 45.0, "nerve": 40.0}),
    _run("yolov8seg", 0, 72.0, 40.9, 46.0, 75.4, 70.3, 52.0, 3.2e6, 12.0, 6.0, 1000 / 170.5, 1800,
         {"bone": 45.0, "nerve": 45.0}),
    _run("lmsfa", 0, 74.4, 43.0, 47.0, 78.9, 73.3, 60.0, 1.8e6, 8.8, 4.4, 1000 / 189.3, 2000,
         {"bone": 50.0, "nerve": 45.0}),
]
ORDER = [r["name"] for r in PAPER_ROWS]


def test_rank_marks_hand_made():
    assert rank_marks([40.1, 43.0, 43.4, float("nan"), 43.0], True) == ["", "second", "best", "", "second"]
    assert rank_marks([43.9, 47.4, 1.8, 3.2], False) == ["", "", "best", "second"]
    assert rank_marks([1.0, 1.0], True) == ["", ""]  # all tie: nothing to single out
    assert rank_marks([2.0, 1.0, 2.0, 0.5, 1.0], True) == ["best", "second", "best", "", "second"]
    assert rank_marks([5.0], True) == ["best"]
    assert rank_marks([float("nan")] * 3, True) == ["", "", ""]
    assert rank_marks([1.0, 2.0], None) == ["", ""]


def _cells(md: str, model: str):
    """Header -> cell of the first Markdown table row of ``model``."""
    lines = md.splitlines()
    header = next(l for l in lines if l.startswith("| Model | Seeds"))
    cols = [c.strip() for c in header.strip("|").split("|")]
    row = next(l for l in lines if l.startswith(f"| {model} ") or l.startswith(f"| {model} (ref.)"))
    return dict(zip(cols, [c.strip() for c in row.strip("|").split("|")]))


def test_markdown_marks_paper_rows():
    s = summarize(PAPER_ROWS, "coco", ORDER, reference="lmsfa")
    md = render_markdown(s, "coco", {"test_set": "peld_test"}, "lmsfa")
    lm, m2f, mrcnn, yolo, swin = (_cells(md, n) for n in ("lmsfa", "mask2former", "mask_rcnn", "yolov8seg", "swin_mask_rcnn"))
    # Table II as the paper marks it: mAP50 best Mask R-CNN 75.9, second Mask2Former 74.8
    assert mrcnn["mask mAP50"] == "**75.9**" and m2f["mask mAP50"] == "<u>74.8</u>"
    assert lm["mask mAP50"] == "74.4" and swin["mask mAP50"] == "74.4"
    # mAP50-95: Mask2Former 43.4 best, LMSF-A 43.0 second
    assert m2f["mask mAP50-95"] == "**43.4**" and lm["mask mAP50-95"] == "<u>43.0</u>"
    # precision: LMSF-A best, Mask2Former second; recall: LMSF-A best, YOLOv8 second
    assert lm["P"] == "**78.9**" and m2f["P"] == "<u>78.4</u>"
    assert lm["R"] == "**73.3**" and yolo["R"] == "<u>70.3</u>"
    # Table IV, lower is better: params / GFLOPs best LMSF-A, second YOLOv8-seg; FPS higher
    assert lm["Params (M)"] == "**1.80**" and yolo["Params (M)"] == "<u>3.20</u>"
    assert lm["GFLOPs (paper conv.)"] == "**8.8**" and yolo["GFLOPs (paper conv.)"] == "<u>12.0</u>"
    assert lm["FPS"] == "**189.3**" and yolo["FPS"] == "<u>170.5</u>"
    assert lm["Latency (ms)"] == "**5.3**" and yolo["Latency (ms)"] == "<u>5.9</u>"
    assert swin["FPS"] == "9.3" and swin["Params (M)"] == "47.40"
    # training time is not ranked
    assert "**" not in lm["Train time (min)"] and "<u>" not in lm["Train time (min)"]
    # one seed: no ± and no p column
    assert "±" not in md and "| p |" not in md
    # per-class table, ties share the mark
    pc = md[md.index("## mask AP"):]
    assert "| lmsfa | **50.0** | 45.0 |" in pc and "| mask_rcnn | 30.0 | <u>50.0</u> |" in pc
    assert "| mask2former | <u>45.0</u> | 40.0 |" in pc and "| yolov8seg | <u>45.0</u> | 45.0 |" in pc
    assert "| swin_mask_rcnn | 20.0 | **60.0** |" in pc


def test_marks_rank_the_printed_values():
    # 0.004 and 0.001 both print as 0.0, 14.44 and 14.36 both as 14.4: printed ties share the mark
    runs = [_run("a", 0, 11.04, 3.8, 4.2, 70, 15, 11, 1e6, 8, 4, 200, 60, {"duct": 0.004, "gb": 14.44}),
            _run("b", 0, 11.01, 2.0, 3.4, 70, 10, 10, 3e6, 12, 6, 250, 60, {"duct": 0.001, "gb": 14.36}),
            _run("c", 0, 6.7, 1.4, 1.4, 60, 9, 9, 3e6, 10, 5, 300, 60, {"duct": 0.0, "gb": 4.7})]
    md = render_markdown(summarize(runs, "coco", ["a", "b", "c"], None), "coco", {}, None)
    a, b = _cells(md, "a"), _cells(md, "b")
    assert a["mask mAP50"] == "**11.0**" and b["mask mAP50"] == "**11.0**"  # a printed tie
    pc = md[md.index("## mask AP"):]
    assert "| a | 0.0 | **14.4** |" in pc and "| b | 0.0 | <u>14.4</u> |" not in pc
    assert "| b | 0.0 | **14.4** |" in pc and "| c | 0.0 | <u>4.7</u> |" in pc


def test_tradeoff_plot_names_every_marker():
    # three Mask R-CNNs at the same GFLOPs (the measured endoscapes case): each marker carries
    # its number, in GFLOPs order, at its own centre, and the legend names that number
    from medseg_core.comparison import tradeoff_figure

    runs = [_run("rcnn_r50", 0, 1, 0.3, 0.5, 1, 1, 1, 44.0e6, 317.0, 158, 2600, 60),
            _run("lmsfa", 0, 11, 3.8, 4.2, 1, 1, 1, 1.8e6, 8.8, 4.4, 239, 60),
            _run("rcnn_swin", 0, 3, 0.8, 2.0, 1, 1, 1, 47.4e6, 317.5, 159, 2700, 60),
            _run("rcnn_cnx", 0, 6, 1.6, 2.5, 1, 1, 1, 47.7e6, 317.2, 159, 2600, 60)]
    fig, drawn = tradeoff_figure(summarize(runs, "coco", [r["name"] for r in runs], None), "coco", {})
    try:
        ax = fig.axes[0]
        numbers = {t.get_text(): t.xy for t in ax.texts}
        legend = [t.get_text() for t in ax.get_legend().get_texts()]
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)
    assert drawn and legend == ["1  lmsfa (1.8 M)", "2  rcnn_r50 (44.0 M)", "3  rcnn_cnx (47.7 M)",
                                "4  rcnn_swin (47.4 M)"]
    assert numbers == {"1": (8.8, 3.8), "2": (317.0, 0.3), "3": (317.2, 1.6), "4": (317.5, 0.8)}


def test_table_has_every_column(tmp_path):
    s = summarize(PAPER_ROWS, "coco", ORDER, reference="lmsfa")
    md = render_markdown(s, "coco", {"test_set": "t"}, "lmsfa")
    header = next(l for l in md.splitlines() if l.startswith("| Model | Seeds"))
    assert [c.strip() for c in header.strip("|").split("|")] == ["Model", "Seeds"] + INSTANCE_HEADERS
    path = tmp_path / "c.csv"
    write_csv(s, "coco", str(path), {"test_set": "t", "device": "cpu", "threads": 2})
    with open(path) as f:
        rows = list(csv.DictReader(f))
    keys = [c.key for c in TASKS["coco"].metric_columns + EFFICIENCY_COLUMNS]
    assert keys == ["mask_map50", "mask_map", "box_map", "precision", "recall", "ar100", "params_m",
                    "gflops_paper", "gflops_fvcore", "latency_ms", "fps", "net_latency_ms", "train_min"]
    assert len(rows) == 5 and all(k in rows[0] and k + "_std" in rows[0] for k in keys)
    lm = next(r for r in rows if r["model"] == "lmsfa")
    assert float(lm["params_m"]) == pytest.approx(1.8) and float(lm["train_min"]) == pytest.approx(2000 / 60)
    # semantic test sets get IoU/Dice columns from the same run structure
    sem = {"name": "lgms", "config": "x", "seed": 0, "results": {"sem_seg": {
        "per_image_IoU@model_res": 80.0, "per_image_F1@model_res": 88.0, "dataset_IoU@orig_res": 81.0,
        "dataset_Dice@orig_res": 89.0, "mIoU": 85.0}}}
    m = extract_metrics(sem, "sem_seg")
    assert (m["iou"], m["dice"], m["dataset_iou"], m["dataset_dice"]) == (80.0, 88.0, 81.0, 89.0)
    md = render_markdown(summarize([sem], "sem_seg", ["lgms"], None), "sem_seg", {}, None)
    assert "| IoU | Dice | IoU (dataset) | Dice (dataset) |" in md


def test_one_flops_convention_per_table():
    a = {"name": "lmsfa", "complexity": {"convention": "thop2x", "gflops_paper": 8.8, "gflops_thop2x": 8.8,
                                        "gmacs_thop": 4.4, "gflops_fvcore": 4.1}}
    b = {"name": "lgms", "complexity": {"convention": "thop", "gflops_paper": 1.5, "gflops_thop2x": 3.0,
                                       "gmacs_thop": 1.5, "gflops_fvcore": 1.6}}
    out = unify_flops_convention([b, a], reference="lmsfa")
    assert [r["complexity"]["gflops_paper"] for r in out] == [3.0, 8.8]
    assert b["complexity"]["gflops_paper"] == 1.5  # inputs untouched
    assert [r["complexity"]["gflops_paper"] for r in unify_flops_convention([b, a])] == [1.5, 4.4]


def test_welch_one_sided_against_hand_computation():
    from scipy import stats

    ref, other = [43.0, 43.4, 42.8], [41.0, 41.5, 40.9]
    m1, m2 = sum(ref) / 3, sum(other) / 3
    v1 = sum((x - m1) ** 2 for x in ref) / 2
    v2 = sum((x - m2) ** 2 for x in other) / 2
    se2 = v1 / 3 + v2 / 3
    t = (m1 - m2) / math.sqrt(se2)
    df = se2 ** 2 / ((v1 / 3) ** 2 / 2 + (v2 / 3) ** 2 / 2)
    expected = stats.t.sf(t, df)
    assert t == pytest.approx(7.5510, abs=1e-3) and df == pytest.approx(3.9897, abs=1e-3)
    assert welch_one_sided_p(ref, other) == pytest.approx(expected, rel=1e-9)
    assert welch_one_sided_p(ref, other) < 0.01
    assert welch_one_sided_p(other, ref) == pytest.approx(1 - expected, rel=1e-9)
    assert math.isnan(welch_one_sided_p([43.0], other))
    assert math.isnan(welch_one_sided_p([1.0, 1.0], [1.0, 1.0]))


def test_seeds_mean_std_and_p_column():
    runs = []
    for seed, (a, b) in enumerate([(43.0, 41.0), (43.4, 41.5), (42.8, 40.9)]):
        runs.append(_run("lmsfa", seed, 74.0, a, 40.0, 78.0, 70.0, 60.0, 1.8e6, 8.8, 4.4, 5.0, 100))
        runs.append(_run("mask_rcnn", seed, 75.0, b, 40.0, 74.0, 60.0, 55.0, 43.9e6, 259.0, 130.0, 70.0, 300))
    s = summarize(runs, "coco", ["mask_rcnn", "lmsfa"], reference="lmsfa")
    assert [x.n for x in s] == [3, 3]
    assert s[1].mean["mask_map"] == pytest.approx(43.0667, abs=1e-4)
    assert s[1].std["mask_map"] == pytest.approx(0.30551, abs=1e-4)
    assert s[0].p_value == pytest.approx(welch_one_sided_p([43.0, 43.4, 42.8], [41.0, 41.5, 40.9]))
    assert math.isnan(s[1].p_value)
    md = render_markdown(s, "coco", {}, "lmsfa")
    lm, mr = _cells(md, "lmsfa"), _cells(md, "mask_rcnn")
    assert lm["mask mAP50-95"] == "**43.1 ± 0.3**" and mr["mask mAP50-95"] == "<u>41.1 ± 0.3</u>"
    assert mr["p"] == f"{s[0].p_value:.3g}" and lm["p"] == "–"


QS = os.path.join(REPO, "configs", "quick_schedules")
TINY = [
    "SOLVER.MAX_ITER", "1", "SOLVER.IMS_PER_BATCH", "1", "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "64",
    "INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "64", "TEST.DETECTIONS_PER_IMAGE", "3",
    "MODEL.RPN.POST_NMS_TOPK_TEST", "20", "TEST.ULTRALYTICS.IMAGE_SIZE", "64",
]


def _comparison(out, models, messages, **kw):
    return Comparison(models, str(out), seeds=[0], opts=TINY, latency_runs=20, latency_warmup=1,
                      complexity_shape=(3, 64, 64), progress=messages.append, **kw)


def test_compare_real_run_and_resume(tmp_path):
    cfg = os.path.join(QS, "mask_rcnn_R50_FPN_scratch_bn_instant_test.yaml")
    msgs = []
    comp = _comparison(tmp_path, [ModelSpec("a", cfg)], msgs)
    assert comp.test_set == "smoke_peld_val" and comp.task == "coco" and comp.reference is None
    runs = comp.run()
    assert not comp.failed and len(runs) == 1
    run_a = tmp_path / "runs" / "a__seed0.json"
    final = tmp_path / "train" / "a" / "seed0" / "model_final.pth"
    assert run_a.is_file() and final.is_file()
    assert any("training 1 iterations" in m for m in msgs)
    r = runs[0]
    assert {"segm", "bbox", "ultralytics_segm", "ultralytics_box"} <= set(r["results"])
    m = extract_metrics(r, "coco")
    assert m["params_m"] == pytest.approx(43.987304) and m["gflops_paper"] > 0 and m["gflops_fvcore"] > 0
    assert r["latency"]["runs"] == 20 and m["fps"] == pytest.approx(1000 / m["latency_ms"])
    assert m["train_min"] > 0 and all(math.isfinite(m[k]) for k in ("mask_map", "box_map", "precision", "recall", "ar100"))
    paths = comp.write_outputs(runs)
    for p in paths.values():
        assert os.path.getsize(p) > 0
    with open(paths["markdown"]) as f:
        md = f.read()
    assert all(h in md for h in INSTANCE_HEADERS) and "## mask AP" in md
    with open(paths["plot"], "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"

    # resume: "a" is finished and skipped untouched; "b" (given weights: no training) is computed
    stamp = run_a.stat().st_mtime_ns
    msgs.clear()
    comp2 = _comparison(tmp_path, [ModelSpec("a", cfg), ModelSpec("b", cfg, weights=str(final))], msgs)
    runs2 = comp2.run()
    assert [x["name"] for x in runs2] == ["a", "b"] and run_a.stat().st_mtime_ns == stamp
    assert any(m.startswith("[1/2] a seed 0: finished earlier, skipped") for m in msgs)
    assert not any(m.startswith("[2/2] b") and "training" in m for m in msgs)
    assert runs2[1]["weights_given"] and "train" not in runs2[1]

    # a run lost after its training finished: the training is not repeated
    run_a.unlink()
    msgs.clear()
    runs3 = _comparison(tmp_path, [ModelSpec("a", cfg)], msgs).run()
    assert any("training finished earlier" in m for m in msgs) and not any("training 1 iterations" in m for m in msgs)
    assert runs3[0]["train"]["seconds"] == r["train"]["seconds"]


def test_compare_cli_arguments(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("compare_tool", os.path.join(REPO, "tools", "compare.py"))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    assert tool._name_of("configs/quick_schedules/lmsfa_instant_test.yaml") == "lmsfa"
    assert tool.main(["--configs", str(tmp_path / "missing.yaml")]) == 2
    cfg = os.path.join(QS, "mask_rcnn_R50_FPN_scratch_bn_instant_test.yaml")
    assert tool.main(["--configs", cfg, "--weights", "a", "b"]) == 2
    with pytest.raises(ValueError, match="unique"):
        Comparison([ModelSpec("a", cfg), ModelSpec("a", cfg)], str(tmp_path))


def test_complexity_line_names_each_models_shape_when_they_differ():
    from medseg_core.comparison.runner import _complexity_shapes

    same = [{"name": n, "complexity": {"input_shape": [3, 64, 64]}} for n in ("a", "b")]
    assert _complexity_shapes(same) == "(3, 64, 64)"
    mixed = [{"name": "a", "complexity": {"input_shape": [1, 32, 48, 32]}},
             {"name": "a", "complexity": {"input_shape": [1, 32, 48, 32]}},
             {"name": "b", "complexity": {"input_shape": [1, 48, 64, 48]}}, {"name": "c", "complexity": {}}]
    assert _complexity_shapes(mixed) == "each model's own (a (1, 32, 48, 32), b (1, 48, 64, 48))"

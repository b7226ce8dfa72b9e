"""tools/benchmark.py prints and saves a row per (config, variant, mode) on tiny configs. No timing
assertions: only structure, counts and the ratio bookkeeping."""
import json
import os

import pytest

import medseg_core  # noqa: F401  (compat shim before detectron2)
from medseg_core.testing import load_script

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LMSFA_CFG = os.path.join(REPO, "configs", "quick_schedules", "lmsfa_instant_test.yaml")
YOLO_CFG = os.path.join(REPO, "configs", "quick_schedules", "yolov8seg_instant_test.yaml")
TINY = ["--size", "64", "64", "--warmup", "1", "--runs", "20", "--threads", "1"]


# the tool sets torch's thread count for the process
pytestmark = pytest.mark.usefixtures("keep_torch_threads")


@pytest.fixture(scope="module")
def bench():
    return load_script(os.path.join(REPO, "tools", "benchmark.py"), "medseg_benchmark_tool")


def _table_rows(text):
    # table rows start at column 0 with the config name; ratio lines below the table are indented
    return [line.split() for line in text.splitlines() if line.split("_instant_test ")[0].isidentifier()
            and "_instant_test " in line and not line.startswith(" ")]


def test_benchmark_prints_a_row_per_config_runtime_and_mode(bench, tmp_path, capsys):
    out = tmp_path / "bench.json"
    rc = bench.main(["--configs", LMSFA_CFG, YOLO_CFG, "--modes", "network", "e2e", "--runtimes", "pytorch-fused",
                     "pytorch", "--repeats", "2", "--json", str(out)] + TINY + ["--opts", "INPUT.YOLO.IMAGE_SIZE", "64"])
    assert rc == 0
    text = capsys.readouterr().out
    rows = _table_rows(text)
    keys = {(r[0], r[1], r[2], r[3]) for r in rows}
    assert len(rows) == 8 and keys == {
        (c, v, "fp32", m) for c in ("lmsfa_instant_test", "yolov8seg_instant_test")
        for v in ("pytorch-fused", "pytorch") for m in ("network", "e2e")}
    assert "1 intra-op threads" in text and "batch 1" in text
    # parameter counts of the two architectures at 4 classes (issue 3 targets)
    params = {r[0]: int(r[5].replace(",", "")) for r in rows}
    assert params == {"lmsfa_instant_test": 1_825_079, "yolov8seg_instant_test": 3_264_396}

    data = json.loads(out.read_text())
    assert data["threads"] == 1 and data["reference"] == "yolov8seg_instant_test" and data["repeats"] == 2
    assert set(data["weights"].values()) == {"random initialisation"}
    from PIL import Image

    w, h = Image.open(data["image"]).size  # the first image of the config's test set
    for r in data["rows"]:
        assert r["runs"] == 40 and len(r["repeat_medians_ms"]) == 2  # 20 timed runs x 2 repeats
        assert r["min_ms"] <= r["p10_ms"] <= r["median_ms"] <= r["p90_ms"] <= r["max_ms"]
        assert r["throughput_fps"] == pytest.approx(1000.0 / r["median_ms"])
        # network: the frame's padded letterbox at --size 64 64; e2e: the frame at its own size
        assert r["input_shape"][-2:] == ([64, 64] if r["mode"] == "network" else [h, w])
        if r["name"] == "yolov8seg_instant_test":
            assert r["ratio_to_reference"] == 1.0
        else:
            ref = next(x for x in data["rows"] if x["name"] == "yolov8seg_instant_test"
                       and (x["runtime"], x["mode"]) == (r["runtime"], r["mode"]))
            assert r["ratio_to_reference"] == pytest.approx(r["median_ms"] / ref["median_ms"])
            assert len(r["ratio_per_repeat"]) == 2


def test_benchmark_stages_and_onnxruntime_rows(bench, tmp_path, capsys):
    out = tmp_path / "onnx.json"
    rc = bench.main(["--configs", YOLO_CFG, "--modes", "stages", "network", "--runtimes", "onnxruntime",
                     "--repeats", "1", "--clock", "cpu", "--json", str(out)] + TINY
                    + ["--opts", "INPUT.YOLO.IMAGE_SIZE", "64", "MODEL.LMSFA.TEST_CONF_THRESH", "0.0"])
    assert rc == 0
    text = capsys.readouterr().out
    rows = _table_rows(text)
    assert [(r[0], r[1], r[3]) for r in rows] == [("yolov8seg_instant_test", "onnxruntime", m)
                                                  for m in ("stage:pre", "stage:net", "stage:post", "network")]
    data = json.loads(out.read_text())
    assert data["clock"] == "cpu" and all(r["runs"] == 20 and r["min_ms"] > 0 for r in data["rows"])
    # conf 0: every anchor is a candidate, the model keeps TEST_MAX_DET detections
    assert data["detections"]["yolov8seg_instant_test/onnxruntime/fp32"] > 0
    steps = data["post_steps_ms"]["yolov8seg_instant_test/onnxruntime/fp32"]
    assert {"decode", "nms", "masks", "instances"} <= set(steps)
    assert sum(steps.values()) == pytest.approx(100.0, abs=0.5)  # shares of the profiled post stage, in %
    assert "post-processing steps" in text


def test_benchmark_rejects_fp16_on_the_cpu_and_cpu_clock_with_threads(bench, tmp_path):
    with pytest.raises(ValueError, match="fp16"):
        bench.main(["--configs", YOLO_CFG, "--precision", "fp16", "--device", "cpu", "--modes", "network",
                    "--json", str(tmp_path / "x.json")] + TINY)
    with pytest.raises(ValueError, match="--threads 1"):
        bench.main(["--configs", YOLO_CFG, "--modes", "network", "--clock", "cpu", "--json", str(tmp_path / "y.json")]
                   + TINY[:-2] + ["--threads", "2"])

"""Every entry point, run as a subprocess on bad input: exit status 2, stderr's last line is
``error: <file>: <problem>``, no traceback unless --debug / MEDSEG_DEBUG=1, nothing written or
trained. Unexpected exceptions keep their traceback."""
import json
import os
import subprocess
import sys

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from PIL import Image

from medseg_core.checkpoint import SafeCheckpointer
from medseg_core.cli_errors import format_error
from medseg_core.errors import DatasetError
from medseg_core.testing import load_test_cfg

from conftest import CONFIGS, REPO

LMSFA_CFG = os.path.join(CONFIGS, "quick_schedules", "lmsfa_instant_test.yaml")


def _run(script, *args, env=None, cwd=REPO):
    e = dict(os.environ, OMP_NUM_THREADS="1")
    e.pop("MEDSEG_DEBUG", None)
    e.update(env or {})
    return subprocess.run([sys.executable, os.path.join(REPO, script), *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, env=e, timeout=900)


def _last_line(proc):
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _assert_one_line_error(proc, starts, contains=()):
    last = _last_line(proc)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert last.startswith(f"error: {starts}"), last
    for c in contains:
        assert c in last, last
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]


@pytest.fixture(scope="module")
def six_class_checkpoint(tmp_path_factory):
    """LMSF-A weights of the tiny config with 6 classes (the configs under test have 4)."""
    from detectron2.modeling import build_model

    folder = tmp_path_factory.mktemp("six")
    cfg = load_test_cfg(LMSFA_CFG, "MODEL.LMSFA.NUM_CLASSES", 6)
    torch.manual_seed(0)
    SafeCheckpointer(build_model(cfg), save_dir=str(folder)).save("six")
    return str(folder / "six.pth")


def test_train_net_config_error_is_one_line_and_trains_nothing(tmp_path):
    proc = _run("tools/train_net.py", "--config-file", LMSFA_CFG, "MODEL.DEVICE", "cpu", "OUTPUT_DIR", tmp_path / "o",
                "SOLVER.MAX_ITER", "0", "INPUT.YOLO.MOSAIC_PROB", "1.5")
    assert _last_line(proc) == ("error: " + LMSFA_CFG + ": 2 config values are outside their valid range "
                                "(each listed above)")
    assert "error: command line: SOLVER.MAX_ITER must be an integer >= 1, got 0" in proc.stderr
    assert "error: command line: INPUT.YOLO.MOSAIC_PROB must be a finite number in [0, 1], got 1.5" in proc.stderr
    _assert_one_line_error(proc, LMSFA_CFG)
    assert not (tmp_path / "o" / "metrics.json").exists() and not (tmp_path / "o" / "last_checkpoint").exists()


def test_debug_flag_and_environment_show_the_traceback(tmp_path):
    proc = _run("tools/train_net.py", "--config-file", tmp_path / "missing.yaml", "--debug")
    assert proc.returncode == 2 and "Traceback" in proc.stderr
    assert _last_line(proc) == f"error: {tmp_path / 'missing.yaml'}: config file does not exist"
    proc = _run("tools/model_card.py", "--config-file", LMSFA_CFG, "SOLVER.IMS_PER_BATCH", "0",
                env={"MEDSEG_DEBUG": "1"})
    assert proc.returncode == 2 and "Traceback" in proc.stderr
    assert _last_line(proc) == "error: command line: SOLVER.IMS_PER_BATCH must be an integer >= 1, got 0"


def test_eval_only_with_a_checkpoint_for_another_class_count(tmp_path, six_class_checkpoint):
    proc = _run("tools/train_net.py", "--config-file", LMSFA_CFG, "--eval-only", "MODEL.DEVICE", "cpu",
                "OUTPUT_DIR", tmp_path / "o", "MODEL.WEIGHTS", six_class_checkpoint)
    _assert_one_line_error(proc, f"{six_class_checkpoint}: does not fit the model built from the config: ",
                           ["differ in shape", "checkpoint (6, ", "vs model (4, ",
                            "(hint: the checkpoint was trained with MODEL.LMSFA.NUM_CLASSES 6"])
    assert not os.path.isdir(tmp_path / "o" / "inference")


def test_demo_export_compare_refuse_a_mismatched_checkpoint(tmp_path, six_class_checkpoint):
    img = tmp_path / "in.png"
    Image.fromarray(np.full((64, 64, 3), 90, np.uint8)).save(img)
    starts = f"{six_class_checkpoint}: does not fit the model built from the config: "
    demo = _run("demo/demo.py", "--config-file", LMSFA_CFG, "--input", img, "--output", tmp_path / "demo",
                "--opts", "MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", six_class_checkpoint)
    _assert_one_line_error(demo, starts, ["MODEL.LMSFA.NUM_CLASSES 6"])
    assert os.listdir(tmp_path / "demo") == []
    export = _run("tools/export.py", "--config-file", LMSFA_CFG, "--output", tmp_path / "export", "--input", img,
                  "--opts", "MODEL.WEIGHTS", six_class_checkpoint)
    _assert_one_line_error(export, starts, ["MODEL.LMSFA.NUM_CLASSES 6"])
    assert os.listdir(tmp_path / "export") == []
    compare = _run("tools/compare.py", "--configs", LMSFA_CFG, "--weights", six_class_checkpoint,
                   "--output-dir", tmp_path / "cmp", "--", "MODEL.DEVICE", "cpu")
    _assert_one_line_error(compare, starts, ["MODEL.LMSFA.NUM_CLASSES 6"])
    assert not (tmp_path / "cmp").exists()


def test_benchmark_refuses_bad_config_values_before_timing(tmp_path):
    proc = _run("tools/benchmark.py", "--configs", LMSFA_CFG, "--json", tmp_path / "b.json",
                "--opts", "MODEL.LMSFA.TEST_NMS_IOU", "-0.1")
    _assert_one_line_error(proc, "command line: MODEL.LMSFA.TEST_NMS_IOU must be a finite number in [0, 1], got -0.1")
    assert not (tmp_path / "b.json").exists()


def _jpeg(path, seed):
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(path, quality=90)


def test_quickstart_lists_every_bad_image_and_trains_nothing(tmp_path):
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True), (data / "annotations").mkdir()
    mask = np.zeros((48, 64), np.uint8)
    mask[10:30, 10:40] = 1
    rle = mask_util.encode(np.asfortranarray(mask))
    rle = {"size": rle["size"], "counts": rle["counts"].decode()}
    for split, n in (("train", 4), ("val", 1)):
        images, anns = [], []
        for i in range(n):
            name = f"{split}{i}.jpg"
            _jpeg(data / "images" / name, i)
            images.append({"id": i + 1, "file_name": name, "height": 48, "width": 64})
            anns.append({"id": i + 1, "image_id": i + 1, "category_id": 1, "bbox": [10, 10, 30, 20], "area": 600,
                         "iscrowd": 0, "segmentation": rle})
        coco = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "nerve"}]}
        (data / "annotations" / f"instances_{split}.json").write_text(json.dumps(coco))
    raw = (data / "images" / "train1.jpg").read_bytes()
    (data / "images" / "train1.jpg").write_bytes(raw[: len(raw) // 3])  # header intact, body cut
    (data / "images" / "train2.jpg").write_bytes(b"GIF89a not really")
    os.remove(data / "images" / "train3.jpg")
    before = {p: p.read_bytes() for p in (data / "images").iterdir()}
    proc = _run("tools/quickstart.py", "--data", data, "--output", tmp_path / "out", "--max-iter", "2",
                "MODEL.DEVICE", "cpu", env={"MEDSEG_CACHE_DIR": str(tmp_path / "cache")})
    js = data / "annotations" / "instances_train.json"
    _assert_one_line_error(proc, f"{js}: 3 problems in 4 images found by the pre-training check")
    for name, problem in (("train1.jpg", "cannot decode image"), ("train2.jpg", "cannot decode image"),
                          ("train3.jpg", "image file does not exist")):
        assert f"error: {data / 'images' / name}: {problem}" in proc.stderr
    assert not any(f.endswith(".pth") for f in os.listdir(tmp_path / "out"))
    assert {p: p.read_bytes() for p in (data / "images").iterdir()} == before


def test_demo_never_overwrites_inputs_and_writes_one_output_per_input(tmp_path):
    folder = tmp_path / "imgs"
    for sub in ("a", "b"):
        (folder / sub).mkdir(parents=True)
        Image.fromarray(np.full((40, 56, 3), 120, np.uint8)).save(folder / sub / "x.png")
    Image.fromarray(np.full((40, 56, 3), 60, np.uint8)).save(folder / "a" / "x.jpg")
    before = {p: p.read_bytes() for p in folder.rglob("*.*")}
    # --output is the input folder: the output for a/x.png would replace it -> refused, nothing written
    proc = _run("demo/demo.py", "--config-file", LMSFA_CFG, "--input", folder / "a", "--output", folder / "a",
                "--opts", "MODEL.DEVICE", "cpu")
    _assert_one_line_error(proc, f"{folder / 'a' / 'x.png'}: the output for ", ["would overwrite the input file"])
    assert {p: p.read_bytes() for p in folder.rglob("*.*")} == before
    # three inputs sharing the stem "x", and an earlier output in the way: three new files, nothing replaced
    out = tmp_path / "out"
    out.mkdir()
    (out / "x.png").write_bytes(b"an earlier result")
    proc = _run("demo/demo.py", "--config-file", LMSFA_CFG, "--input", folder / "a" / "x.png", folder / "a" / "x.jpg",
                folder / "b" / "x.png", "--output", out, "--opts", "MODEL.DEVICE", "cpu")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(os.listdir(out)) == ["x.png", "x_2.png", "x_3.png", "x_4.png"]
    assert (out / "x.png").read_bytes() == b"an earlier result"
    assert "wrote 3 overlay(s)" in proc.stderr
    assert {p: p.read_bytes() for p in folder.rglob("*.*")} == before


def test_unexpected_exceptions_keep_their_traceback(tmp_path):
    script = tmp_path / "boom.py"
    script.write_text("from medseg_core.cli_errors import run_cli\nrun_cli(lambda: {}['missing'])\n")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=REPO,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 1 and "Traceback" in proc.stderr and _last_line(proc) == "KeyError: 'missing'"


def test_data_loader_worker_errors_print_only_the_original_message():
    """PyTorch re-raises a worker's exception with the whole worker traceback as its message."""
    wrapped = DatasetError("Caught DatasetError in DataLoader worker process 0.\nOriginal Traceback (most recent "
                           "call last):\n  File \"x.py\", line 1, in f\nmedseg_core.errors.DatasetError: "
                           "/data/a.jpg: cannot decode image (truncated)\n")
    assert format_error(wrapped) == ["error: /data/a.jpg: cannot decode image (truncated)"]

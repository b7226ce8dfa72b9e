"""The README's first command (``make demo`` = tools/quickstart.py): with no data it generates the
smoke-test set and says so; with a LabelMe folder it converts, splits and trains on that. Both
train LMSF-A's instant config, report COCO segm AP and write ground truth | prediction overlays."""
import json
import os
import subprocess
import sys

from PIL import Image

from medseg_core.data.smoke import make_smoke_labelme

from conftest import REPO

QUICKSTART = os.path.join(REPO, "tools", "quickstart.py")


def _run(tmp_path, *args, smoke_dir=None):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    if smoke_dir:
        env["MEDSEG_SMOKE_DIR"] = str(smoke_dir)
    out_dir = tmp_path / "out"
    cmd = [sys.executable, QUICKSTART, "--output", str(out_dir), "--max-iter", "3", "--num-overlays", "2", *args]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout, out_dir


def _check_outputs(out_dir, test_set):
    summary = json.loads((out_dir / "quickstart_summary.json").read_text())
    assert summary["config"].endswith("lmsfa_instant_test.yaml")
    assert (out_dir / "model_final.pth").is_file()
    assert (out_dir / "inference" / test_set / "coco_instances_results.json").is_file()
    assert len(summary["overlays"]) == 2
    for path in summary["overlays"]:
        with Image.open(path) as im:
            w, h = im.size
            assert w >= 2 * h * 0.9  # ground truth | prediction side by side
    return summary


def test_quickstart_without_data_generates_and_announces_smoke_set(tmp_path):
    stdout, out_dir = _run(tmp_path, smoke_dir=tmp_path / "smoke")
    assert "smoke-test" in stdout.lower() and "synthetic" in stdout.lower()
    assert "smoke_peld_val: segm AP" in stdout and "smoke_peld_test: segm AP" in stdout
    assert (tmp_path / "smoke" / "peld_instances" / "annotations" / "instances_train.json").is_file()
    summary = _check_outputs(out_dir, "smoke_peld_test")
    assert summary["data"] == "generated smoke-test set"


def test_quickstart_on_a_labelme_folder(tmp_path):
    make_smoke_labelme(str(tmp_path / "labelme"), num_images=20, size=128, seed=3)
    stdout, out_dir = _run(tmp_path, "--data", str(tmp_path / "labelme"))
    assert "synthetic smoke-test" not in stdout.lower()
    assert "segm AP" in stdout
    summary = _check_outputs(out_dir, summary_test_set(out_dir))
    assert summary["data"] == str(tmp_path / "labelme")


def summary_test_set(out_dir):
    """Name of the last test set the quickstart evaluated (the user data's registered names)."""
    return list(json.loads((out_dir / "quickstart_summary.json").read_text())["results"])[-1]

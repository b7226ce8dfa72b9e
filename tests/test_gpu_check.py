"""tools/gpu_check.py on a machine without CUDA: it checks its arguments, says that there is
nothing to check and exits 0; its report renders failures first; its ``--cpu-dry-run`` runs a
section end to end on the CPU (the DDP one: gloo for NCCL). The other GPU sections run in full
only where a GPU is, or by hand with ``--cpu-dry-run``.)"""
import importlib.util
import json
import os
import subprocess
import sys
import time

import pytest
import torch

from conftest import REPO

TOOL = os.path.join(REPO, "tools", "gpu_check.py")
pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="on a CUDA machine gpu_check runs for real")


def _run(*args):
    return subprocess.run([sys.executable, TOOL, *args], cwd=REPO, capture_output=True, text=True, timeout=300)


def test_without_cuda_it_says_so_and_exits_0(tmp_path):
    proc = _run("--output", str(tmp_path / "report"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "no CUDA device is visible" in proc.stdout and "nothing to check" in proc.stdout
    assert not (tmp_path / "report").exists()


@pytest.mark.parametrize("args, message", [
    (["--budget-minutes", "0"], "--budget-minutes must be within"),
    (["--sections", "fps", "nonsense"], "invalid choice: 'nonsense'"),
    (["--output", "FILE"], "exists and is not a folder"),
])
def test_bad_arguments_are_refused_before_anything_runs(tmp_path, args, message):
    (tmp_path / "FILE").write_text("x")
    args = [str(tmp_path / "FILE") if a == "FILE" else a for a in args]
    proc = _run(*args)
    assert proc.returncode != 0 and message in proc.stderr, proc.stderr[-2000:]


def test_report_lists_failures_first_and_writes_json(tmp_path):
    spec = importlib.util.spec_from_file_location("gpu_check_tool", TOOL)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    report = tool.Report(str(tmp_path), 480.0, time.monotonic())
    report.section("precision", {"rows": [{"family": "LMSF-A", "fp16": 0.5}], "failures": ["LMSF-A: fp16 differs"]})
    report.section("fps", {"skipped": "time budget (3 s left, needs 15 s)"})
    md = (tmp_path / "gpu_check.md").read_text()
    assert md.index("FAILED: 1 check(s)") < md.index("## precision") < md.index("## fps")
    assert "| LMSF-A | 0.5 |" in md and "skipped: time budget" in md
    data = json.loads((tmp_path / "gpu_check.json").read_text())
    assert data["failures"] == ["precision: LMSF-A: fp16 differs"]


def test_cpu_dry_run_of_the_ddp_section_passes_and_reports(tmp_path):
    """The cheapest real section: the trainer's DDP wrapper at world size 1 (gloo), SyncBN,
    accumulation, evaluation and the rank-0 checkpoint, as the GPU run does it with NCCL."""
    out, work = tmp_path / "report", tmp_path / "work"
    proc = _run("--cpu-dry-run", "--sections", "env", "ddp_nccl", "--budget-minutes", "5",
                "--output", str(out), "--work-dir", str(work))
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    data = json.loads((out / "gpu_check.json").read_text())
    assert data["failures"] == [] and list(data["sections"]) == ["env", "ddp_nccl"]
    (row,) = data["sections"]["ddp_nccl"]["rows"]
    assert row["backend"] == "gloo" and row["world_size"] == 1 and row["ok"] is True
    assert row["iters"] == 8 and row["sync_bn_layers"] > 0
    assert (work / "ddp_nccl" / "model_final.pth").is_file()
    assert "All checks passed" in (out / "gpu_check.md").read_text()


def test_network_of_a_model_without_complexity_forward_is_its_deploy_network(tmp_path):
    """precision / fps time Detectron2's Mask R-CNN (no ``complexity_forward``) through the deploy
    interface: the exported network on raw pixels, one output per deploy output name."""
    from detectron2.modeling import build_model

    from medseg_core.deploy import DeployNetwork
    from medseg_core.projects import load_projects

    load_projects()
    spec = importlib.util.spec_from_file_location("gpu_check_tool", TOOL)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    tool.DEVICE = "cpu"
    cfg = tool._cfg(tool.FAMILIES["Mask R-CNN"][0], output_dir=str(tmp_path))
    model = build_model(cfg).eval()
    assert not hasattr(model, "complexity_forward")
    net, x = tool._network_and_input(cfg, model, (3, 64, 64))
    assert isinstance(net, DeployNetwork) and x.shape == (1, 3, 64, 64) and 0 <= x.min() and x.max() <= 255
    with torch.no_grad():
        out = net(x)
    assert len(out) == len(net.model.deploy_output_names()) and all(torch.isfinite(o).all() for o in out)

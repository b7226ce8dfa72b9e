"""Safe checkpoints: foreign pickles refused, atomic writes, and resume after SIGKILL."""
import argparse
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from medseg_core.checkpoint import SafeCheckpointer, safe_torch_load
from medseg_core.errors import UnsafeCheckpointError

from conftest import CONFIGS, REPO

# Fast instant-test config used to exercise real training, checkpointing and resume.
RESUME_CONFIG = os.path.join(CONFIGS, "quick_schedules", "mask_rcnn_R50_FPN_scratch_bn_instant_test.yaml")


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))


def test_plain_state_dict_roundtrip(tmp_path):
    m = _model()
    ck = SafeCheckpointer(m, save_dir=str(tmp_path))
    ck.save("model_a", iteration=3)
    assert (tmp_path / "last_checkpoint").read_text() == "model_a.pth"
    m2 = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    extra = SafeCheckpointer(m2, save_dir=str(tmp_path)).resume_or_load("", resume=True)
    assert extra["iteration"] == 3
    for a, b in zip(m.state_dict().values(), m2.state_dict().values()):
        assert torch.equal(a, b)


def test_foreign_pickled_object_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"model": _model().state_dict(), "extra": argparse.Namespace(x=1)}, path)
    with pytest.raises(UnsafeCheckpointError, match=r"evil\.pth: refused: .*argparse\.Namespace"):
        SafeCheckpointer(_model()).load(str(path))


def test_pkl_is_refused(tmp_path):
    path = tmp_path / "weights.pkl"
    path.write_bytes(b"\x80\x04K\x01.")
    with pytest.raises(UnsafeCheckpointError, match=r"weights\.pkl: refusing to load a \.pkl"):
        safe_torch_load(str(path))


def test_safetensors_weights_load(tmp_path):
    from safetensors.torch import save_file

    m = _model()
    save_file(m.state_dict(), str(tmp_path / "w.safetensors"))
    m2 = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    SafeCheckpointer(m2).load(str(tmp_path / "w.safetensors"))
    assert torch.equal(m.state_dict()["0.weight"], m2.state_dict()["0.weight"])


def test_kill_during_checkpoint_write_keeps_last_checkpoint_valid(tmp_path):
    """A process killed while writing a checkpoint leaves the previous one tagged and loadable."""
    script = textwrap.dedent(f"""
        import os, signal, torch
        import medseg_core
        from medseg_core.checkpoint import SafeCheckpointer
        m = torch.nn.Linear(4, 4)
        ck = SafeCheckpointer(m, save_dir={str(tmp_path)!r})
        ck.save("model_0000001")
        real_save = torch.save
        def dying_save(obj, f, *a, **k):
            f.write(b"PK\\x03\\x04 half a zip")  # some bytes reach the disk ...
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)  # ... then the process dies mid-write
        torch.save = dying_save
        ck.save("model_0000002")
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO)
    assert proc.returncode == -signal.SIGKILL
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000001.pth"
    assert not (tmp_path / "model_0000002.pth").exists()
    extra = SafeCheckpointer(torch.nn.Linear(4, 4), save_dir=str(tmp_path)).resume_or_load("", resume=True)
    assert isinstance(extra, dict)


def _train_cmd(out_dir, *extra):
    return [
        sys.executable, os.path.join(REPO, "tools", "train_net.py"), "--config-file", RESUME_CONFIG,
        *extra, "MODEL.DEVICE", "cpu", "OUTPUT_DIR", str(out_dir), "SOLVER.MAX_ITER", "6",
        "SOLVER.CHECKPOINT_PERIOD", "2", "DATASETS.TEST", "()",
        "INPUT.MIN_SIZE_TRAIN", "(128,)", "INPUT.MAX_SIZE_TRAIN", "128",
    ]


def test_resume_after_sigkill(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    log = open(tmp_path / "first.log", "w")
    proc = subprocess.Popen(_train_cmd(tmp_path), cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env)
    target = tmp_path / "model_0000003.pth"
    deadline = time.time() + 600
    while not target.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert target.exists(), open(tmp_path / "first.log").read()[-3000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (tmp_path / "last_checkpoint").read_text() in ("model_0000003.pth", "model_0000005.pth")
    resumed_from = int((tmp_path / "last_checkpoint").read_text()[6:13])

    out = subprocess.run(_train_cmd(tmp_path, "--resume"), cwd=REPO, capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert f"Starting training from iteration {resumed_from + 1}" in out.stdout + out.stderr
    assert (tmp_path / "last_checkpoint").read_text() == "model_final.pth"
    final = safe_torch_load(str(tmp_path / "model_final.pth"))
    assert final["iteration"] == 5
    iters = [json.loads(l)["iteration"] for l in open(tmp_path / "metrics.json") if l.strip()]
    assert max(iters) == 5

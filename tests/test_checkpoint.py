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


def test_killed_while_writing_model_final_then_resumed_ends_with_a_valid_model_final(tmp_path):
    """The periodic checkpoint of the last iteration is complete, model_final.pth is being written
    when the process dies: --resume has no iteration left to run and must still write it."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    script = textwrap.dedent(f"""
        import os, runpy, signal, sys
        import medseg_core.checkpoint as ck
        real = ck.atomic_torch_save
        from medseg_core.atomic import atomic_write
        def dying(obj, path):
            if path.endswith("model_final.pth"):
                with atomic_write(path, "wb") as f:  # killed half-way: the temporary stays
                    f.write(b"PK\\x03\\x04 half a zip")
                    f.flush()
                    os.kill(os.getpid(), signal.SIGKILL)
            real(obj, path)
        ck.atomic_torch_save = dying
        sys.argv = {_train_cmd(tmp_path)[1:]!r}
        runpy.run_path(sys.argv[0], run_name="__main__")
    """)
    first = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, env=env)
    assert first.returncode == -signal.SIGKILL, first.stderr[-3000:]
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000005.pth"
    assert not (tmp_path / "model_final.pth").exists() and len(list(tmp_path.glob(".model_final.pth.*.tmp"))) == 1
    out = subprocess.run(_train_cmd(tmp_path, "--resume"), cwd=REPO, capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    final = safe_torch_load(str(tmp_path / "model_final.pth"))
    assert final["iteration"] == 5 and "model" in final
    assert (tmp_path / "last_checkpoint").read_text() == "model_final.pth"
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))


# ----------------------------------------------------------------------------- strict matching
LMSFA_CFG = os.path.join(CONFIGS, "quick_schedules", "lmsfa_instant_test.yaml")


def _lmsfa(num_classes, tmp_path, name):
    from detectron2.modeling import build_model

    from medseg_core.testing import load_test_cfg

    cfg = load_test_cfg(LMSFA_CFG, "MODEL.LMSFA.NUM_CLASSES", num_classes, output_dir=str(tmp_path / name))
    torch.manual_seed(0)
    return cfg, build_model(cfg)


def test_class_head_mismatch_names_checkpoint_tensors_and_config_key(tmp_path):
    from medseg_core.engine.trainer import load_weights_for_eval
    from medseg_core.errors import CheckpointMismatchError

    _, six = _lmsfa(6, tmp_path, "six")
    SafeCheckpointer(six, save_dir=str(tmp_path)).save("six_classes")
    cfg4, four = _lmsfa(4, tmp_path, "four")
    path = str(tmp_path / "six_classes.pth")
    with pytest.raises(CheckpointMismatchError) as e:
        load_weights_for_eval(cfg4, four, path)
    msg = e.value.one_line()
    assert msg.startswith(f"{path}: does not fit the model built from the config: ")
    assert "tensor(s) differ in shape (" in msg and "checkpoint (6, " in msg and "vs model (4, " in msg
    assert "hint: the checkpoint was trained with MODEL.LMSFA.NUM_CLASSES 6" in msg
    assert "WEIGHTS_ALLOW_PARTIAL" not in msg  # evaluation never runs a partly loaded model


def test_backbone_only_checkpoint_needs_an_explicit_opt_in(tmp_path):
    from medseg_core.engine import MedSegTrainer
    from medseg_core.errors import CheckpointMismatchError

    cfg, model = _lmsfa(4, tmp_path, "src")
    backbone = {k: v for k, v in model.state_dict().items() if k.startswith("backbone.")}
    assert 0 < len(backbone) < len(model.state_dict())
    torch.save({"model": backbone}, tmp_path / "backbone.pth")
    opts = ["MODEL.WEIGHTS", str(tmp_path / "backbone.pth"), "SOLVER.MAX_ITER", "1"]
    from medseg_core.testing import load_test_cfg

    strict = load_test_cfg(LMSFA_CFG, *opts, output_dir=str(tmp_path / "strict"))
    with pytest.raises(CheckpointMismatchError, match=r"tensor\(s\) missing from the checkpoint") as e:
        MedSegTrainer(strict).resume_or_load(resume=False)
    assert "set MODEL.WEIGHTS_ALLOW_PARTIAL True" in e.value.hint
    partial = load_test_cfg(LMSFA_CFG, *opts, "MODEL.WEIGHTS_ALLOW_PARTIAL", "True", output_dir=str(tmp_path / "p"))
    trainer = MedSegTrainer(partial)
    trainer.resume_or_load(resume=False)
    loaded = trainer.model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in backbone.items())


def test_suggested_class_count_prefers_the_architectures_own_key():
    from medseg_core.checkpoint import suggest_class_count
    from medseg_core.config import load_config

    cfg = load_config(LMSFA_CFG, ["MODEL.LMSFA.NUM_CLASSES", "3"])
    # a (classes, C, 1, 1) head conv: MODEL.LMSFA.NUM_CLASSES = 3 explains 3 vs 7 exactly
    assert suggest_class_count(cfg, [("head.cls.weight", (7, 64, 1, 1), (3, 64, 1, 1))]) == ("MODEL.LMSFA.NUM_CLASSES", 7)
    rcnn = load_config(os.path.join(CONFIGS, "quick_schedules", "mask_rcnn_R50_FPN_scratch_bn_instant_test.yaml"),
                       ["MODEL.ROI_HEADS.NUM_CLASSES", "5"])
    # Mask R-CNN's cls_score has a background column: 5 + 1 in the model, 3 + 1 in the checkpoint
    assert suggest_class_count(rcnn, [("roi_heads.box_predictor.cls_score.weight", (4, 1024), (6, 1024))]) == (
        "MODEL.ROI_HEADS.NUM_CLASSES", 3)

"""LGMS configs on the real shared data: one training step per config."""
import glob
import os

import pytest

from medseg_core.testing import load_test_cfg, train_steps

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REAL_CONFIGS = sorted(
    p for p in glob.glob(os.path.join(REPO, "configs/Kvasir-SemanticSegmentation/*.yaml"))
    + glob.glob(os.path.join(REPO, "configs/Endoscapes-SemanticSegmentation/*.yaml"))
    if not os.path.basename(p).startswith("Base")
)


@pytest.mark.parametrize("path", REAL_CONFIGS, ids=os.path.basename)
def test_one_training_step_on_real_images(shared_data, path):
    # the config's data, mapper (rotate/flip/resize), model and loss; half the input side and
    # batch 2 to keep CI fast (the U-Net costs 65 GMACs per 256x256 image)
    multiclass = "Endoscapes" in path
    size = "(128, 224)" if multiclass else "(128, 128)"
    cfg = load_test_cfg(path, "SOLVER.IMS_PER_BATCH", "2", "INPUT.FIXED_SIZE", size)
    (losses,) = train_steps(cfg, 1)
    assert set(losses) == ({"loss_ce", "loss_dice"} if multiclass else {"loss_bce", "loss_dice"})
    assert all(0 < v < 10 for v in losses.values())

"""2D baselines of LGMSNet's Table 1: UNeXt (written from its paper) and MONAI's Attention
U-Net, U-Net++ and 2D SwinUNETR, with exact parameter counts, the UNeXt token shift checked by
hand, and every instant config trained and evaluated end to end."""
import math
import os

import pytest
import torch

from lgms.unext import ShiftedMLPBlock, shift_tokens
from medseg_core.complexity import model_complexity
from medseg_core.engine.trainer import MedSegTrainer
from medseg_core.testing import load_test_cfg
from test_lgms_configs import run_instant_test

KVASIR = "configs/Kvasir-SemanticSegmentation"

# config -> (parameters with 3 inputs, 1 output; thop GMACs at 256; LGMSNet Table 1 params / GFLOPs)
COUNTS = {
    "unext": (1_471_921, 0.573, 1.47e6, 0.58),
    "attentionunet": (31_740_337, 56.91, 34.87e6, 66.63),
    "unetplusplus": (9_119_332, 38.52, 26.90e6, 37.62),
    "swinunetr2d": (25_139_275, 19.15, None, None),
}


def test_shift_tokens_hand_computed():
    x = torch.arange(5 * 1 * 5, dtype=torch.float32).reshape(1, 5, 1, 5)  # 5 channel groups of 1
    y = shift_tokens(x, 5, dim=3)  # group g rolls by g - 2 along the width, zeros enter
    assert y[0, 2].tolist() == x[0, 2].tolist()  # group 2: no shift
    assert y[0, 0, 0].tolist() == [2.0, 3.0, 4.0, 0.0, 0.0]
    assert y[0, 4, 0].tolist() == [0.0, 0.0, 20.0, 21.0, 22.0]
    assert y[0, 1, 0].tolist() == [6.0, 7.0, 8.0, 9.0, 0.0]
    blk = ShiftedMLPBlock(10)
    t = torch.randn(2, 6 * 4, 10)
    assert blk(t, 6, 4).shape == t.shape


@pytest.mark.parametrize("name", sorted(COUNTS))
def test_exact_counts(name, repo_root):
    params, gmacs, _, _ = COUNTS[name]
    cfg = load_test_cfg(os.path.join(repo_root, KVASIR, f"{name}_256.yaml"))
    card = model_complexity(cfg)
    assert card["params"] == params
    assert math.isclose(card["gflops_paper"], gmacs, abs_tol=0.006)
    model = MedSegTrainer.build_model(cfg).eval()
    with torch.no_grad():
        out = model([{"image": torch.rand(3, 64, 96) * 255, "height": 64, "width": 96}])[0]
    assert out["sem_seg"].shape == (2, 64, 96)


@pytest.mark.parametrize("name", sorted(COUNTS))
def test_instant_test_trains_and_evaluates(name, tmp_path):
    run_instant_test(name, tmp_path)

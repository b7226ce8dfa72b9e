"""Parameter and FLOP counts of the LGMS models by tools/model_card.py's counter, against the
papers' figures (LGMSNet's "GFLOPs" are thop MACs at 1x3x256x256)."""
import os

import pytest
import torch

from lgms.gms import Attention, explicit_attention
from medseg_core.complexity import model_complexity
from medseg_core.testing import load_test_cfg

KVASIR = "configs/Kvasir-SemanticSegmentation"


@pytest.mark.parametrize(
    "config, params, gmacs_thop, gflops_fvcore",
    [
        # LGMSNet paper: 2.32 M / 4.89; the authors' class (thop 0.1.1 / fvcore 0.1.5):
        # 4.893 G / 5.076 G
        ("lgmsnet_256.yaml", 2_321_393, 4.8925, 5.0762),
        # CMUNeXt paper: 3.14 M / 7.41; the authors' class: 7.418 G thop, 7.317 G fvcore
        ("cmunext_256.yaml", 3_149_185, 7.418, 7.317),
        # TinyU-Net paper: 0.48 M / 1.66; the authors' class: 1.659 G thop, 1.610 G fvcore
        ("tinyunet_256.yaml", 481_105, 1.6592, 1.6100),
    ],
)
def test_model_card_counts(repo_root, config, params, gmacs_thop, gflops_fvcore):
    cfg = load_test_cfg(os.path.join(repo_root, KVASIR, config))
    card = model_complexity(cfg)
    assert card["params"] == params
    assert card["convention"] == "thop" and card["gflops_paper"] == card["gmacs_thop"]
    assert card["gmacs_thop"] == pytest.approx(gmacs_thop, abs=1e-3)
    assert card["gflops_fvcore"] == pytest.approx(gflops_fvcore, abs=1e-3)


def test_unet_thop_macs_match_lgmsnet_table1(repo_root):
    card = model_complexity(load_test_cfg(os.path.join(repo_root, KVASIR, "unet_256.yaml")), with_fvcore=False)
    assert card["params"] == 34_527_041
    assert card["gmacs_thop"] == pytest.approx(65.52, abs=0.01)  # Table 1: 34.52 M / 65.52


def test_explicit_attention_equals_fused_attention():
    torch.manual_seed(0)
    attn = Attention(24, heads=4, dim_head=8).eval()
    x = torch.randn(2, 4, 50, 24)
    with torch.no_grad():
        fused = attn(x)
        with explicit_attention(attn):
            explicit = attn(x)
    assert attn.explicit is False
    assert torch.allclose(fused, explicit, atol=1e-5)

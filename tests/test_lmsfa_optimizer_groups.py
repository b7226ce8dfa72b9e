"""Weight decay follows Ultralytics' rule for every LMSF-A-family model (audit of issue 17):
no decay on biases and on the parameters of normalisation layers (BatchNorm, GroupNorm in LMSH
and EMA attention), decay on every other weight (convolutions, LMSH's per-level Scale); the DFL
integral convolution is fixed and not optimized."""
import os

import pytest
from torch import nn

from detectron2.modeling import build_model
from medseg_core.engine.solver import build_optimizer
from medseg_core.testing import load_test_cfg

ABL = os.path.join(os.path.dirname(__file__), "..", "configs", "Endoscapes-InstanceSegmentation", "ablations")
NORMS = tuple(v for k, v in nn.__dict__.items() if "Norm" in k)  # Ultralytics' own test for "norm"


@pytest.mark.parametrize("name", ["tab3_1_c2f_pan_segment", "tab3_8_c2fpro_asf_lmsh", "tab3_4_c2f_pan_lmsh"])
def test_decay_groups_follow_ultralytics(name):
    cfg = load_test_cfg(os.path.join(ABL, name + ".yaml"))
    model = build_model(cfg)
    decay = {id(p): g["weight_decay"] for g in build_optimizer(cfg, model).param_groups for p in g["params"]}
    seen_scale = seen_gn = 0
    for mod_name, mod in model.named_modules():
        for p_name, p in mod.named_parameters(recurse=False):
            full = f"{mod_name}.{p_name}"
            if full == "head.dfl.conv.weight":
                assert id(p) not in decay and not p.requires_grad
                continue
            expected = 0.0 if ("bias" in full or isinstance(mod, NORMS)) else cfg.SOLVER.WEIGHT_DECAY
            assert decay[id(p)] == pytest.approx(expected), full
            seen_scale += full.startswith("head.scale.")
            seen_gn += isinstance(mod, nn.GroupNorm)
    if "lmsh" in name:
        assert seen_scale == 3 and seen_gn > 0  # the LMSH-specific parameters were checked

"""Every YAML config under configs/ (except the Base-* files they inherit from) loads with the
full project config (all installed projects' keys, safe YAML) and builds its model on the CPU."""
import os

import pytest
import torch

import medseg_core  # noqa: F401

from detectron2.modeling import build_model

from medseg_core.config import list_config_files
from medseg_core.testing import load_test_cfg

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_ROOT = os.path.join(REPO, "configs")
CONFIGS = list_config_files(CONFIG_ROOT)


def test_there_are_configs():
    names = {os.path.relpath(c, CONFIG_ROOT) for c in CONFIGS}
    for required in (
        "Endoscapes-InstanceSegmentation/mask_rcnn_R50_FPN_scratch_bn_640.yaml",
        "Endoscapes-InstanceSegmentation/mask_rcnn_R50_FPN_scratch_gn_640.yaml",
        "Endoscapes-InstanceSegmentation/mask_rcnn_swin_t_FPN_640.yaml",
        "Endoscapes-InstanceSegmentation/mask2former_R50_640.yaml",
        "Endoscapes-InstanceSegmentation/mask2former_swin_t_640.yaml",
        "Teeth-InstanceSegmentation/mask_rcnn_R50_FPN_scratch_bn_640.yaml",
        "Teeth-InstanceSegmentation/mask2former_R50_640.yaml",
        "quick_schedules/mask2former_R50_instant_test.yaml",
        "quick_schedules/yolact_R50_FPN_instant_test.yaml",
        "quick_schedules/solov2_R50_FPN_instant_test.yaml",
        "quick_schedules/mask_rcnn_convnextv2_FPN_instant_test.yaml",
    ) + tuple(
        f"{d}-InstanceSegmentation/{m}_640.yaml"
        for d in ("Endoscapes", "Teeth", "PELD")
        for m in ("yolact_R50_FPN", "solov2_R50_FPN", "mask_rcnn_convnextv2_t_FPN")
    ):
        assert required in names, f"missing config {required}"
    assert not any(os.path.basename(c).startswith("Base") for c in CONFIGS)


@pytest.mark.parametrize("path", CONFIGS, ids=[os.path.relpath(c, CONFIG_ROOT) for c in CONFIGS])
def test_config_parses_and_builds(path):
    cfg = load_test_cfg(path)
    assert cfg.MODEL.DEVICE == "cpu"
    model = build_model(cfg)
    n = sum(p.numel() for p in model.parameters())
    assert n > 0, f"{path}: model has no parameters"
    assert all(p.device.type == "cpu" for p in model.parameters())
    assert all(torch.isfinite(p).all() for p in model.parameters()), f"{path}: non-finite initial weights"

"""Every LGMS config loads and builds; the instant tests train and evaluate end to end on the
generated smoke sets (no shared data needed)."""
import glob
import os

import pytest

from medseg_core.engine.cli import default_argument_parser, main
from medseg_core.engine.trainer import MedSegTrainer
from medseg_core.testing import load_test_cfg

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LGMS_CONFIGS = sorted(
    glob.glob(os.path.join(REPO, "configs/Kvasir-SemanticSegmentation/*.yaml"))
    + glob.glob(os.path.join(REPO, "configs/Endoscapes-SemanticSegmentation/*.yaml"))
)
INSTANT = ["lgmsnet", "lgmsnet_multiclass"]  # the baselines' are in test_lgms_baselines_instant.py


@pytest.mark.parametrize("path", [p for p in LGMS_CONFIGS if not os.path.basename(p).startswith("Base")],
                         ids=os.path.basename)
def test_config_builds_its_model(path):
    cfg = load_test_cfg(path)
    assert cfg.MODEL.META_ARCHITECTURE == "LGMSSemanticSegmentor"
    assert cfg.MODEL.FLOPS_CONVENTION == "thop"  # the paper's "GFLOPs" are thop MACs
    assert cfg.SOLVER.LR_SCHEDULER_NAME == "WarmupPolyLR" and cfg.SOLVER.BASE_LR == 0.01
    model = MedSegTrainer.build_model(cfg)
    name = os.path.basename(path).split("_")[0]
    assert type(model.backbone).__name__.lower() == f"{name}backbone"
    assert model.sem_seg_head.num_outputs == (1 if cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES == 2 else 7)


def run_instant_test(name: str, tmp_path) -> None:
    """Train + evaluate ``configs/quick_schedules/<name>_instant_test.yaml`` via train_net's main."""
    cfg_file = os.path.join(REPO, f"configs/quick_schedules/{name}_instant_test.yaml")
    args = default_argument_parser().parse_args(
        ["--config-file", cfg_file, "MODEL.DEVICE", "cpu", "OUTPUT_DIR", str(tmp_path)]
    )
    main(args)
    assert os.path.isfile(tmp_path / "model_final.pth")
    # the final evaluation ran and was written with its labelled metrics
    import json

    res = json.load(open(tmp_path / "inference" / load_test_cfg(cfg_file).DATASETS.TEST[0] / "results.json"))
    metrics = res["results"]["sem_seg"]
    if name == "lgmsnet_multiclass":
        assert "per_image_mIoU@model_res" in metrics and "dataset_IoU@orig_res-nerve" in metrics
    else:
        assert {"per_image_IoU@model_res", "per_image_F1@model_res", "dataset_IoU@orig_res"} <= set(metrics)
    assert metrics["num_images"] == 4


@pytest.mark.parametrize("name", INSTANT)
def test_instant_test_trains_and_evaluates(name, tmp_path):
    run_instant_test(name, tmp_path)

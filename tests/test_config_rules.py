"""Config values outside their valid range stop load_config with every offending key named."""
import os

import pytest
from detectron2.config import CfgNode, get_cfg

from medseg_core.config import get_project_cfg, list_config_files, load_config
from medseg_core.config_keys import config_value
from medseg_core.config_rules import RULES, _MISSING, config_problems
from medseg_core.errors import ConfigError

from conftest import CONFIGS

LMSFA = os.path.join(CONFIGS, "quick_schedules", "lmsfa_instant_test.yaml")
VOLUME = os.path.join(CONFIGS, "quick_schedules", "lightmedseg_instant_test.yaml")


@pytest.mark.parametrize("opts,message", [
    (["SOLVER.MAX_ITER", "0"], "command line: SOLVER.MAX_ITER must be an integer >= 1, got 0"),
    (["SOLVER.IMS_PER_BATCH", "-2"], "command line: SOLVER.IMS_PER_BATCH must be an integer >= 1, got -2"),
    (["SOLVER.BASE_LR", "0.0"], "SOLVER.BASE_LR must be a finite number > 0, got 0.0"),
    (["MODEL.LMSFA.TEST_CONF_THRESH", "1.5"], "MODEL.LMSFA.TEST_CONF_THRESH must be a finite number in [0, 1], got 1.5"),
    (["INPUT.YOLO.IMAGE_SIZE", "100"], "INPUT.YOLO.IMAGE_SIZE must be a multiple of 32 >= 32, got 100"),
    (["INPUT.YOLO.SCALE", "1.0"], "INPUT.YOLO.SCALE must be a finite number in [0, 1), got 1.0"),
    (["MODEL.LMSFA.NUM_CLASSES", "0"], "MODEL.LMSFA.NUM_CLASSES must be an integer >= 1, got 0"),
    (["SOLVER.STEPS", "(300, 100)"], "SOLVER.STEPS must be a list of at least 0 values, increasing"),
    (["MODEL.LMSFA.ATTENTION_STAGES", "['backbone_s64']"], "MODEL.LMSFA.ATTENTION_STAGES must be a list"),
    (["MODEL.PIXEL_STD", "[1.0, 0.0, 1.0]"], "MODEL.PIXEL_STD must be a list of at least 1 value, each a finite number > 0"),
    (["MODEL.PIXEL_STD", "[1.0, 1.0]"], "MODEL.PIXEL_STD must have as many values as MODEL.PIXEL_MEAN (3), got 2"),
    (["TEST.DETECTIONS_PER_IMAGE", "0"], "TEST.DETECTIONS_PER_IMAGE must be an integer >= 1"),
    (["MODEL.DEVICE", "gpu"], "MODEL.DEVICE must be 'cpu', 'cuda', 'cuda:<index>' or 'mps', got 'gpu'"),
])
def test_out_of_range_values_are_refused(opts, message):
    with pytest.raises(ConfigError) as e:
        load_config(LMSFA, opts)
    assert message in str(e.value)


def test_volumetric_and_probability_keys(tmp_path):
    with pytest.raises(ConfigError, match=r"INPUT.VOLUME.CROP_SIZE must be 3 values, each an integer >= 1, or \(0, 0, 0\)"):
        load_config(VOLUME, ["INPUT.VOLUME.CROP_SIZE", "(32, 32)"])
    with pytest.raises(ConfigError, match=r"SLIDING_WINDOW.ROI_SIZE must be 3 values, .*or \(0, 0, 0\) or \(-1, -1, -1\), got \(0, 32, 32\)"):
        load_config(VOLUME, ["MODEL.VOLUMETRIC.SLIDING_WINDOW.ROI_SIZE", "(0, 32, 32)"])
    for roi in ("(0, 0, 0)", "(-1, -1, -1)", "(32, 48, 32)"):  # whole volume, training patch, a size
        load_config(VOLUME, ["MODEL.VOLUMETRIC.SLIDING_WINDOW.ROI_SIZE", roi])
    with pytest.raises(ConfigError, match=r"INPUT.VOLUME.PERCENTILES must be a list of 2 values, increasing"):
        load_config(VOLUME, ["INPUT.VOLUME.PERCENTILES", "(99.5, 0.5)"])
    with pytest.raises(ConfigError, match=r"MODEL.VOLUMETRIC.SLIDING_WINDOW.OVERLAP must be a finite number in \[0, 1\)"):
        load_config(VOLUME, ["MODEL.VOLUMETRIC.SLIDING_WINDOW.OVERLAP", "1.0"])


def test_every_problem_is_listed_with_where_it_came_from(tmp_path):
    cfg_file = tmp_path / "bad.yaml"
    cfg_file.write_text(f'_BASE_: "{LMSFA}"\nSOLVER:\n  BASE_LR: .nan\n  CHECKPOINT_PERIOD: 0\n')
    with pytest.raises(ConfigError) as e:
        load_config(str(cfg_file), ["SOLVER.MAX_ITER", "0"])
    assert str(e.value) == f"{cfg_file}: 3 config values are outside their valid range (each listed above)"
    assert sorted(e.value.details) == sorted([
        f"{cfg_file}: SOLVER.BASE_LR must be a finite number > 0, got nan",
        f"{cfg_file}: SOLVER.CHECKPOINT_PERIOD must be an integer >= 1, got 0",
        "command line: SOLVER.MAX_ITER must be an integer >= 1, got 0",
    ])


def test_every_shipped_config_is_valid():
    files = list_config_files(CONFIGS)
    assert len(files) > 40
    for f in files:
        load_config(f)


def _leaves(node, prefix=""):
    for k, v in node.items():
        if isinstance(v, CfgNode):
            yield from _leaves(v, prefix + k + ".")
        else:
            yield prefix + k, v


def _numeric(v):
    if isinstance(v, bool):
        return False
    if isinstance(v, (int, float)):
        return True
    return isinstance(v, (list, tuple)) and len(v) > 0 and all(_numeric(x) for x in v)


def test_every_numeric_key_the_toolkit_adds_has_a_rule():
    """Systematic coverage: a new numeric key (count, size, threshold, probability, list of them)
    needs a rule in medseg_core/config_rules.py or its project's config.py."""
    d2 = dict(_leaves(get_cfg()))
    cfg = get_project_cfg()
    assert config_problems(cfg) == []
    missing = [k for k, v in _leaves(cfg) if k not in d2 and _numeric(v) and k not in RULES]
    assert missing == [], f"numeric config keys without a range rule: {missing}"
    # and no rule names a key that does not exist (a typo would check nothing)
    absent = [k for k in RULES if config_value(cfg, k, _MISSING) is _MISSING]
    assert absent == []


@pytest.mark.parametrize("config,opts,message", [
    ("lightmedseg_instant_test.yaml", ["MODEL.VOLUMETRIC.DEEP_SUPERVISION.WEIGHTS", "(0.0, 0.0)"],
     "MODEL.VOLUMETRIC.DEEP_SUPERVISION.WEIGHTS must have a positive sum, got (0.0, 0.0)"),
    ("lightmedseg_instant_test.yaml", ["INPUT.VOLUME.GAMMA_RANGE", "(1.5, 0.7)"],
     "INPUT.VOLUME.GAMMA_RANGE must be a list of 2 values, increasing"),
    ("lightmedseg_instant_test.yaml", ["INPUT.VOLUME.TARGET_SPACING", "(1.0, 0.0, 1.0)"],
     "INPUT.VOLUME.TARGET_SPACING must be 3 values, each a finite number > 0, or (0, 0, 0)"),
    ("lmsfa_instant_test.yaml", ["DATALOADER.FINAL_PHASE_ITERS", "-1"],
     "DATALOADER.FINAL_PHASE_ITERS must be an integer >= 0, got -1"),
    ("lmsfa_instant_test.yaml", ["DATALOADER.FINAL_PHASE_OPTS", "['INPUT.YOLO.MOSAIC_PROB']"],
     "DATALOADER.FINAL_PHASE_OPTS must be a list of KEY VALUE pairs"),
    ("swinunetr2d_instant_test.yaml", ["MODEL.SWIN_UNETR_2D.FEATURE_SIZE", "40"],
     "MODEL.SWIN_UNETR_2D.FEATURE_SIZE must be a multiple of 12 >= 12, got 40"),
    ("unetr_instant_test.yaml", ["MODEL.VOLUMETRIC_BASELINES.UNETR.NUM_HEADS", "7"],
     "MODEL.VOLUMETRIC_BASELINES.UNETR.NUM_HEADS must divide MODEL.VOLUMETRIC_BASELINES.UNETR.HIDDEN_SIZE"),
    ("dynunet_instant_test.yaml", ["MODEL.VOLUMETRIC_BASELINES.DYNUNET.FILTERS", "(8, 16)"],
     "KERNEL_SIZES, STRIDES and FILTERS need one entry per level"),
    ("solov2_R50_FPN_instant_test.yaml", ["MODEL.SOLOV2.NUM_GRIDS", "[4, 4]"],
     "MODEL.SOLOV2.NUM_GRIDS must have one entry per MODEL.SOLOV2.IN_FEATURES level (5), got 2"),
    ("yolact_R50_FPN_instant_test.yaml", ["MODEL.YOLACT.NMS_THRESH_TEST", "1.5"],
     "MODEL.YOLACT.NMS_THRESH_TEST must be a finite number"),
])
def test_keys_of_the_recipes_and_baselines_merged_later_are_checked(config, opts, message):
    with pytest.raises(ConfigError) as e:
        load_config(os.path.join(CONFIGS, "quick_schedules", config), opts)
    assert message in str(e.value)

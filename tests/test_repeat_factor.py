"""The opt-in repeat-factor sampler (DATALOADER.SAMPLER_TRAIN "RepeatFactorTrainingSampler") for
the instance models, including the YOLO mapper's extra mosaic images."""
import math
import os

import numpy as np
import pytest

import medseg_core  # noqa: F401

from medseg_core.testing import load_test_cfg, train_steps

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QS = os.path.join(REPO, "configs", "quick_schedules")
RFS = ["DATALOADER.SAMPLER_TRAIN", "RepeatFactorTrainingSampler", "DATALOADER.REPEAT_THRESHOLD", "0.5"]


def _dicts():
    # 9 images of class 0, 1 image of class 1, 2 empty images
    ann = lambda c: {"category_id": c, "bbox": [0, 0, 4, 4], "bbox_mode": 0, "segmentation": [[0, 0, 4, 0, 4, 4]]}  # noqa: E731
    ds = [{"file_name": f"c0_{i}.png", "annotations": [ann(0)]} for i in range(9)]
    ds.append({"file_name": "rare.png", "annotations": [ann(0), ann(1)]})
    ds += [{"file_name": f"empty_{i}.png", "annotations": []} for i in range(2)]
    return ds


def test_mosaic_extra_images_follow_the_repeat_factors():
    from lmsfa.yolo_mapper import YOLOMapper

    ds = _dicts()
    cfg = load_test_cfg(os.path.join(QS, "lmsfa_instant_test.yaml"), *RFS)
    m = YOLOMapper(cfg, True, pool=ds)
    # f(class 0) = 10/12, f(class 1) = 1/12 -> r = 1 and sqrt(0.5 * 12) = 2.449; r(image) = max over its classes
    r_rare = math.sqrt(0.5 * 12)
    expected = np.array([1.0] * 9 + [r_rare] + [1.0, 1.0])
    np.testing.assert_allclose(m.pool_p, expected / expected.sum(), rtol=1e-6)
    # without the sampler: uniform draws (Ultralytics)
    assert YOLOMapper(load_test_cfg(os.path.join(QS, "lmsfa_instant_test.yaml")), True, pool=ds).pool_p is None


@pytest.mark.parametrize("config", ["yolo11seg_instant_test.yaml", "mask_rcnn_R50_FPN_scratch_bn_instant_test.yaml"])
def test_instance_models_train_with_the_repeat_factor_sampler(config, one_thread):
    cfg = load_test_cfg(os.path.join(QS, config), *RFS, "SOLVER.IMS_PER_BATCH", "2", "INPUT.YOLO.IMAGE_SIZE", "64",
                        "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "64")
    hist = train_steps(cfg, 2)
    assert len(hist) == 2 and all(math.isfinite(v) for h in hist for v in h.values())

"""The 3D training recipe: nnU-Net-style plan (patch size, target spacing) from cached data-set
statistics, resampling, the volume cache, nnU-Net augmentations and deep supervision."""
import json
import math
import os

import numpy as np
import pytest
import torch
from torch import nn

import medseg_core  # noqa: F401
from detectron2.data import DatasetCatalog

from medseg_core.data import volumetric_plan
from medseg_core.data.mappers import build_dataset_mapper
from medseg_core.data.volumetric import VolumeCache, resample_image, resample_label, resampled_shape
from medseg_core.data.volumetric_plan import dataset_statistics, plan_patch_size, plan_target_spacing, volume_plan
from medseg_core.errors import ConfigError
from medseg_core.modeling.volumetric import VolumetricSegmentor, dice_ce_loss, downsample_label
from medseg_core.testing import load_test_cfg

pytestmark = pytest.mark.usefixtures("one_thread")

INSTANT = "configs/quick_schedules/lightmedseg_instant_test.yaml"


# ------------------------------------------------------------------------ plan
def test_patch_size_rule_gives_nnunet_hippocampus_patch():
    median = (36, 50, 35)  # msd-hippocampus median shape at 1 mm
    assert plan_patch_size(median, 8) == (40, 56, 40)  # nnU-Net's published 3d_fullres patch
    assert plan_patch_size(median, 16) == (48, 64, 48)
    assert plan_patch_size(median, 32) == (64, 64, 64)
    # shrinking: the largest patch/median ratio first (35 -> 64 is 1.83), one stride at a time
    assert plan_patch_size(median, 32, max_voxels=65536) == (32, 64, 32)
    assert plan_patch_size(median, 16, max_voxels=50000) == (32, 48, 32)
    assert plan_patch_size((5, 5, 5), 16, max_voxels=10) == (16, 16, 16)  # cannot go below one stride


def test_target_spacing_median_and_anisotropic_axis():
    iso = {"median_spacing": [1.0, 1.0, 1.0], "spacing_p10": [1.0, 1.0, 1.0]}
    assert plan_target_spacing(iso) == (1.0, 1.0, 1.0)
    aniso = {"median_spacing": [0.8, 0.8, 5.0], "spacing_p10": [0.7, 0.7, 3.0]}
    assert plan_target_spacing(aniso) == (0.8, 0.8, 3.0)


def test_statistics_are_cached_as_json(tmp_path, monkeypatch):
    stats = dataset_statistics(["smoke_vol_train"], str(tmp_path))
    files = list(tmp_path.glob("smoke_vol_train-*.json"))
    assert len(files) == 1 and json.load(open(files[0]))["key"] == stats["key"]
    assert stats["num_volumes"] == 8
    shapes = np.array([d["shape"] for d in DatasetCatalog.get("smoke_vol_train")])
    assert stats["median_shape"] == [float(v) for v in np.median(shapes, 0)]
    assert stats["median_spacing"] == [1.0, 1.0, 1.5]

    # the second call reads the file: no header is read again
    monkeypatch.setattr(volumetric_plan, "read_nifti_header", lambda p: pytest.fail("recomputed"))
    assert dataset_statistics(["smoke_vol_train"], str(tmp_path)) == stats


def test_volume_plan_from_config(repo_root, tmp_path):
    cfg = load_test_cfg(os.path.join(repo_root, INSTANT), "INPUT.VOLUME.CROP_SIZE", "(0, 0, 0)",
                        "INPUT.VOLUME.STATS_CACHE_DIR", str(tmp_path))
    plan = volume_plan(cfg)
    stats = plan.stats
    med = np.array(stats["median_shape"])  # spacing 1, 1, 1.5 = its own median: no resampling
    assert plan.target_spacing == (1.0, 1.0, 1.5)
    assert plan.crop_size == tuple(int(math.ceil(m / 16) * 16) for m in med)  # LightMedSeg: stride 16
    # a half-planned patch is refused when the config is read, before any planning
    with pytest.raises(ConfigError, match="CROP_SIZE"):
        volume_plan(load_test_cfg(os.path.join(repo_root, INSTANT), "INPUT.VOLUME.CROP_SIZE", "(16, 0, 16)"))


# ------------------------------------------------------------------------ resampling and cache
def test_resampling_shapes_and_labels():
    assert resampled_shape((10, 20, 30), (1.0, 1.0, 3.0), (1.0, 1.0, 1.5)) == (10, 20, 60)
    assert resampled_shape((10, 20, 30), (1.005, 1.0, 1.0), (1.0, 1.0, 1.0)) == (10, 20, 30)  # within 1%
    lab = np.zeros((4, 4, 4), np.int64)
    lab[1:3, 1:3, 1:3] = 2
    lab[0, 0, 0] = 255
    up = resample_label(lab, (8, 8, 8))
    assert up.shape == (8, 8, 8) and set(np.unique(up)) == {0, 2, 255}
    assert (up == 2).sum() == 8 * (lab == 2).sum()
    img = np.arange(64, dtype=np.float32).reshape(1, 4, 4, 4)
    assert resample_image(img, (4, 4, 4)).shape == (1, 4, 4, 4)
    assert np.allclose(resample_image(img, (4, 4, 4)), img)


def test_resampled_prediction_returns_on_the_stored_grid():
    class Const(nn.Module):
        def forward(self, x):
            out = torch.zeros(x.shape[0], 3, *x.shape[2:])
            out[:, 1] = 1.0
            return out

    seg = VolumetricSegmentor(network=Const(), num_classes=3).eval()
    out = seg([{"image": torch.randn(1, 8, 8, 16), "orig_shape": (8, 8, 11)}])[0]
    assert out["pred_label"].shape == (8, 8, 11) and (out["pred_label"] == 1).all()


def test_mapper_resamples_to_target_spacing(repo_root):
    # smoke volumes are 1 x 1 x 1.5 mm: a 1 mm target stretches the last axis by 1.5
    cfg = load_test_cfg(os.path.join(repo_root, INSTANT), "INPUT.VOLUME.TARGET_SPACING", "(1.0, 1.0, 1.0)")
    d = DatasetCatalog.get("smoke_vol_val")[0]
    out = build_dataset_mapper(cfg, False, "smoke_vol_val")(d)
    assert out["orig_shape"] == tuple(d["shape"])
    assert tuple(out["image"].shape[1:]) == (d["shape"][0], d["shape"][1], int(round(d["shape"][2] * 1.5)))


def test_cache_keeps_arrays_unmodified_by_augmentation(repo_root):
    cfg = load_test_cfg(os.path.join(repo_root, INSTANT), "INPUT.VOLUME.NOISE_PROB", "1.0",
                        "INPUT.VOLUME.SCALE_INTENSITY_PROB", "1.0", "INPUT.VOLUME.GAMMA_PROB", "1.0")
    mapper = build_dataset_mapper(cfg, True, "smoke_vol_train")
    d = DatasetCatalog.get("smoke_vol_train")[0]
    mapper(d)
    cached = mapper.cache.get((d["file_name"], True))[0].copy()
    for _ in range(3):
        mapper(d)
    assert np.array_equal(mapper.cache.get((d["file_name"], True))[0], cached)
    full = VolumeCache(0)
    full.put("k", (np.zeros(10),))
    assert full.get("k") is None


def test_every_augmentation_keeps_shapes_and_labels(repo_root):
    keys = ["ROTATE_PROB", "SCALE_PROB", "NOISE_PROB", "BLUR_PROB", "SCALE_INTENSITY_PROB",
            "CONTRAST_PROB", "LOWRES_PROB", "GAMMA_PROB", "FLIP_PROB"]
    opts = [x for k in keys for x in (f"INPUT.VOLUME.{k}", "1.0")]
    cfg = load_test_cfg(os.path.join(repo_root, INSTANT), *opts)
    np.random.seed(0)
    mapper = build_dataset_mapper(cfg, True, "smoke_vol_train")
    d = DatasetCatalog.get("smoke_vol_train")[2]
    for _ in range(3):
        out = mapper(d)
        assert out["image"].shape == (1, 16, 16, 16) and torch.isfinite(out["image"]).all()
        assert set(out["label"].unique().tolist()) <= {0, 1, 2}
    with pytest.raises(ConfigError, match="NOISE_PROB"):
        build_dataset_mapper(load_test_cfg(os.path.join(repo_root, INSTANT), "INPUT.VOLUME.NOISE_PROB", "1.5"),
                             True, "smoke_vol_train")


# ------------------------------------------------------------------------ deep supervision
class _TwoScale(nn.Module):
    """Full-resolution logits plus a half-resolution output (average-pooled)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv3d(1, 3, 1)
        self.aux = nn.Conv3d(1, 3, 1)

    def forward(self, x):
        return self.conv(x)

    def forward_deep_supervision(self, x):
        return [self.conv(x), self.aux(nn.functional.avg_pool3d(x, 2))]


def test_deep_supervision_loss_is_the_weighted_sum():
    x = torch.randn(2, 1, 8, 8, 8)
    y = torch.randint(0, 3, (2, 8, 8, 8))
    y[0, 0, 0, 0] = 255
    net = _TwoScale()
    seg = VolumetricSegmentor(network=net, num_classes=3, deep_supervision_weights=(1.0, 0.5)).train()
    losses = seg([{"image": x[i], "label": y[i]} for i in range(2)])
    full = dice_ce_loss(net.conv(x), y)
    half = dice_ce_loss(net.aux(nn.functional.avg_pool3d(x, 2)), downsample_label(y, (4, 4, 4)))
    for k in ("loss_ce", "loss_dice"):
        assert torch.allclose(losses[k], (2 / 3) * full[k] + (1 / 3) * half[k])
    # without weights (or with one) only the full-resolution output trains
    plain = VolumetricSegmentor(network=net, num_classes=3).train()([{"image": x[i], "label": y[i]} for i in range(2)])
    assert torch.allclose(plain["loss_ce"], full["loss_ce"])
    with pytest.raises(ConfigError, match="WEIGHTS"):
        VolumetricSegmentor(network=net, num_classes=3, deep_supervision_weights=(1.0, -1.0))


def test_downsample_label_nearest_keeps_ignore():
    y = torch.zeros(1, 4, 4, 4, dtype=torch.long)
    y[0, 0, 0, 0] = 255
    y[0, 2:, 2:, 2:] = 2
    d = downsample_label(y, (2, 2, 2))
    assert d.shape == (1, 2, 2, 2) and d[0, 0, 0, 0] == 255 and d[0, 1, 1, 1] == 2


def test_lightmedseg_deep_supervision_outputs(repo_root):
    from lightmedseg import LightMedSeg

    net = LightMedSeg(1, 3, deep_supervision=3)
    outs = net.forward_deep_supervision(torch.randn(1, 1, 16, 32, 16))
    assert [tuple(o.shape[2:]) for o in outs] == [(16, 32, 16), (8, 16, 8), (4, 8, 4)]
    # 1x1 heads on the D/2 (24 channels) and D/4 (48) decoder outputs, training only
    assert sum(p.numel() for p in net.parameters()) == 493_761 + (24 * 3 + 3) + (48 * 3 + 3)
    cfg = load_test_cfg(os.path.join(repo_root, INSTANT))
    from detectron2.modeling import build_model

    model = build_model(cfg)
    assert len(model.network.ds_heads) == 1 and model.ds_weights == [2 / 3, 1 / 3]
    assert model.roi_size == (16, 16, 16)

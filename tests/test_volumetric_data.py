"""The "volume" mapper, the generated smoke volumes and clear errors for bad NIfTI files."""
import gzip
import os
import shutil

import numpy as np
import pytest
import torch

import medseg_core  # noqa: F401
import medseg_core.data  # noqa: F401
from detectron2.data import DatasetCatalog

from medseg_core.data import register_volume_folder
from medseg_core.data.mappers import build_dataset_mapper
from medseg_core.data.volumes import read_nifti_header
from medseg_core.data.volumetric import normalize_intensity
from medseg_core.engine.trainer import MedSegTrainer
from medseg_core.errors import ConfigError, DatasetError
from medseg_core.testing import load_test_cfg


pytestmark = pytest.mark.usefixtures("one_thread")


INSTANT = "configs/quick_schedules/lightmedseg_instant_test.yaml"


@pytest.fixture(scope="module")
def cfg(repo_root):
    return load_test_cfg(os.path.join(repo_root, INSTANT))


def test_smoke_volumes_registered_and_not_stride_multiples():
    train, val = DatasetCatalog.get("smoke_vol_train"), DatasetCatalog.get("smoke_vol_val")
    assert len(train) == 8 and len(val) == 3
    for d in train + val:
        assert any(s % 16 for s in d["shape"])
        assert d["spacing"] == (1.0, 1.0, 1.5)


def test_train_mapper_crops_flips_and_labels(cfg):
    torch.manual_seed(0)
    np.random.seed(0)
    mapper = build_dataset_mapper(cfg, True, "smoke_vol_train")
    d = DatasetCatalog.get("smoke_vol_train")[0]
    out = mapper(d)
    assert out["image"].shape == (1, 16, 16, 16) and out["image"].dtype == torch.float32
    assert out["label"].shape == (16, 16, 16) and out["label"].dtype == torch.int64
    assert set(out["label"].unique().tolist()) <= {0, 1, 2}
    assert type(out["image"]) is torch.Tensor  # no MONAI MetaTensor in batches
    # crops come from different places / flips
    crops = {tuple(mapper(d)["image"].flatten()[:50].tolist()) for _ in range(6)}
    assert len(crops) > 1


def test_train_mapper_pads_small_volumes(cfg):
    c = cfg.clone()
    c.defrost()
    c.INPUT.VOLUME.CROP_SIZE = (32, 32, 32)  # larger than every smoke volume
    c.INPUT.VOLUME.FLIP_PROB = 0.0
    out = build_dataset_mapper(c, True, "smoke_vol_train")(DatasetCatalog.get("smoke_vol_train")[1])
    assert out["image"].shape == (1, 32, 32, 32)
    assert (out["label"] > 0).sum() > 0


def test_test_mapper_keeps_whole_volume_zscored(cfg):
    d = DatasetCatalog.get("smoke_vol_val")[0]
    out = build_dataset_mapper(cfg, False, "smoke_vol_val")(d)
    assert out["image"].shape == (1,) + tuple(d["shape"])
    assert abs(float(out["image"].mean())) < 1e-4 and abs(float(out["image"].std()) - 1) < 1e-3
    assert "label" not in out and out["label_file_name"] == d["label_file_name"]


def test_normalisations():
    img = np.arange(2 * 4 * 4 * 4, dtype=np.float32).reshape(2, 4, 4, 4)
    img[1] *= 10
    z = normalize_intensity(img, "zscore")
    assert np.allclose(z.reshape(2, -1).mean(1), 0, atol=1e-5) and np.allclose(z.reshape(2, -1).std(1), 1, atol=1e-3)
    r = normalize_intensity(img, "range", intensity_range=(0.0, 63.0))
    assert r.min() == 0.0 and r.max() == 1.0 and math_close(r[0, 0, 0, 1], 1 / 63)
    p = normalize_intensity(img, "percentile", percentiles=(0.0, 100.0))
    assert np.allclose(p.reshape(2, -1).min(1), 0) and np.allclose(p.reshape(2, -1).max(1), 1)
    with pytest.raises(ConfigError, match="NORMALIZE"):
        normalize_intensity(img, "whatever")


def math_close(a, b, tol=1e-6):
    return abs(float(a) - float(b)) < tol


# ------------------------------------------------------------------------ bad files
def _copy_smoke(tmp_path, sub="a", n=2):
    src = DatasetCatalog.get("smoke_vol_train")[:n]
    img_dir, lab_dir = tmp_path / sub / "images", tmp_path / sub / "labels"
    img_dir.mkdir(parents=True)
    lab_dir.mkdir(parents=True)
    for d in src:
        shutil.copy(d["file_name"], img_dir)
        shutil.copy(d["label_file_name"], lab_dir)
    return img_dir, lab_dir, sorted(os.listdir(img_dir))


def _first_batch(cfg, name):
    c = cfg.clone()
    c.defrost()
    c.DATASETS.TRAIN = (name,)
    c.freeze()
    return next(iter(MedSegTrainer.build_train_loader(c)))


def test_truncated_nifti_error_names_file_through_loader(cfg, tmp_path):
    img_dir, lab_dir, names = _copy_smoke(tmp_path)
    bad = os.path.join(img_dir, names[0])
    data = open(bad, "rb").read()
    with open(bad, "wb") as f:
        f.write(data[: len(data) // 2])  # header intact, voxel data cut
    read_nifti_header(bad)  # the header alone still reads: only the mapper can catch it
    register_volume_folder("_test_vol_truncated", str(img_dir), str(lab_dir), ["background", "bright", "dark"])
    # the first 2-crop batch reads both volumes, whatever the sampler's order
    with pytest.raises(DatasetError, match=names[0].replace(".", r"\.")) as e:
        _first_batch(cfg, "_test_vol_truncated")
    assert "corrupt or truncated" in str(e.value)


def test_garbage_and_mismatched_files_fail_at_registration(cfg, tmp_path):
    img_dir, lab_dir, names = _copy_smoke(tmp_path)
    bad = os.path.join(img_dir, names[0])
    with gzip.open(bad, "wb") as f:
        f.write(b"this is not a NIfTI file" * 20)
    register_volume_folder("_test_vol_garbage", str(img_dir), str(lab_dir), ["background", "bright", "dark"])
    with pytest.raises(DatasetError, match=names[0].replace(".", r"\.")):
        DatasetCatalog.get("_test_vol_garbage")

    img_dir2, lab_dir2, names2 = _copy_smoke(tmp_path, "b")
    other = DatasetCatalog.get("smoke_vol_val")[0]["label_file_name"]  # a label of another shape
    shutil.copy(other, os.path.join(lab_dir2, names2[0]))
    register_volume_folder("_test_vol_shape", str(img_dir2), str(lab_dir2), ["background", "bright", "dark"])
    with pytest.raises(DatasetError, match="label shape"):
        DatasetCatalog.get("_test_vol_shape")


def test_wrong_channel_count_is_a_clear_error(cfg):
    c = cfg.clone()
    c.defrost()
    c.MODEL.VOLUMETRIC.IN_CHANNELS = 4
    d = DatasetCatalog.get("smoke_vol_val")[0]
    with pytest.raises(DatasetError, match="IN_CHANNELS"):
        build_dataset_mapper(c, False, "smoke_vol_val")(d)


def test_rotate90_needs_square_plane(cfg):
    c = cfg.clone()
    c.defrost()
    c.INPUT.VOLUME.ROTATE90_PROB = 0.5
    c.INPUT.VOLUME.CROP_SIZE = (16, 16, 24)
    c.INPUT.VOLUME.ROTATE90_AXES = (0, 2)
    with pytest.raises(ConfigError, match="square"):
        build_dataset_mapper(c, True, "smoke_vol_train")


# ------------------------------------------------------------------------ real data
def test_hippocampus_mapper_on_real_volumes(shared_data, repo_root):
    c = load_test_cfg(os.path.join(repo_root, "configs/Hippocampus-VolumetricSegmentation/lightmedseg_hippocampus.yaml"))
    train = DatasetCatalog.get("msd_hippocampus_train")
    val = DatasetCatalog.get("msd_hippocampus_val")
    assert len(train) == 182 and len(val) == 26
    out = build_dataset_mapper(c, True)(train[0])
    # the planned patch: median shape 36 x 50 x 35 rounded up to LightMedSeg's stride 16
    assert out["image"].shape == (1, 48, 64, 48) and out["label"].shape == (48, 64, 48)
    assert set(out["label"].unique().tolist()) <= {0, 1, 2}
    t = build_dataset_mapper(c, False, "msd_hippocampus_val")(val[0])
    assert t["image"].shape == (1,) + tuple(val[0]["shape"])

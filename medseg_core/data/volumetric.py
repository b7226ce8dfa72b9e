"""The "volume" dataset mapper: NIfTI image/label pairs -> normalised 3D tensors.

Registered in ``DATASET_MAPPER_REGISTRY`` as ``"volume"`` (the default for data sets whose
``evaluator_type`` is "volume", see :func:`~medseg_core.data.registration.register_volume_folder`).

Reading goes through :func:`~medseg_core.data.volumes.read_nifti`, so a missing, corrupt or
truncated ``.nii.gz`` raises :class:`~medseg_core.errors.DatasetError` naming the file. Axes are
the NIfTI array axes (no reorientation, no resampling: evaluation is at the stored resolution);
a 4th NIfTI axis is the channel (modality) axis.

Pipeline (MONAI dictionary transforms where they do the job; keys ``INPUT.VOLUME.*``):

* every split: per-volume, per-channel intensity normalisation ("zscore", "range",
  "percentile" or "none");
* training only: zero-pad to at least ``CROP_SIZE`` (``SpatialPadd``), one random crop of
  ``CROP_SIZE`` centred on a foreground voxel with probability ``FOREGROUND_CROP_PROB``
  (``RandCropByPosNegLabeld``), independent flips per axis (``RandFlipd``), optional 90-degree
  rotation (``RandRotate90d``), random intensity scale and shift.

Output: training ``{"image": (C, *CROP_SIZE) float32, "label": (*CROP_SIZE) int64, ...}``; test
``{"image": (C, D, H, W) float32, ...}`` with the record's ``label_file_name`` kept for the
evaluator, which reads the ground truth itself at the original resolution.

Label values that are neither a class id in ``[0, NUM_CLASSES)`` nor the ignore label become
the ignore label (the semantic mapper's convention), so an undocumented value never trains as
a class.
"""
from __future__ import annotations

import copy
import logging
import os
from typing import Dict, List, Optional

import numpy as np
import torch

from .. import compat  # noqa: F401

from ..errors import ConfigError, DatasetError
from .mappers import DATASET_MAPPER_REGISTRY
from .volumes import read_nifti

logger = logging.getLogger(__name__)

__all__ = ["VolumeMapper", "read_volume_image", "read_volume_label", "normalize_intensity"]

NORMALIZATIONS = ("zscore", "range", "percentile", "none")


def read_volume_image(path: str, in_channels: Optional[int] = None) -> np.ndarray:
    """A NIfTI image as a ``(C, D, H, W)`` float32 array (channel = 4th NIfTI axis)."""
    data, _ = read_nifti(path, dtype=np.float32)
    img = data[None] if data.ndim == 3 else np.moveaxis(data, -1, 0)
    if in_channels is not None and img.shape[0] != in_channels:
        raise DatasetError(
            f"{path}: volume has {img.shape[0]} channel(s) but MODEL.VOLUMETRIC.IN_CHANNELS is {in_channels}"
        )
    return np.ascontiguousarray(img)


def read_volume_label(path: str, num_classes: int, ignore_label: int = 255) -> np.ndarray:
    """A NIfTI label volume as ``(D, H, W)`` int64 class ids (invalid values -> ignore)."""
    data, _ = read_nifti(path, dtype=np.float32)
    if data.ndim == 4 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise DatasetError(f"{path}: label volume must be 3D, got shape {data.shape}")
    lab = np.rint(data)
    if not np.array_equal(lab, data):
        raise DatasetError(f"{path}: label volume has non-integer values")
    lab = lab.astype(np.int64)
    bad = ((lab < 0) | (lab >= num_classes)) & (lab != ignore_label)
    if bad.any():
        logger.warning(
            "%s: label values %s are not class ids in [0, %d); treated as ignore (%d)",
            path, sorted(np.unique(lab[bad]).tolist())[:10], num_classes, ignore_label,
        )
        lab[bad] = ignore_label
    return lab


def normalize_intensity(
    image: np.ndarray,
    mode: str = "zscore",
    nonzero: bool = False,
    intensity_range=(-175.0, 250.0),
    percentiles=(0.5, 99.5),
) -> np.ndarray:
    """Per-channel intensity normalisation of a ``(C, D, H, W)`` volume (MONAI transforms)."""
    import monai.transforms as mt

    if mode == "zscore":
        t = mt.NormalizeIntensity(nonzero=nonzero, channel_wise=True)
    elif mode == "range":
        lo, hi = intensity_range
        t = mt.ScaleIntensityRange(a_min=lo, a_max=hi, b_min=0.0, b_max=1.0, clip=True)
    elif mode == "percentile":
        lo, hi = percentiles
        t = mt.ScaleIntensityRangePercentiles(lower=lo, upper=hi, b_min=0.0, b_max=1.0, clip=True, channel_wise=True)
    elif mode == "none":
        return image.astype(np.float32, copy=False)
    else:
        raise ConfigError(f"INPUT.VOLUME.NORMALIZE must be one of {NORMALIZATIONS}, got {mode!r}")
    # some MONAI intensity transforms write into a NumPy input: work on a copy
    out = t(image.copy())
    return np.asarray(out.numpy() if isinstance(out, torch.Tensor) else out, dtype=np.float32)


class VolumeMapper:
    """Maps a volume record (``file_name``, ``label_file_name``) to the model's input dict."""

    def __init__(self, cfg, is_train: bool):
        v = cfg.INPUT.VOLUME
        self.is_train = is_train
        self.in_channels = int(cfg.MODEL.VOLUMETRIC.IN_CHANNELS)
        self.num_classes = int(cfg.MODEL.VOLUMETRIC.NUM_CLASSES)
        self.ignore_label = int(cfg.MODEL.VOLUMETRIC.IGNORE_LABEL)
        if v.NORMALIZE not in NORMALIZATIONS:
            raise ConfigError(f"INPUT.VOLUME.NORMALIZE must be one of {NORMALIZATIONS}, got {v.NORMALIZE!r}")
        self.norm = dict(
            mode=v.NORMALIZE, nonzero=bool(v.ZSCORE_NONZERO),
            intensity_range=tuple(v.INTENSITY_RANGE), percentiles=tuple(v.PERCENTILES),
        )
        self.crop_size = tuple(int(c) for c in v.CROP_SIZE)
        if len(self.crop_size) != 3 or min(self.crop_size) < 1:
            raise ConfigError(f"INPUT.VOLUME.CROP_SIZE must be 3 positive sizes, got {v.CROP_SIZE}")
        self._rng_pid: Optional[int] = None
        self.transform = self._build_train_transform(v) if is_train else None

    def _build_train_transform(self, v):
        import monai.transforms as mt

        keys = ["image", "label"]
        p_fg = float(v.FOREGROUND_CROP_PROB)
        if not 0 <= p_fg <= 1:
            raise ConfigError(f"INPUT.VOLUME.FOREGROUND_CROP_PROB must be in [0, 1], got {p_fg}")
        ts: List = [
            mt.SpatialPadd(keys + ["fg"], spatial_size=self.crop_size, mode="constant"),
            # pos/neg are relative weights; MONAI needs their sum > 0
            mt.RandCropByPosNegLabeld(
                keys, label_key="fg", spatial_size=self.crop_size,
                pos=p_fg, neg=1.0 - p_fg, num_samples=1, allow_smaller=False,
            ),
        ]
        if v.FLIP_PROB > 0:
            for ax in v.FLIP_AXES:
                if ax not in (0, 1, 2):
                    raise ConfigError(f"INPUT.VOLUME.FLIP_AXES must be array axes 0, 1, 2; got {v.FLIP_AXES}")
                ts.append(mt.RandFlipd(keys, prob=float(v.FLIP_PROB), spatial_axis=int(ax)))
        if v.ROTATE90_PROB > 0:
            a, b = (int(x) for x in v.ROTATE90_AXES)
            if self.crop_size[a] != self.crop_size[b]:
                raise ConfigError(
                    f"INPUT.VOLUME.ROTATE90_PROB > 0 needs a crop that is square in the rotation plane "
                    f"{(a, b)}, got CROP_SIZE {self.crop_size}"
                )
            ts.append(mt.RandRotate90d(keys, prob=float(v.ROTATE90_PROB), max_k=3, spatial_axes=(a, b)))
        if v.SCALE_INTENSITY_PROB > 0:
            ts.append(mt.RandScaleIntensityd("image", factors=float(v.SCALE_INTENSITY), prob=float(v.SCALE_INTENSITY_PROB)))
        if v.SHIFT_INTENSITY_PROB > 0:
            ts.append(mt.RandShiftIntensityd("image", offsets=float(v.SHIFT_INTENSITY), prob=float(v.SHIFT_INTENSITY_PROB)))
        return mt.Compose(ts)

    def _reseed(self) -> None:
        # MONAI transforms own a RandomState created at construction; forked data-loader
        # workers would share it. Re-seed once per process from NumPy's global RNG, which
        # Detectron2 seeds per worker (and from SEED in the main process).
        pid = os.getpid()
        if self._rng_pid != pid:
            self.transform.set_random_state(seed=int(np.random.randint(0, 2**31 - 1)))
            self._rng_pid = pid

    def __call__(self, dataset_dict: Dict) -> Dict:
        d = copy.deepcopy(dataset_dict)
        image = read_volume_image(d["file_name"], self.in_channels)
        image = normalize_intensity(image, **self.norm)
        d.setdefault("shape", tuple(int(s) for s in image.shape[1:]))
        if not self.is_train:
            d["image"] = torch.from_numpy(np.ascontiguousarray(image))
            return d
        if "label_file_name" not in d:
            raise DatasetError(f"{d['file_name']}: training record has no label_file_name")
        label = read_volume_label(d["label_file_name"], self.num_classes, self.ignore_label)
        if label.shape != image.shape[1:]:
            raise DatasetError(
                f"{d['label_file_name']}: label shape {label.shape} differs from image shape "
                f"{image.shape[1:]} of {d['file_name']}"
            )
        self._reseed()
        # crops are centred on class voxels (never on ignored ones) through a separate mask
        fg = ((label > 0) & (label != self.ignore_label))[None]
        sample = self.transform({"image": image, "label": label[None].astype(np.float32), "fg": fg})
        if isinstance(sample, list):
            sample = sample[0]
        d["image"] = _plain(sample["image"]).float().contiguous()
        d["label"] = _plain(sample["label"])[0].round().long().contiguous()
        return d


def _plain(x) -> torch.Tensor:
    """A plain tensor from MONAI's MetaTensor / numpy output (no metadata in batches)."""
    if hasattr(x, "as_tensor"):
        return x.as_tensor()
    return torch.as_tensor(np.asarray(x))


@DATASET_MAPPER_REGISTRY.register()
def volume(cfg, is_train: bool):
    """NIfTI volumes: normalisation; random crops, flips and intensity jitter in training."""
    return VolumeMapper(cfg, is_train)

"""The "volume" dataset mapper: NIfTI image/label pairs -> normalised 3D tensors.

Registered in ``DATASET_MAPPER_REGISTRY`` as ``"volume"`` (the default for data sets whose
``evaluator_type`` is "volume", see :func:`~medseg_core.data.registration.register_volume_folder`).

Reading goes through :func:`~medseg_core.data.volumes.read_nifti`, so a missing, corrupt or
truncated ``.nii.gz`` raises :class:`~medseg_core.errors.DatasetError` naming the file. Axes are
the NIfTI array axes (no reorientation; evaluation is always at the stored resolution); a 4th
NIfTI axis is the channel (modality) axis.

Pipeline (MONAI dictionary transforms where they do the job; keys ``INPUT.VOLUME.*``):

* every split: per-volume, per-channel intensity normalisation ("zscore", "range",
  "percentile" or "none"); resampling to the planned target spacing when a volume's spacing
  differs from it by more than 1% (trilinear image, nearest label;
  :mod:`.volumetric_plan`); the result is kept in memory (``CACHE_MB``);
* training only, in nnU-Net's order: zero-pad to at least the patch size (``CROP_SIZE``, or
  the plan's median-shape patch when it is (0, 0, 0)), one random crop centred on a
  foreground voxel with probability ``FOREGROUND_CROP_PROB`` (``RandCropByPosNegLabeld``;
  nnU-Net: 1/3), rotation and scaling (``RandAffined``), Gaussian noise, Gaussian blur,
  multiplicative brightness, contrast around the mean, simulated low resolution, gamma, and
  independent flips per axis, each with its own probability (nnU-Net's defaults); optional
  90-degree rotations and additive intensity shifts (the MONAI/UNETR pipeline).

Output: training ``{"image": (C, *patch) float32, "label": (*patch) int64, ...}``; test
``{"image": (C, D, H, W) float32, ...}`` (plus ``"orig_shape"`` when resampled, so that the
meta-architecture returns its prediction on the stored grid) with the record's
``label_file_name`` kept for the evaluator, which reads the ground truth itself at the
original resolution.

Label values that are neither a class id in ``[0, NUM_CLASSES)`` nor the ignore label become
the ignore label (the semantic mapper's convention), so an undocumented value never trains as
a class.
"""
from __future__ import annotations

import copy
import logging
import math
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from .. import compat  # noqa: F401

from ..errors import ConfigError, DatasetError
from .mappers import DATASET_MAPPER_REGISTRY
from .volumes import read_nifti, read_nifti_header

logger = logging.getLogger(__name__)

__all__ = [
    "VolumeMapper", "VolumeCache", "read_volume_image", "read_volume_label", "normalize_intensity",
    "resampled_shape", "resample_image", "resample_label",
]

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
        from .volumetric_plan import volume_plan

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
        plan = volume_plan(cfg)
        self.crop_size = plan.crop_size
        self.target_spacing = plan.target_spacing
        self.cache = VolumeCache(int(v.CACHE_MB))
        self._rng_pid: Optional[int] = None
        self.transform = self._build_train_transform(v) if is_train else None

    def _build_train_transform(self, v):
        """nnU-Net's augmentation order: crop, rotation/scaling, noise, blur, brightness,
        contrast, low resolution, gamma, mirroring (each with its own probability)."""
        import monai.transforms as mt

        keys = ["image", "label"]
        p_fg = float(v.FOREGROUND_CROP_PROB)
        if not 0 <= p_fg <= 1:
            raise ConfigError(f"INPUT.VOLUME.FOREGROUND_CROP_PROB must be in [0, 1], got {p_fg}")
        for key in ("ROTATE_PROB", "SCALE_PROB", "NOISE_PROB", "BLUR_PROB", "SCALE_INTENSITY_PROB",
                    "SHIFT_INTENSITY_PROB", "CONTRAST_PROB", "LOWRES_PROB", "GAMMA_PROB", "FLIP_PROB", "ROTATE90_PROB"):
            if not 0 <= float(v.get(key)) <= 1:
                raise ConfigError(f"INPUT.VOLUME.{key} must be a probability in [0, 1], got {v.get(key)}")
        ts: List = [
            mt.SpatialPadd(keys + ["fg"], spatial_size=self.crop_size, mode="constant"),
            # pos/neg are relative weights; MONAI needs their sum > 0
            mt.RandCropByPosNegLabeld(
                keys, label_key="fg", spatial_size=self.crop_size,
                pos=p_fg, neg=1.0 - p_fg, num_samples=1, allow_smaller=False,
            ),
        ]
        if v.ROTATE_PROB > 0 or v.SCALE_PROB > 0:
            rad = math.radians(float(v.ROTATE_DEGREES))
            lo, hi = (float(s) for s in v.SCALE_RANGE)
            # one RandAffined per component so that each has nnU-Net's own probability
            if v.ROTATE_PROB > 0:
                ts.append(mt.RandAffined(keys, prob=float(v.ROTATE_PROB), rotate_range=(rad, rad, rad),
                                         mode=("bilinear", "nearest"), padding_mode="zeros"))
            if v.SCALE_PROB > 0:
                # MONAI's scale_range s gives a zoom of 1 + U(-s, s) ... per axis; one shared factor
                # as nnU-Net would need a custom affine, so per-axis factors in [lo, hi] are used
                ts.append(mt.RandAffined(keys, prob=float(v.SCALE_PROB),
                                         scale_range=tuple((lo - 1.0, hi - 1.0) for _ in range(3)),
                                         mode=("bilinear", "nearest"), padding_mode="zeros"))
        if v.NOISE_PROB > 0:
            ts.append(mt.RandGaussianNoised("image", prob=float(v.NOISE_PROB), std=float(v.NOISE_STD)))
        if v.BLUR_PROB > 0:
            s = tuple(float(x) for x in v.BLUR_SIGMA)
            ts.append(mt.RandGaussianSmoothd("image", sigma_x=s, sigma_y=s, sigma_z=s, prob=float(v.BLUR_PROB)))
        if v.SCALE_INTENSITY_PROB > 0:
            ts.append(mt.RandScaleIntensityd("image", factors=float(v.SCALE_INTENSITY), prob=float(v.SCALE_INTENSITY_PROB)))
        if v.SHIFT_INTENSITY_PROB > 0:
            ts.append(mt.RandShiftIntensityd("image", offsets=float(v.SHIFT_INTENSITY), prob=float(v.SHIFT_INTENSITY_PROB)))
        if v.CONTRAST_PROB > 0:
            ts.append(mt.RandScaleIntensityFixedMeand("image", factors=float(v.CONTRAST), preserve_range=True,
                                                      prob=float(v.CONTRAST_PROB)))
        if v.LOWRES_PROB > 0:
            ts.append(mt.RandSimulateLowResolutiond("image", prob=float(v.LOWRES_PROB),
                                                    zoom_range=tuple(float(z) for z in v.LOWRES_ZOOM)))
        if v.GAMMA_PROB > 0:
            ts.append(mt.RandAdjustContrastd("image", prob=float(v.GAMMA_PROB),
                                             gamma=tuple(float(g) for g in v.GAMMA_RANGE), retain_stats=True))
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
        return mt.Compose(ts)

    def _reseed(self) -> None:
        # MONAI transforms own a RandomState created at construction; forked data-loader
        # workers would share it. Re-seed once per process from NumPy's global RNG, which
        # Detectron2 seeds per worker (and from SEED in the main process).
        pid = os.getpid()
        if self._rng_pid != pid:
            self.transform.set_random_state(seed=int(np.random.randint(0, 2**31 - 1)))
            self._rng_pid = pid

    def _load(self, d: Dict) -> Tuple[np.ndarray, Optional[np.ndarray], Tuple[int, ...]]:
        """Normalised (and resampled) image, label (training only) and the stored shape."""
        key = (d["file_name"], self.is_train)
        hit = self.cache.get(key)
        if hit is not None:
            return hit
        image = read_volume_image(d["file_name"], self.in_channels)
        orig_shape = tuple(int(s) for s in image.shape[1:])
        image = normalize_intensity(image, **self.norm)
        label = None
        if self.is_train:
            if "label_file_name" not in d:
                raise DatasetError(f"{d['file_name']}: training record has no label_file_name")
            label = read_volume_label(d["label_file_name"], self.num_classes, self.ignore_label)
            if label.shape != image.shape[1:]:
                raise DatasetError(
                    f"{d['label_file_name']}: label shape {label.shape} differs from image shape "
                    f"{image.shape[1:]} of {d['file_name']}"
                )
        if self.target_spacing is not None:
            spacing = d.get("spacing") or read_nifti_header(d["file_name"])[1]
            shape = resampled_shape(orig_shape, spacing, self.target_spacing)
            if shape != orig_shape:
                image = resample_image(image, shape)
                if label is not None:
                    label = resample_label(label, shape)
        out = (image, label, orig_shape)
        self.cache.put(key, out)
        return out

    def __call__(self, dataset_dict: Dict) -> Dict:
        d = copy.deepcopy(dataset_dict)
        image, label, orig_shape = self._load(d)
        d.setdefault("shape", orig_shape)
        if tuple(image.shape[1:]) != orig_shape:
            # the meta-architecture resamples its prediction back to the stored grid
            d["orig_shape"] = orig_shape
        if not self.is_train:
            d["image"] = torch.from_numpy(image.copy())
            return d
        self._reseed()
        # crops are centred on class voxels (never on ignored ones) through a separate mask
        fg = ((label > 0) & (label != self.ignore_label))[None]
        # copies: the cached arrays must never be modified by an in-place transform
        sample = self.transform({"image": image.copy(), "label": label[None].astype(np.float32), "fg": fg})
        if isinstance(sample, list):
            sample = sample[0]
        d["image"] = _plain(sample["image"]).float().contiguous()
        d["label"] = _plain(sample["label"])[0].round().long().contiguous()
        return d


class VolumeCache:
    """Decoded, normalised volumes kept in memory up to ``max_mb`` (0: off), per process.

    Decoding a ``.nii.gz`` and normalising it costs more CPU than a small crop's augmentation;
    a 3D training set such as msd-hippocampus (15 MB compressed, ~100 MB as float32) fits.
    Entries are never evicted: once full, further volumes are simply not cached.
    """

    def __init__(self, max_mb: int):
        self.max_bytes = max(int(max_mb), 0) * 2**20
        self.used = 0
        self._items: Dict = {}

    def get(self, key):
        return self._items.get(key)

    def put(self, key, value) -> None:
        if not self.max_bytes:
            return
        size = sum(a.nbytes for a in value if isinstance(a, np.ndarray))
        if self.used + size <= self.max_bytes:
            self._items[key] = value
            self.used += size


def resampled_shape(shape: Sequence[int], spacing: Sequence[float], target: Sequence[float]) -> Tuple[int, ...]:
    """Voxel counts of a volume at ``target`` spacing (unchanged within 1% of the spacing)."""
    out = []
    for n, s, t in zip(shape, spacing, target):
        out.append(int(n) if abs(float(s) - float(t)) <= 0.01 * float(t) else max(int(round(n * float(s) / float(t))), 1))
    return tuple(out)


def resample_image(image: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """(C, D, H, W) -> (C, *shape), trilinear (nnU-Net uses third-order splines)."""
    t = torch.from_numpy(np.ascontiguousarray(image))[None]
    out = torch.nn.functional.interpolate(t, size=tuple(shape), mode="trilinear", align_corners=False)
    return out[0].numpy().astype(np.float32)


def resample_label(label: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """(D, H, W) -> shape, nearest neighbour (class ids and the ignore label preserved)."""
    t = torch.from_numpy(label.astype(np.float32))[None, None]
    out = torch.nn.functional.interpolate(t, size=tuple(shape), mode="nearest")
    return out[0, 0].numpy().round().astype(np.int64)


def _plain(x) -> torch.Tensor:
    """A plain tensor from MONAI's MetaTensor / numpy output (no metadata in batches)."""
    if hasattr(x, "as_tensor"):
        return x.as_tensor()
    return torch.as_tensor(np.asarray(x))


@DATASET_MAPPER_REGISTRY.register()
def volume(cfg, is_train: bool):
    """NIfTI volumes: normalisation; random crops, flips and intensity jitter in training."""
    return VolumeMapper(cfg, is_train)

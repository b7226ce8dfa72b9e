"""Data-set statistics and the nnU-Net-style plan (target spacing, patch size) of a 3D recipe.

nnU-Net (Isensee et al., Nature Methods 2021) derives its 3D configuration from a "data
fingerprint" of the training set. The two rules used here:

* **target spacing** = the median voxel spacing per axis; when the data are anisotropic (the
  coarsest median axis more than 3x the finest) the coarse axis takes the 10th percentile of
  its spacings instead;
* **patch size** = the median volume shape at the target spacing, rounded **up** per axis to a
  multiple of the network's total down-sampling stride (so that every pooling level sees a
  whole number of voxels), then, while it exceeds ``max_voxels``, the axis with the largest
  patch / median ratio is reduced by one stride step (nnU-Net shrinks the patch in the same
  order when the GPU memory estimate is exceeded; here the budget is CPU time per iteration).

For Task04 Hippocampus (median 36 x 50 x 35 voxels at 1 mm, the shape nnU-Net's published
plan lists) a stride of 8 gives 40 x 56 x 40, nnU-Net's 3d_fullres patch.

The statistics (shape and spacing of every training volume, read from the NIfTI headers) are
computed once per data set and cached as JSON, keyed by the file list, sizes and modification
times, in ``INPUT.VOLUME.STATS_CACHE_DIR`` (default ``$MEDSEG_CACHE_DIR/volume_stats`` or
``~/.cache/medseg-d2/volume_stats``).
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..atomic import atomic_write_json
from ..errors import ConfigError, DatasetError
from .volumes import read_nifti_header

logger = logging.getLogger(__name__)

__all__ = [
    "dataset_statistics", "plan_target_spacing", "plan_patch_size", "VolumePlan", "volume_plan",
    "stats_cache_dir", "network_size_divisibility",
]

ANISOTROPY_RATIO = 3.0  # nnU-Net's threshold for "anisotropic" data


def stats_cache_dir(configured: str = "") -> str:
    if configured:
        return configured
    base = os.environ.get("MEDSEG_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "medseg-d2")
    return os.path.join(base, "volume_stats")


def _fingerprint(records: Sequence[Dict]) -> str:
    h = hashlib.sha1()
    for r in records:
        path = r["file_name"]
        st = os.stat(path) if os.path.isfile(path) else None
        h.update(f"{path}|{st.st_size if st else -1}|{int(st.st_mtime) if st else -1}\n".encode())
    return h.hexdigest()[:16]


def dataset_statistics(dataset_names: Sequence[str], cache_dir: str = "") -> Dict:
    """Shapes and spacings of every volume of the named registered sets, with their medians.

    Returns ``{"datasets", "num_volumes", "median_shape", "median_spacing", "min_shape",
    "max_shape", "spacings", "shapes", "key"}``; cached as JSON (module docstring).
    """
    from detectron2.data import DatasetCatalog

    names = [n for n in dataset_names]
    if not names:
        raise ConfigError("the volume plan needs DATASETS.TRAIN (its statistics choose patch size and spacing)")
    records: List[Dict] = []
    for n in names:
        records += list(DatasetCatalog.get(n))
    if not records:
        raise DatasetError(f"{names}: no volumes to compute the data set statistics from")
    key = _fingerprint(records)
    folder = stats_cache_dir(cache_dir)
    path = os.path.join(folder, f"{'+'.join(names)}-{key}.json")
    if os.path.isfile(path):
        try:
            with open(path) as f:
                stats = json.load(f)
            if stats.get("key") == key:
                return stats
        except (OSError, ValueError):
            logger.warning("%s: unreadable statistics cache, recomputing", path)
    shapes, spacings = [], []
    for r in records:
        shape, spacing = r.get("shape"), r.get("spacing")
        if shape is None or spacing is None:
            shape, spacing = read_nifti_header(r["file_name"])
        shapes.append([int(s) for s in shape[:3]])
        spacings.append([float(s) for s in spacing[:3]])
    sh, sp = np.array(shapes, dtype=np.float64), np.array(spacings, dtype=np.float64)
    stats = {
        "datasets": names, "num_volumes": len(records), "key": key,
        "median_shape": [float(v) for v in np.median(sh, 0)],
        "median_spacing": [float(v) for v in np.median(sp, 0)],
        "min_shape": [int(v) for v in sh.min(0)], "max_shape": [int(v) for v in sh.max(0)],
        "spacing_p10": [float(v) for v in np.percentile(sp, 10, axis=0)],
        "shapes": shapes, "spacings": spacings,
    }
    try:
        os.makedirs(folder, exist_ok=True)
        atomic_write_json(path, stats)
    except OSError as e:  # a read-only home must not stop training
        logger.warning("could not cache data set statistics in %s: %s", folder, e)
    return stats


def plan_target_spacing(stats: Dict) -> Tuple[float, float, float]:
    """Median spacing; the coarse axis of anisotropic data takes its 10th percentile."""
    med = list(stats["median_spacing"])
    if max(med) > ANISOTROPY_RATIO * min(med):
        ax = int(np.argmax(med))
        med[ax] = float(stats["spacing_p10"][ax])
    return tuple(float(v) for v in med)


def plan_patch_size(
    median_shape: Sequence[float], stride: int, max_voxels: int = 0
) -> Tuple[int, int, int]:
    """Median shape rounded up to multiples of ``stride``, shrunk to ``max_voxels`` (module doc)."""
    stride = max(int(stride), 1)
    med = [max(float(m), 1.0) for m in median_shape]
    patch = [int(math.ceil(m / stride) * stride) for m in med]
    while max_voxels and math.prod(patch) > max_voxels:
        ratios = [p / m if p > stride else -1.0 for p, m in zip(patch, med)]
        ax = int(np.argmax(ratios))
        if ratios[ax] < 0:
            break  # every axis is one stride already
        patch[ax] -= stride
    return tuple(patch)


def network_size_divisibility(cfg) -> int:
    """The stride the network needs: ``MODEL.VOLUMETRIC.SIZE_DIVISIBILITY``, else the registered
    network's ``size_divisibility_from_config(cfg)`` or class attribute ``size_divisibility``."""
    if cfg.MODEL.VOLUMETRIC.SIZE_DIVISIBILITY:
        return int(cfg.MODEL.VOLUMETRIC.SIZE_DIVISIBILITY)
    from ..modeling.volumetric import VOLUME_NETWORK_REGISTRY

    name = cfg.MODEL.VOLUMETRIC.NETWORK
    if not name or name not in VOLUME_NETWORK_REGISTRY:
        return 1
    cls = VOLUME_NETWORK_REGISTRY.get(name)
    fn = getattr(cls, "size_divisibility_from_config", None)
    if callable(fn):
        return int(fn(cfg))
    value = getattr(cls, "size_divisibility", 0)
    return int(value) if isinstance(value, int) and value > 0 else 1


class VolumePlan:
    """Patch size and target spacing of one config (explicit keys win over the statistics)."""

    def __init__(self, crop_size: Tuple[int, int, int], target_spacing: Optional[Tuple[float, float, float]],
                 stats: Optional[Dict]):
        self.crop_size = crop_size
        self.target_spacing = target_spacing
        self.stats = stats

    def __repr__(self) -> str:
        return f"VolumePlan(crop_size={self.crop_size}, target_spacing={self.target_spacing})"


_PLANS: Dict[str, VolumePlan] = {}


def volume_plan(cfg) -> VolumePlan:
    """The plan of ``cfg``: ``INPUT.VOLUME.CROP_SIZE`` / ``TARGET_SPACING`` where set, else
    from the statistics of ``DATASETS.TRAIN`` (computed once per process and data set)."""
    v = cfg.INPUT.VOLUME
    crop = tuple(int(c) for c in v.CROP_SIZE)
    spacing = tuple(float(s) for s in v.TARGET_SPACING)
    if len(crop) != 3 or len(spacing) != 3:
        raise ConfigError(f"INPUT.VOLUME.CROP_SIZE and TARGET_SPACING need 3 values, got {v.CROP_SIZE}, {v.TARGET_SPACING}")
    if any(c < 0 for c in crop) or (any(crop) and not all(crop)):
        raise ConfigError(f"INPUT.VOLUME.CROP_SIZE must be 3 positive sizes or (0, 0, 0) = planned, got {v.CROP_SIZE}")
    if any(s < 0 for s in spacing) or (any(spacing) and not all(spacing)):
        raise ConfigError(f"INPUT.VOLUME.TARGET_SPACING must be 3 positive mm values or (0, 0, 0) = planned, got {v.TARGET_SPACING}")
    need_stats = (not all(crop)) or (v.RESAMPLE and not all(spacing))
    stride = network_size_divisibility(cfg) if not all(crop) else 1
    key = json.dumps([list(cfg.DATASETS.TRAIN), crop, spacing, bool(v.RESAMPLE), stride,
                      int(v.PLAN_MAX_VOXELS), v.STATS_CACHE_DIR])
    if key in _PLANS:
        return _PLANS[key]
    stats = dataset_statistics(list(cfg.DATASETS.TRAIN), v.STATS_CACHE_DIR) if need_stats else None
    target = None
    if v.RESAMPLE:
        target = spacing if all(spacing) else plan_target_spacing(stats)
    if not all(crop):
        med = np.array(stats["median_shape"])
        if target is not None:
            med = med * np.array(stats["median_spacing"]) / np.array(target)
        crop = plan_patch_size(med.tolist(), stride, int(v.PLAN_MAX_VOXELS))
    plan = VolumePlan(tuple(int(c) for c in crop), target, stats)
    if stats is not None:
        logger.info(
            "Volume plan from %d volumes of %s: median shape %s at spacing %s -> patch %s, target spacing %s "
            "(network stride %d)", stats["num_volumes"], "+".join(stats["datasets"]),
            [round(s, 1) for s in stats["median_shape"]], stats["median_spacing"], plan.crop_size, target, stride,
        )
    _PLANS[key] = plan
    return plan

"""NIfTI volume reading with clear errors (nibabel).

A missing, corrupt or truncated ``.nii.gz`` raises :class:`~medseg_core.errors.DatasetError`
naming the file, instead of a zlib/EOF traceback from deep inside nibabel.
"""
from __future__ import annotations

import gzip
import os
import zlib
from typing import Tuple

import numpy as np

from ..errors import DatasetError

__all__ = ["read_nifti_header", "read_nifti"]


def _nib():
    import nibabel

    return nibabel


def read_nifti_header(path: str) -> Tuple[Tuple[int, ...], Tuple[float, ...]]:
    """(shape, voxel spacing) from the header only."""
    if not os.path.isfile(path):
        raise DatasetError(f"{path}: volume file does not exist")
    nib = _nib()
    try:
        img = nib.load(path)
        return tuple(img.shape), tuple(float(z) for z in img.header.get_zooms()[:3])
    except (nib.filebasedimages.ImageFileError, OSError, EOFError, zlib.error, gzip.BadGzipFile, ValueError) as e:
        raise DatasetError(f"{path}: not a readable NIfTI file ({type(e).__name__}: {e})") from e


def read_nifti(path: str, dtype=np.float32) -> Tuple[np.ndarray, Tuple[float, ...]]:
    """The voxel array (first three axes; a 4th channel axis is kept) and its spacing."""
    if not os.path.isfile(path):
        raise DatasetError(f"{path}: volume file does not exist")
    nib = _nib()
    try:
        img = nib.load(path)
        data = np.asarray(img.dataobj, dtype=dtype)
        spacing = tuple(float(z) for z in img.header.get_zooms()[:3])
    except (nib.filebasedimages.ImageFileError, OSError, EOFError, zlib.error, gzip.BadGzipFile, ValueError) as e:
        raise DatasetError(
            f"{path}: corrupt or truncated NIfTI file ({type(e).__name__}: {e})"
        ) from e
    if data.ndim not in (3, 4):
        raise DatasetError(f"{path}: expected a 3D (or 3D + channel) volume, got shape {data.shape}")
    if not np.isfinite(data).all():
        raise DatasetError(f"{path}: volume contains NaN or Inf values")
    return data, spacing

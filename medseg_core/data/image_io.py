"""Reading 2D images and label masks: one decoder for training, evaluation, the demo and the
pre-training check, so that all of them see the same pixels.

Decisions, per format (README "Safety and robustness"):

* **Orientation**: the EXIF orientation tag is applied to images AND masks (``ImageOps.exif_transpose``),
  so pixels, annotations and sizes are those of the image as displayed. Annotation tools
  (LabelMe, CVAT) and Detectron2's ``read_image`` use the displayed orientation, so COCO
  ``height``/``width``, boxes and polygons must describe the displayed image; the pre-training
  check names the file when they describe the stored one.
* **8-bit images** (L, RGB, RGBA, P, CMYK, ...): converted to ``INPUT.FORMAT`` as Detectron2 does
  (alpha dropped).
* **16-bit single-channel images** (PNG/TIFF ``I;16``; ``I`` with values in 0..65535): scaled
  linearly from ``[0, 2^INPUT.IMAGE_BIT_DEPTH - 1]`` to 0..255 (rounded), the same factor for every
  image, so that equal raw values stay equal intensities across the data set (a per-image
  min/max stretch would not). A value above that range is an error naming the file. Detectron2
  (and PIL's ``convert("RGB")``) would clip at 255 instead, turning most of an X-ray white.
  16-bit-per-channel colour PNGs are read by Pillow as 8-bit RGB (high byte), i.e. full range.
* **32-bit integer images with values outside 0..65535 and floating-point images** (TIFF ``I``/``F``):
  refused, naming the file and the mode: they have no defined intensity range.
* **Label masks**: values are read as stored: ``L``/``P`` (palette indices)/``1``/``I;16``/``I``;
  floating-point masks must hold integers; colour masks are accepted only when their channels are
  equal (a grayscale mask saved as RGB); a colour-coded mask is refused (convert it to class ids),
  except with a data set's ``mask_threshold`` where gray = luminance is thresholded.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .. import compat  # noqa: F401

from detectron2.data.detection_utils import convert_PIL_to_numpy
from detectron2.utils.file_io import PathManager

from ..errors import DatasetError

__all__ = [
    "read_image", "read_label_array", "label_values", "scale_high_bit_depth", "exif_orientation", "DECODE_ERRORS",
    "HIGH_BIT_MODES", "decode_reason",
]

# What Pillow raises on a truncated or corrupt file (and zlib/PNG CRC errors as SyntaxError/ValueError).
DECODE_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError)
HIGH_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
_RGB_LIKE = ("RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "LAB", "HSV")


def decode_reason(e: BaseException, path: str) -> str:
    """Pillow's message without the file name it repeats (the error already starts with it)."""
    text = str(e).replace(f"'{path}'", "").replace(path, "").strip(" :")
    return text or type(e).__name__


def exif_orientation(im: Image.Image) -> int:
    """The EXIF orientation tag (1 = as stored)."""
    try:
        return int(im.getexif().get(0x0112, 1) or 1)
    except Exception:  # noqa: BLE001 - a broken EXIF block: Pillow then displays as stored
        return 1


def _open_decoded(path: str, what: str) -> Image.Image:
    """Open, fully decode and orient an image; errors name the file."""
    try:
        with PathManager.open(path, "rb") as f:
            im = Image.open(f)
            im.load()
    except FileNotFoundError as e:
        raise DatasetError(f"{path}: {what} file does not exist") from e
    except DECODE_ERRORS as e:
        raise DatasetError(f"{path}: cannot decode {what} ({decode_reason(e, path)})") from e
    try:
        return ImageOps.exif_transpose(im) if exif_orientation(im) != 1 else im
    except DECODE_ERRORS as e:
        raise DatasetError(f"{path}: cannot apply the EXIF orientation of the {what} ({decode_reason(e, path)})") from e


def scale_high_bit_depth(raw: np.ndarray, bit_depth: int, path: str) -> np.ndarray:
    """16-bit (or 0..65535 32-bit) gray values -> uint8 by the factor 255 / (2^bit_depth - 1)."""
    if not 8 <= int(bit_depth) <= 16:
        raise DatasetError(f"{path}: INPUT.IMAGE_BIT_DEPTH must be in 8..16, got {bit_depth}")
    top = (1 << int(bit_depth)) - 1
    lo, hi = int(raw.min()), int(raw.max())
    if lo < 0 or hi > top:
        raise DatasetError(
            f"{path}: pixel values {lo}..{hi} exceed the {bit_depth}-bit range 0..{top}",
            hint="set INPUT.IMAGE_BIT_DEPTH to the data's bit depth (16 for the full 16-bit range)",
        )
    return np.rint(raw.astype(np.float32) * (255.0 / top)).astype(np.uint8)


def _gray_to_format(gray: np.ndarray, fmt: Optional[str]) -> np.ndarray:
    if fmt == "L":
        return gray[..., None]
    if fmt in (None, "RGB", "BGR"):
        return np.repeat(gray[..., None], 3, axis=2)
    return convert_PIL_to_numpy(Image.fromarray(gray, "L"), fmt)


def read_image(path: str, fmt: Optional[str] = "BGR", bit_depth: int = 16) -> np.ndarray:
    """An image file as an (H, W, C) array in ``fmt`` (Detectron2's formats), displayed orientation.

    Raises :class:`DatasetError` naming the file when it is missing, truncated or corrupt, or has
    a pixel format without a defined intensity range (see the module docstring).
    """
    im = _open_decoded(path, "image")
    mode = im.mode
    if mode == "F":
        raise DatasetError(
            f"{path}: 32-bit floating-point image (mode F) has no defined intensity range",
            hint="store it as an 8- or 16-bit PNG/TIFF",
        )
    if mode in HIGH_BIT_MODES:
        raw = np.asarray(im)
        if mode == "I" and (raw.min() < 0 or raw.max() > 65535):
            raise DatasetError(
                f"{path}: 32-bit integer image with values {int(raw.min())}..{int(raw.max())} has no "
                "defined intensity range", hint="store it as an 8- or 16-bit PNG/TIFF",
            )
        return _gray_to_format(scale_high_bit_depth(raw, bit_depth, path), fmt)
    try:
        return convert_PIL_to_numpy(im, fmt)
    except DECODE_ERRORS as e:
        raise DatasetError(f"{path}: cannot convert the {mode} image to {fmt} ({e})") from e


def _label_image(path: str, gray: bool):
    """The decoded mask as an 8-bit PIL image ("L"/"P"/"1") or, for other modes, an array."""
    im = _open_decoded(path, "mask")
    mode = im.mode
    if mode in ("L", "P", "1"):
        return im
    if mode in HIGH_BIT_MODES:
        return np.asarray(im)
    if mode == "F":
        raw = np.asarray(im)
        if not np.isfinite(raw).all() or not np.array_equal(raw, np.rint(raw)):
            raise DatasetError(f"{path}: floating-point mask has non-integer values; labels must be class ids")
        return raw
    if mode in ("LA", "PA"):
        return im.getchannel(0)
    if gray:
        return im.convert("L")
    if mode in _RGB_LIKE:
        r, g, b = im.convert("RGB").split()[:3]
        if r.tobytes() != g.tobytes() or r.tobytes() != b.tobytes():
            raise DatasetError(
                f"{path}: colour mask (mode {mode}) with unequal channels: masks must hold class ids",
                hint="save one class id per pixel in a single-channel (L or P) PNG, or register the set "
                     "with mask_threshold for binary masks",
            )
        return r
    raise DatasetError(f"{path}: unsupported mask mode {mode}")


def read_label_array(path: str, gray: bool = False) -> np.ndarray:
    """A label mask as an (H, W) int64 array of stored values, displayed orientation.

    ``gray``: colour masks become their luminance (for thresholded binary masks such as JPEG
    0/255 masks); otherwise a colour mask must have equal channels.
    """
    src = _label_image(path, gray)
    if isinstance(src, Image.Image):
        src = np.asarray(src.convert("L") if src.mode == "1" else src)
    return src.astype(np.int64)


def label_values(path: str, gray: bool = False, max_listed: int = 1024) -> dict:
    """``{"hw", "values", "n_values"}`` of a label mask: its size and sorted distinct values (at most
    ``max_listed`` listed), decoded as :func:`read_label_array` does (histogram for 8-bit masks)."""
    src = _label_image(path, gray)
    if isinstance(src, Image.Image):
        w, h = src.size
        hist = (src.convert("L") if src.mode == "1" else src).histogram()[:256]
        vals = [i for i, c in enumerate(hist) if c]
    else:
        h, w = src.shape[:2]
        vals = [int(v) for v in np.unique(src)]
    return {"hw": [h, w], "values": vals[:max_listed], "n_values": len(vals)}

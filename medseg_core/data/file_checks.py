"""The pre-training check: every image, mask and volume of a data set decoded once, in parallel,
with the verdicts cached by path + size + modification time.

A header read (what most loaders do) passes a truncated JPEG or ``.nii.gz``, and the data loader
then fails hours into training. Here each file is decoded in full, by the same readers the mappers
use (:mod:`.image_io`, :mod:`.volumes`), in a process pool sized to the available cores (threads
where ``fork`` is unavailable). JPEGs are decoded with libjpeg's 1/8 DCT scaling: the whole
entropy-coded stream is still read (truncation and corrupt data are found), at a third of the cost.

What a decode finds is data-intrinsic (size as displayed, stored size and EXIF orientation, mode,
16-bit maximum, the set of mask / label values, volume shape and spacing, or the decode error), so
it is cached as JSON (never pickle) in ``$MEDSEG_CACHE_DIR`` (default
``$XDG_CACHE_HOME/medseg-d2`` or ``~/.cache/medseg-d2``), one file per data set, and a second run
over unchanged files only ``stat``s them. A cache that cannot be read or written is ignored
(logged): the check then simply runs again. The verdicts are interpreted against the data set's
annotations and metadata on every run (sizes, allowed label values), and problems of ALL files
are reported at once in one :class:`~medseg_core.errors.DatasetError`.
"""
from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing as mp
import os
import time
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from ..atomic import atomic_write_json, is_temporary
from ..errors import DatasetError, MedSegError

logger = logging.getLogger(__name__)

__all__ = [
    "cache_dir", "num_check_workers", "run_file_checks", "raise_problems", "probe", "PROBES",
    "last_check_stats", "allowed_label_values",
]

CACHE_VERSION = 1
MAX_LISTED_VALUES = 1024  # distinct mask / label values kept per file
_SERIAL_BELOW = 24  # fewer files than this are decoded in this process (no pool start-up)

# timing of the most recent run_file_checks call per cache name (for tools/check_data.py and logs)
_LAST_STATS: Dict[str, Dict[str, float]] = {}


# --------------------------------------------------------------------------- cache
def cache_dir() -> str:
    env = os.environ.get("MEDSEG_CACHE_DIR")
    if env:
        return os.path.abspath(os.path.expanduser(env))
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "medseg-d2")


def _cache_path(cache_name: str) -> str:
    digest = hashlib.sha1(cache_name.encode("utf-8")).hexdigest()[:16]
    return os.path.join(cache_dir(), "file-checks", f"{digest}.json")


def _load_cache(cache_name: str) -> Dict[str, Any]:
    path = _cache_path(cache_name)
    try:
        with open(path, "r", encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        logger.warning("%s: unreadable file-check cache ignored (%s)", path, e)
        return {}
    if not isinstance(data, dict) or data.get("version") != CACHE_VERSION or not isinstance(data.get("entries"), dict):
        return {}
    return data["entries"]


CACHE_MAX_AGE_DAYS = 30  # cache files not written for this long are deleted (data sets gone)


def _prune(folder: str) -> None:
    cutoff = time.time() - CACHE_MAX_AGE_DAYS * 86400
    try:
        for f in os.listdir(folder):
            p = os.path.join(folder, f)
            if (f.endswith(".json") or is_temporary(f)) and os.path.getmtime(p) < cutoff:
                os.remove(p)
    except OSError:
        pass


def _save_cache(cache_name: str, entries: Dict[str, Any]) -> None:
    path = _cache_path(cache_name)
    _prune(os.path.dirname(path))
    try:
        atomic_write_json(path, {"version": CACHE_VERSION, "name": cache_name, "entries": entries})
    except OSError as e:
        logger.warning("%s: cannot write the file-check cache (%s); the next run checks again", path, e)


# --------------------------------------------------------------------------- probes
def _values(arr: np.ndarray) -> Dict[str, Any]:
    vals = np.unique(arr)
    return {"values": [int(v) for v in vals[:MAX_LISTED_VALUES]], "n_values": int(vals.size)}


def probe_image(path: str) -> Dict[str, Any]:
    from PIL import Image

    from .image_io import DECODE_ERRORS, HIGH_BIT_MODES, decode_reason, exif_orientation

    try:
        with Image.open(path) as im:
            stored_w, stored_h = im.size
            orientation = exif_orientation(im)
            mode = im.mode
            if im.format == "JPEG":
                im.draft(im.mode, (max(1, stored_w // 8), max(1, stored_h // 8)))
            im.load()
            out: Dict[str, Any] = {"mode": mode, "orientation": orientation, "stored_hw": [stored_h, stored_w]}
            if mode in HIGH_BIT_MODES or mode == "F":
                arr = np.asarray(im)
                lo, hi = float(arr.min()), float(arr.max())
                out.update(min=lo, max=hi)
                if mode == "F":
                    return {"error": "32-bit floating-point image (mode F) has no defined intensity range; "
                                     "store it as an 8- or 16-bit PNG/TIFF"}
                if lo < 0 or hi > 65535:
                    return {"error": f"32-bit integer image with values {lo:g}..{hi:g} has no defined intensity "
                                     "range; store it as an 8- or 16-bit PNG/TIFF"}
    except FileNotFoundError:
        return {"error": "image file does not exist"}
    except DECODE_ERRORS as e:
        return {"error": f"cannot decode image ({decode_reason(e, path)})"}
    swapped = orientation in (5, 6, 7, 8)
    out["hw"] = [stored_w, stored_h] if swapped else [stored_h, stored_w]
    return out


def _probe_mask(path: str, gray: bool) -> Dict[str, Any]:
    from .image_io import label_values

    try:
        return label_values(path, gray=gray, max_listed=MAX_LISTED_VALUES)
    except DatasetError as e:
        return {"error": _without_path(e.one_line(), path)}


def probe_mask(path: str) -> Dict[str, Any]:
    return _probe_mask(path, gray=False)


def probe_mask_gray(path: str) -> Dict[str, Any]:
    return _probe_mask(path, gray=True)


def probe_volume(path: str) -> Dict[str, Any]:
    from .volumes import read_nifti

    try:
        data, spacing = read_nifti(path, dtype=np.float32)
    except DatasetError as e:
        return {"error": _without_path(e.one_line(), path)}
    return {"shape": [int(s) for s in data.shape], "spacing": [float(s) for s in spacing]}


def probe_label_volume(path: str) -> Dict[str, Any]:
    from .volumes import read_nifti

    try:
        data, spacing = read_nifti(path, dtype=np.float64)
    except DatasetError as e:
        return {"error": _without_path(e.one_line(), path)}
    out: Dict[str, Any] = {"shape": [int(s) for s in data.shape], "spacing": [float(s) for s in spacing]}
    rounded = np.rint(data)
    if not np.array_equal(rounded, data):
        bad = np.unique(data[rounded != data])[:5]
        out["error"] = f"label volume has non-integer values (e.g. {', '.join(f'{v:g}' for v in bad)})"
        return out
    out.update(_values(rounded.astype(np.int64)))
    return out


def _without_path(message: str, path: str) -> str:
    return message[len(path) + 2:] if message.startswith(f"{path}: ") else message


PROBES: Dict[str, Callable[[str], Dict[str, Any]]] = {
    "image": probe_image, "mask": probe_mask, "mask_gray": probe_mask_gray,
    "volume": probe_volume, "label_volume": probe_label_volume,
}


def probe(kind_path: Tuple[str, str]) -> Dict[str, Any]:
    """Run one probe (top level, so that a process pool can call it)."""
    kind, path = kind_path
    try:
        return PROBES[kind](path)
    except MedSegError as e:
        return {"error": str(e)}


# --------------------------------------------------------------------------- running
def num_check_workers() -> int:
    env = os.environ.get("MEDSEG_CHECK_WORKERS")
    if env:
        return max(1, int(env))
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def _executor(workers: int) -> Executor:
    if "fork" in mp.get_all_start_methods():
        return ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("fork"))
    return ThreadPoolExecutor(max_workers=workers)  # decoders release the GIL for most formats


def _decode_all(items: List[Tuple[str, str]], workers: int) -> List[Dict[str, Any]]:
    if workers <= 1 or len(items) < _SERIAL_BELOW:
        return [probe(it) for it in items]
    chunk = max(1, len(items) // (workers * 8))
    with _executor(workers) as ex:
        return list(ex.map(probe, items, chunksize=chunk))


def run_file_checks(tasks: Iterable[Tuple[str, str]], cache_name: str, workers: Optional[int] = None
                    ) -> Dict[Tuple[str, str], Dict[str, Any]]:
    """Probe every ``(kind, path)`` once (cached); returns ``{(kind, path): result}``.

    A result is a dict of what the decode found, with an ``"error"`` entry when the file is missing
    or cannot be used. ``cache_name`` identifies the data set (one cache file per data set).
    """
    start = time.perf_counter()
    unique = list(dict.fromkeys((str(k), os.fspath(p)) for k, p in tasks))
    entries = _load_cache(cache_name)
    results: Dict[Tuple[str, str], Dict[str, Any]] = {}
    todo: List[Tuple[Tuple[str, str], str, os.stat_result]] = []
    for kind, path in unique:
        if kind not in PROBES:
            raise ValueError(f"unknown file check kind {kind!r}")
        try:
            st = os.stat(path)
        except FileNotFoundError:
            results[(kind, path)] = {"error": f"{'volume' if 'volume' in kind else kind.split('_')[0]} file does not exist"}
            continue
        except OSError as e:
            results[(kind, path)] = {"error": f"cannot read the file ({e})"}
            continue
        key = f"{kind}:{os.path.abspath(path)}"
        hit = entries.get(key)
        if isinstance(hit, dict) and hit.get("size") == st.st_size and hit.get("mtime_ns") == st.st_mtime_ns \
                and isinstance(hit.get("result"), dict):
            results[(kind, path)] = hit["result"]
        else:
            todo.append(((kind, path), key, st))
    n_workers = min(workers or num_check_workers(), max(1, len(todo)))
    decoded = _decode_all([t[0] for t in todo], n_workers) if todo else []
    for (item, key, st), res in zip(todo, decoded):
        results[item] = res
        entries[key] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "result": res}
    if todo:
        _save_cache(cache_name, entries)
    seconds = time.perf_counter() - start
    _LAST_STATS[cache_name] = {"files": len(unique), "decoded": len(todo), "seconds": seconds,
                               "workers": n_workers if todo else 0}
    if todo:
        logger.info("Pre-training check of %s: %d files (%d decoded with %d worker(s), %d cached) in %.1fs",
                    cache_name, len(unique), len(todo), n_workers, len(unique) - len(todo), seconds)
    return results


def last_check_stats(cache_name: str) -> Optional[Dict[str, float]]:
    return _LAST_STATS.get(cache_name)


def raise_problems(problems: Sequence[str], source: str, total: int, what: str = "files") -> None:
    """One :class:`DatasetError` for every problem found (each ``"<file>: <problem>"``)."""
    if not problems:
        return
    if len(problems) == 1:
        raise DatasetError(problems[0])
    raise DatasetError(
        f"{source}: {len(problems)} problems in {total} {what} found by the pre-training check "
        "(each listed above); nothing was started", details=problems,
    )


def allowed_label_values(num_classes: int, ignore_label: int, value_map: Optional[Dict] = None,
                         threshold: Optional[int] = None) -> Optional[set]:
    """The raw mask values a data set may hold (None: any, e.g. thresholded masks)."""
    if threshold is not None:
        return None
    if value_map:
        return {int(k) for k in value_map} | {int(ignore_label)}
    return set(range(int(num_classes))) | {int(ignore_label)}


def foreground_values(num_classes: int, ignore_label: int, value_map: Optional[Dict] = None,
                      threshold: Optional[int] = None) -> Callable[[Sequence[int]], bool]:
    """A test: do these raw values contain a foreground (class >= 1, not ignored) pixel?"""
    if threshold is not None:
        return lambda vals: any(v > threshold for v in vals)
    if value_map:
        fg = {int(k) for k, v in value_map.items() if int(v) >= 1 and int(v) != int(ignore_label)}
        return lambda vals: any(v in fg for v in vals)
    return lambda vals: any(1 <= v < num_classes and v != ignore_label for v in vals)

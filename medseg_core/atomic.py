"""Atomic file writes: a reader (or a resumed run) sees the old file or the new one, never half.

Every output the toolkit may be killed while writing (checkpoints, ``last_checkpoint``, results,
converted annotations, split files, reports) goes through :func:`atomic_write`: the data goes to
a temporary file in the same folder (same file system, so the rename is atomic), is flushed and
fsync'ed, then renamed over the target. On an error the temporary file is removed and the target
is left as it was.
"""
from __future__ import annotations

import json
import os
import re
import tempfile
from contextlib import contextmanager
from typing import IO, Any, Iterator, List

__all__ = [
    "atomic_write", "atomic_write_text", "atomic_write_json", "atomic_torch_save",
    "is_temporary", "remove_temporaries",
]

_SUFFIX = ".tmp"


@contextmanager
def atomic_write(path: str, mode: str = "w", encoding: str = "utf-8") -> Iterator[IO]:
    """Open a temporary file beside ``path`` for writing (``mode`` "w" or "wb"); on a normal exit
    it replaces ``path``, on an exception it is deleted and ``path`` is untouched."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write: mode {mode!r} must be 'w' or 'wb'")
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=_SUFFIX, dir=folder)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; the target gets the usual permissions
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": encoding})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def atomic_write_text(path: str, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_write(path) as f:
        f.write(text)


def atomic_write_json(path: str, obj: Any, **dump_kwargs: Any) -> None:
    """``json.dump(obj)`` to ``path`` atomically (keyword arguments go to ``json.dump``)."""
    with atomic_write(path) as f:
        json.dump(obj, f, **dump_kwargs)


def atomic_torch_save(obj: Any, path: str) -> None:
    """``torch.save(obj)`` to ``path`` atomically."""
    import torch

    with atomic_write(path, "wb") as f:
        torch.save(obj, f)


def is_temporary(name: str, target: str = ".+") -> bool:
    """Whether the file name ``name`` is a temporary that :func:`atomic_write` leaves when the
    process is killed mid-write, for a target whose base name matches the regular expression
    ``target`` (also ``<target>.tmp``, the name earlier versions of the toolkit wrote)."""
    suffix = re.escape(_SUFFIX)
    return re.fullmatch(rf"\.(?:{target})\.\w+{suffix}|(?:{target}){suffix}", name) is not None


def remove_temporaries(folder: str, target: str = ".+") -> List[str]:
    """Delete the temporaries of killed writes (see :func:`is_temporary`) in ``folder``; their
    targets are untouched. Returns the removed names."""
    removed: List[str] = []
    if not folder or not os.path.isdir(folder):
        return removed
    for name in sorted(os.listdir(folder)):
        if is_temporary(name, target):
            try:
                os.remove(os.path.join(folder, name))
                removed.append(name)
            except OSError:
                pass
    return removed

"""Checkpoints that resume on PyTorch >= 2.6 without unpickling arbitrary objects.

Since PyTorch 2.6, ``torch.load`` defaults to ``weights_only=True`` and Detectron2/fvcore
checkpointers break on resume (facebookresearch/detectron2#5456). Falling back to
``weights_only=False`` would execute whatever a checkpoint file pickles. Instead
:class:`SafeCheckpointer` always loads with ``weights_only=True`` and an explicit allowlist of
the (few) non-tensor classes our own checkpoints contain; anything else is refused with
:class:`~medseg_core.errors.UnsafeCheckpointError` naming the file and the offending globals.
Pickle-based formats (``.pkl``) are refused outright. ``.safetensors`` files load as weights.

Writes are atomic (:mod:`medseg_core.atomic`): a checkpoint is written to a temporary file and renamed, and
``last_checkpoint`` is replaced the same way only after the rename, so a process killed at any
moment leaves ``last_checkpoint`` pointing at a complete file.
"""
from __future__ import annotations

import os
import pickle
from typing import Any, Dict, List

import torch

from . import compat  # noqa: F401

from detectron2.checkpoint import DetectionCheckpointer

from .atomic import atomic_torch_save, atomic_write_text
from .errors import UnsafeCheckpointError

__all__ = ["SafeCheckpointer", "ALLOWED_GLOBALS", "safe_torch_load", "atomic_torch_save"]

# Non-tensor classes that our checkpoints legitimately contain. Plain containers, numbers,
# strings, tensors and OrderedDict are already allowed by torch's weights-only unpickler.
ALLOWED_GLOBALS: List[Any] = []


def safe_torch_load(path: str) -> Dict[str, Any]:
    """``torch.load`` with ``weights_only=True`` and our allowlist; clear errors otherwise."""
    if path.endswith(".pkl"):
        raise UnsafeCheckpointError(
            f"{path}: refusing to load a .pkl checkpoint: plain pickle can run arbitrary code. "
            "Convert it to a state dict (.pth) or .safetensors in a trusted environment first."
        )
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: checkpoint file does not exist")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return {"model": load_file(path, device="cpu")}
    try:
        with torch.serialization.safe_globals(ALLOWED_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        try:
            found = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        except Exception:  # noqa: BLE001 - the listing is only for the message
            found = []
        raise UnsafeCheckpointError(
            f"{path}: refused: the checkpoint carries pickled objects outside the allowlist "
            f"({', '.join(found) or e}). Only tensors, plain containers, numbers and strings "
            "are loaded; re-save the weights as a plain state dict from a trusted source."
        ) from e
    except (RuntimeError, EOFError) as e:
        raise RuntimeError(f"{path}: corrupt or truncated checkpoint ({e})") from e


class SafeCheckpointer(DetectionCheckpointer):
    """``DetectionCheckpointer`` with weights-only loading and atomic writes."""

    def _load_file(self, filename: str) -> Dict[str, Any]:
        data = safe_torch_load(filename)
        if not isinstance(data, dict):
            raise UnsafeCheckpointError(f"{filename}: a checkpoint must be a dict, got {type(data).__name__}")
        if "model" not in data:
            data = {"model": data}
        return data

    def save(self, name: str, **kwargs: Any) -> None:
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        basename = f"{name}.pth"
        save_file = os.path.join(self.save_dir, basename)
        self.logger.info("Saving checkpoint to %s", save_file)
        atomic_torch_save(data, save_file)
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        atomic_write_text(os.path.join(self.save_dir, "last_checkpoint"), last_filename_basename)

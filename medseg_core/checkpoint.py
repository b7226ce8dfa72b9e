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

Loading is strict by default: a checkpoint with any tensor missing, unexpected or of another
shape than the model built from the config raises
:class:`~medseg_core.errors.CheckpointMismatchError`, one message naming the checkpoint, the
mismatched tensors with both shapes and, when a class count explains the shapes, the config key
to change (e.g. ``MODEL.LMSFA.NUM_CLASSES 6``). Detectron2 would only log a warning and run
with randomly initialised layers. ``strict=False`` (the trainer's ``MODEL.WEIGHTS_ALLOW_PARTIAL``)
loads the matching tensors only, for fine-tuning from a backbone-only checkpoint.
"""
from __future__ import annotations

import os
import pickle
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from . import compat  # noqa: F401

from detectron2.checkpoint import DetectionCheckpointer
from fvcore.common.checkpoint import _strip_prefix_if_present

from .atomic import atomic_torch_save, atomic_write_text, remove_temporaries
from .errors import CheckpointError, CheckpointMismatchError, CheckpointNotFoundError, UnsafeCheckpointError

__all__ = [
    "SafeCheckpointer", "ALLOWED_GLOBALS", "safe_torch_load", "atomic_torch_save", "StateDictMismatch",
    "compare_state_dicts", "check_state_dict_fits", "check_checkpoint_for_config", "remove_stale_temporaries",
]

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
        raise CheckpointNotFoundError(f"{path}: checkpoint file does not exist")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        try:
            return {"model": load_file(path, device="cpu")}
        except Exception as e:  # noqa: BLE001 - safetensors raises its own error type
            raise CheckpointError(f"{path}: not a readable .safetensors file ({e})") from e
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
    except (RuntimeError, EOFError, ValueError, OSError) as e:
        raise CheckpointError(f"{path}: corrupt or truncated checkpoint ({str(e).splitlines()[0]})") from e


class StateDictMismatch:
    """Tensors of a checkpoint that do not fit a model: missing, unexpected, other shapes."""

    def __init__(self, missing: Sequence[str], unexpected: Sequence[str],
                 shapes: Sequence[Tuple[str, Tuple[int, ...], Tuple[int, ...]]]) -> None:
        self.missing, self.unexpected = sorted(missing), sorted(unexpected)
        self.shapes = list(shapes)  # (key, shape in the checkpoint, shape in the model)

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.shapes)

    def describe(self, max_items: int = 4) -> str:
        parts = []
        if self.shapes:
            listed = "; ".join(f"{k}: checkpoint {tuple(c)} vs model {tuple(m)}" for k, c, m in self.shapes[:max_items])
            more = f"; ... {len(self.shapes) - max_items} more" if len(self.shapes) > max_items else ""
            parts.append(f"{len(self.shapes)} tensor(s) differ in shape ({listed}{more})")
        for what, keys in (("missing from the checkpoint", self.missing), ("not in the model", self.unexpected)):
            if keys:
                more = f", ... {len(keys) - max_items} more" if len(keys) > max_items else ""
                parts.append(f"{len(keys)} tensor(s) {what} ({', '.join(keys[:max_items])}{more})")
        return "; ".join(parts)


# Detectron2 tolerates these (re-created from the config / non-persistent in new versions).
_IGNORED_MISSING = ("pixel_mean", "pixel_std")
_IGNORED_UNEXPECTED = ("anchor_generator.cell_anchors",)


def compare_state_dicts(model_sd: Dict[str, torch.Tensor], ckpt_sd: Dict[str, Any]) -> StateDictMismatch:
    """What keeps ``ckpt_sd`` from loading strictly into a model whose state dict is ``model_sd``."""
    missing = [k for k in model_sd if k not in ckpt_sd and k not in _IGNORED_MISSING]
    unexpected = [k for k in ckpt_sd if k not in model_sd and not any(p in k for p in _IGNORED_UNEXPECTED)]
    shapes = []
    for k, v in ckpt_sd.items():
        if k in model_sd and hasattr(v, "shape") and tuple(v.shape) != tuple(model_sd[k].shape):
            if isinstance(model_sd[k], torch.nn.parameter.UninitializedParameter):
                continue
            shapes.append((k, tuple(v.shape), tuple(model_sd[k].shape)))
    return StateDictMismatch(missing, unexpected, shapes)


def _class_count_keys(cfg) -> List[Tuple[str, int]]:
    """Every ``MODEL.*.NUM_CLASSES`` of the config with its value."""
    from detectron2.config import CfgNode

    out: List[Tuple[str, int]] = []

    def visit(node, prefix):
        for k, v in node.items():
            if isinstance(v, CfgNode):
                visit(v, f"{prefix}{k}.")
            elif k == "NUM_CLASSES" and isinstance(v, int) and not isinstance(v, bool):
                out.append((f"{prefix}{k}", v))

    visit(cfg.MODEL, "MODEL.")
    return out


def suggest_class_count(cfg, shapes) -> Optional[Tuple[str, int]]:
    """The ``MODEL.*.NUM_CLASSES`` key (and the value the checkpoint was trained with) that
    explains mis-shaped tensors, if one does: a tensor dimension equals the key's value (or the
    value + 1, a background / "no object" class) in the model and differs in the checkpoint.
    Keys of the config node named like the meta-architecture are preferred."""
    arch = str(cfg.MODEL.META_ARCHITECTURE).upper().replace("_", "")
    best = None
    for key, value in _class_count_keys(cfg):
        node = key.split(".")[-2].replace("_", "")
        for _, c_shape, m_shape in shapes:
            if len(c_shape) != len(m_shape):
                continue
            for c, m in zip(c_shape, m_shape):
                for extra in (0, 1):
                    if c != m and m == value + extra and c - extra >= 1:
                        score = (node in arch, extra == 0)
                        if best is None or score > best[0]:
                            best = (score, key, c - extra)
    return (best[1], best[2]) if best else None


def check_state_dict_fits(model: torch.nn.Module, state_dict: Dict[str, Any], path: str, cfg=None,
                          partial_hint: bool = False) -> None:
    """Raise :class:`CheckpointMismatchError` unless ``state_dict`` loads strictly into ``model``."""
    mismatch = compare_state_dicts(model.state_dict(), state_dict)
    if not mismatch:
        return
    hints = []
    suggestion = suggest_class_count(cfg, mismatch.shapes) if cfg is not None and mismatch.shapes else None
    if suggestion:
        hints.append(f"the checkpoint was trained with {suggestion[0]} {suggestion[1]}: set it in the config "
                     f"or on the command line")
    else:
        hints.append("use the config the checkpoint was trained with (architecture, width, class count)")
    if partial_hint:
        hints.append("to fine-tune from only its matching tensors (e.g. a backbone-only checkpoint) set "
                     "MODEL.WEIGHTS_ALLOW_PARTIAL True")
    raise CheckpointMismatchError(
        f"{path}: does not fit the model built from the config: {mismatch.describe()}", hint="; ".join(hints)
    )


def check_checkpoint_for_config(cfg, path: str) -> None:
    """Refuse ``path`` unless its weights (and its weight average, if any) fit the model of ``cfg``:
    for tools that take several checkpoints and should stop before any work (tools/compare.py)."""
    from detectron2.modeling import build_model

    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.DEVICE = "cpu"
    model = build_model(cfg)
    data = safe_torch_load(path)
    if not isinstance(data, dict):
        raise UnsafeCheckpointError(f"{path}: a checkpoint must be a dict, got {type(data).__name__}")
    state = data.get("model", data)
    _strip_prefix_if_present(state, "module.")
    check_state_dict_fits(model, state, path, cfg)
    ema = data.get("model_ema")
    if isinstance(ema, dict) and isinstance(ema.get("model"), dict) and cfg.MODEL_EMA.USE_FOR_EVAL:
        check_state_dict_fits(model, ema["model"], f"{path} (model_ema)", cfg)


def remove_stale_temporaries(folder: str) -> List[str]:
    """Delete the temporary files of checkpoint and ``last_checkpoint`` writes that a process
    killed while writing left (a resumed run must not mistake or accumulate them)."""
    return remove_temporaries(folder, r".+\.pth|last_checkpoint")


class SafeCheckpointer(DetectionCheckpointer):
    """``DetectionCheckpointer`` with weights-only loading, strict matching and atomic writes.

    Args:
        strict: refuse a checkpoint whose tensors do not all match the model (default); False
            loads the matching ones and logs the rest (fine-tuning from a partial checkpoint).
        cfg: the model's config, to name the key to change in a mismatch message.
        partial_hint: mention ``MODEL.WEIGHTS_ALLOW_PARTIAL`` in mismatch messages (training only:
            evaluation, demo and export never run a partly initialised model).
    """

    def __init__(self, model, save_dir: str = "", *, strict: bool = True, cfg=None, partial_hint: bool = False,
                 save_to_disk=None, **checkpointables) -> None:
        super().__init__(model, save_dir, save_to_disk=save_to_disk, **checkpointables)
        self.strict = strict
        self.cfg = cfg
        self.partial_hint = partial_hint
        self._loading: str = ""

    def load(self, path: str, checkpointables: Optional[List[str]] = None) -> Dict[str, Any]:
        if path and not os.path.isfile(path):
            raise CheckpointNotFoundError(f"{path}: checkpoint file does not exist")
        self._loading = path
        return super().load(path, checkpointables)

    def _load_model(self, checkpoint: Dict[str, Any]):
        state = checkpoint["model"]
        if not isinstance(state, dict):
            raise CheckpointError(f"{self._loading}: 'model' must be a state dict, got {type(state).__name__}")
        _strip_prefix_if_present(state, "module.")
        if self.strict:
            check_state_dict_fits(self.model, state, self._loading, self.cfg, self.partial_hint)
        return super()._load_model(checkpoint)

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

"""Optional dependency groups ("extras") and the one message for a missing one.

The core install (``pip install medseg-d2``) carries Detectron2's dependencies and what LMSF-A,
LGMSNet-2D and the shared package need. Everything else is an extra of ``setup.py``; this module
names, per extra, the modules that must be importable, so that code needing one can stop with a
single line that says what to install instead of a traceback deep inside a model build.
Kept in step with ``setup.py``'s ``EXTRAS`` by ``tests/test_packaging.py``.
"""
from __future__ import annotations

import importlib.util
from typing import Dict, List, Tuple

__all__ = ["EXTRA_MODULES", "MissingExtraError", "missing_modules", "require_extra"]

DISTRIBUTION = "medseg-d2"

# extra -> modules it provides (import names, not distribution names)
EXTRA_MODULES: Dict[str, Tuple[str, ...]] = {
    "baselines": ("timm", "transformers"),
    "volumetric": ("monai", "nibabel", "einops"),  # einops: MONAI UNETR / SwinUNETR
    "deploy": ("onnx", "onnxruntime", "onnxscript", "openvino", "nncf"),
}


class MissingExtraError(ImportError):
    """An optional dependency group is not installed; the message is one line naming it."""


def missing_modules(extra: str) -> List[str]:
    """The modules of ``extra`` that cannot be found (found by spec, none is imported)."""
    if extra not in EXTRA_MODULES:
        raise KeyError(f"unknown extra {extra!r}; known: {sorted(EXTRA_MODULES)}")
    return [m for m in EXTRA_MODULES[extra] if importlib.util.find_spec(m) is None]


def extra_message(extra: str, who: str, missing: List[str]) -> str:
    """One line: who needs which missing modules, and the command that installs them."""
    return (
        f"{who} needs the optional package{'s' if len(missing) > 1 else ''} "
        f"{', '.join(missing)} (not installed): pip install '{DISTRIBUTION}[{extra}]'"
    )


def require_extra(extra: str, who: str) -> None:
    """Raise :class:`MissingExtraError` naming ``who`` and the extra when any module is missing."""
    missing = missing_modules(extra)
    if missing:
        raise MissingExtraError(extra_message(extra, who, missing))

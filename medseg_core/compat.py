"""Compatibility shim that lets Detectron2 v0.6 run on NumPy 2 and Pillow >= 10.

Detectron2 v0.6 (2021) uses aliases that newer releases removed:

* ``PIL.Image.LINEAR`` is a default argument in ``detectron2/data/transforms/transform.py``,
  so ``import detectron2.data`` fails on Pillow >= 10 unless it exists;
* ``np.int`` / ``np.float`` / ``np.str`` / ``np.object`` (removed in NumPy 1.24) are used by
  ``SemSegEvaluator``, the class histogram of ``build_detection_train_loader`` and the VOC
  loader.

We keep current NumPy 2 and Pillow (older Pillow lacks security fixes) and restore the aliases
instead of pinning old releases. Every package of this project imports this module before any
Detectron2 submodule. The aliases point at the Python builtins, which is what the removed NumPy
names were.

It also imports ``fvcore.nn`` and ``detectron2.modeling.box_regression`` (imported by every model
anyway), after the aliases, with torch's "``torch.jit.script`` is deprecated" FutureWarning
silenced: both script a function at import time, and that warning otherwise greets every command
of the toolkit twice. Our own code never calls ``torch.jit.script`` implicitly.
"""
import builtins
import warnings

import numpy as np
from PIL import Image

for _name in ("bool", "int", "float", "str", "object"):
    if _name not in np.__dict__:
        setattr(np, _name, getattr(builtins, _name))

if not hasattr(Image, "LINEAR"):
    Image.LINEAR = Image.BILINEAR

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)
    import fvcore.nn  # noqa: F401,E402
    import detectron2.modeling.box_regression  # noqa: F401,E402

APPLIED = True

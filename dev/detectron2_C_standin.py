"""Stand-in for ``detectron2._C``, the compiled extension that the registry sdist cannot build.

The ``pb1-detectron2`` sdist on the package registry ships Detectron2 v0.6's Python code but
not ``detectron2/layers/csrc``, so the C++/CUDA extension is dropped at install time
(see ``dev/install_detectron2.sh``). Detectron2 still imports ``detectron2._C`` at module
import time (rotated boxes, deformable conv, the fast COCO evaluator), and
``detectron2.utils.collect_env`` calls three version helpers as soon as that import
succeeds. This module provides exactly those helpers; every other attribute raises an
``AttributeError`` that names the missing compiled op, so a feature that really needs the
extension fails loudly instead of silently.
"""


def get_compiler_version() -> str:
    return "not built (detectron2 installed without its C++/CUDA extension)"


def get_cuda_version() -> str:
    return "not built (detectron2 installed without its C++/CUDA extension)"


def has_cuda() -> bool:
    return False


def __getattr__(name: str):
    if name.startswith("__"):
        raise AttributeError(name)
    raise AttributeError(
        f"detectron2._C.{name} is unavailable: detectron2 was installed without its compiled "
        "C++/CUDA extension (rotated-box ops, CUDA deformable conv and the fast COCO evaluator "
        "need it). Use the pure-PyTorch alternatives (e.g. COCOEvaluator(use_fast_impl=False))."
    )

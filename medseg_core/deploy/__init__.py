"""Deployment: one interface every 2D meta-architecture implements, and the shared code built on it.

* :mod:`.interface` -- :class:`PreprocessContract`, the :class:`DeployableModel` protocol,
  :class:`DeployNetwork` (normalisation + network: what is exported), adapters;
* :mod:`.rcnn` -- the adapter of Detectron2's ``GeneralizedRCNN`` (Mask R-CNN), registered here;
* :mod:`.runtimes` -- PyTorch (eager / fused), TorchScript, ONNX Runtime, OpenVINO, TensorRT (CUDA);
* :mod:`.export` -- TorchScript / ONNX / OpenVINO IR export and the check against PyTorch;
* :mod:`.quantize` -- INT8 post-training quantisation (NNCF on the OpenVINO IR);
* :mod:`.predictor` -- array-first predictor: frame -> contract -> runtime -> post-processing;
* :mod:`.video` -- threaded video / camera pipeline (decode | infer | draw + write).

Only :mod:`.interface` and :mod:`.rcnn` are imported here; the others import their runtimes lazily.
"""
from .interface import (  # noqa: F401
    RESIZE_RULES, DeployableModel, DeployNetwork, PreprocessContract, as_deployable, register_deploy_adapter,
    resize_longest,
)
from . import rcnn  # noqa: F401,E402  (registers the GeneralizedRCNN adapter)

__all__ = [
    "PreprocessContract", "DeployableModel", "DeployNetwork", "as_deployable", "register_deploy_adapter",
    "RESIZE_RULES", "resize_longest",
]

"""Array-first predictor: a frame (NumPy array) -> the contract's resize and padding -> any runtime ->
the model's own post-processing -> Detectron2 results at the frame's size.

Frames never leave memory (no encoding to an image file and decoding it again): the contract
(:class:`~medseg_core.deploy.interface.PreprocessContract`) reproduces the model's test mapper on
an array (tested against the mapper for every model family), so a frame and the file it was
saved to give the same predictions. :func:`build_deployable` builds the model of a config with
its weights (weights-only loading, the weight-EMA copy when present), :func:`build_runtime`
any runtime of :mod:`medseg_core.deploy.runtimes` for it, exporting into a folder when the
runtime needs a file.

Stages are labelled with ``torch.profiler.record_function`` ("preprocess", "network",
"postprocess"; models may label finer steps inside their post-processing), so that
``tools/benchmark.py --modes stages`` can attribute the end-to-end time.
"""
from __future__ import annotations

import copy
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor, nn
from torch.profiler import record_function

from .interface import DeployableModel, DeployNetwork, as_deployable

__all__ = ["Predictor", "build_model_for_eval", "build_deployable", "build_runtime"]


class Predictor:
    """``predictor(frame, image_format="BGR") -> {"instances": ...} | {"sem_seg": ...}``.

    Args:
        model: the deployable model (its contract and post-processing are used).
        runtime: callable raw batch -> raw outputs (:mod:`.runtimes`); its ``input_hw`` (static
            graphs) fixes the padded size.
    """

    def __init__(self, model: DeployableModel, runtime) -> None:
        self.model = model
        self.runtime = runtime
        self.contract = model.deploy_contract()

    def image_tensor(self, image: np.ndarray, image_format: str = "BGR") -> Tensor:
        """The resized (C, h, w) uint8 tensor of one frame (what the test mapper returns)."""
        return self.contract.image_tensor(image, image_format)

    def prepare(self, images: Sequence[np.ndarray], image_format: str = "BGR"
                ) -> Tuple[Tensor, List[Tuple[int, int]], List[Tuple[int, int]]]:
        """Frames -> (padded raw batch, resized sizes, original sizes)."""
        with record_function("preprocess"):
            tensors = [self.image_tensor(im, image_format) for im in images]
            batch = self.contract.pad_batch(tensors, getattr(self.runtime, "input_hw", None))
        return batch, [tuple(t.shape[-2:]) for t in tensors], [tuple(im.shape[:2]) for im in images]

    @torch.no_grad()
    def run_tensors(self, batch: Tensor, image_sizes: Sequence[Tuple[int, int]],
                    original_sizes: Sequence[Tuple[int, int]]) -> List[Dict]:
        with record_function("network"):
            raw = self.runtime(batch)
        with record_function("postprocess"):
            return self.model.deploy_postprocess(raw, image_sizes, original_sizes)

    def predict_batch(self, images: Sequence[np.ndarray], image_format: str = "BGR") -> List[Dict]:
        return self.run_tensors(*self.prepare(images, image_format))

    def predict_image_tensor(self, image: Tensor, original_size: Tuple[int, int]) -> Dict:
        """An already resized (C, h, w) image (e.g. a test mapper's ``"image"``) of a frame of
        ``original_size`` (H, W)."""
        batch = self.contract.pad_batch([image], getattr(self.runtime, "input_hw", None))
        return self.run_tensors(batch, [tuple(image.shape[-2:])], [tuple(int(v) for v in original_size)])[0]

    def __call__(self, image: np.ndarray, image_format: str = "BGR") -> Dict:
        return self.predict_batch([image], image_format)[0]


def build_model_for_eval(cfg, fuse: bool = False) -> nn.Module:
    """The model of ``cfg`` in eval mode with its weights (``load_weights_for_eval``), fused when
    ``fuse`` and the model has ``fuse()``."""
    from detectron2.modeling import build_model

    from ..engine.trainer import load_weights_for_eval
    from ..projects import load_projects

    load_projects(cfg)  # only the projects this config names
    model = build_model(cfg)
    model.eval()
    if cfg.MODEL.WEIGHTS:
        load_weights_for_eval(cfg, model, cfg.MODEL.WEIGHTS)
    if fuse and callable(getattr(model, "fuse", None)):
        model = model.fuse() or model
    return model


def build_deployable(cfg, fuse: bool = False) -> DeployableModel:
    """The deployable form of the model of ``cfg`` (the model itself or its adapter), in eval mode."""
    return as_deployable(build_model_for_eval(cfg, fuse), cfg).eval()


def build_runtime(kind: str, model: DeployableModel, workdir: str = "", example: Optional[Tensor] = None,
                  threads: int = 0, dynamic: bool = True, artifact: str = ""):
    """Runtime ``kind`` (:data:`~medseg_core.deploy.runtimes.RUNTIMES`, or "openvino-int8" with
    ``artifact`` = an INT8 IR) for ``model``. PyTorch kinds wrap the model in a
    ``DeployNetwork`` (``pytorch-fused`` fuses a copy and runs it channels-last); file-based kinds load ``artifact`` or,
    without one, export the network into ``workdir`` first (``example`` = a padded raw batch;
    ``dynamic`` = free batch/height/width)."""
    from . import runtimes as rt
    from .export import export_onnx, export_openvino, export_torchscript, make_export_friendly

    if kind == "pytorch":
        return rt.TorchRuntime(DeployNetwork(model).eval(), "pytorch")
    if kind == "pytorch-fused":
        fused = copy.deepcopy(model)
        if callable(getattr(fused, "fuse", None)):
            fused = fused.fuse() or fused
        return rt.TorchRuntime(DeployNetwork(fused).eval(), "pytorch-fused", channels_last=True)
    if kind == "tensorrt":
        if example is None:
            raise ValueError("tensorrt: needs an example batch (its shape is compiled)")
        return rt.TensorRTRuntime(DeployNetwork(model).eval(), example)
    static_hw = None if dynamic or example is None else tuple(example.shape[-2:])
    if artifact:
        path = artifact
    else:
        if example is None or not workdir:
            raise ValueError(f"{kind}: give the exported file (artifact) or a workdir and an example batch to export")
        os.makedirs(workdir, exist_ok=True)
        net = DeployNetwork(copy.deepcopy(model)).eval()
        make_export_friendly(net)
        names = model.deploy_output_names()
        div = model.deploy_contract().size_divisibility
        if kind == "torchscript":
            path = export_torchscript(net, example, os.path.join(workdir, "model.ts"))
        else:
            onnx_path = export_onnx(net, example, os.path.join(workdir, "model.onnx"), names, dynamic, divisibility=div)
            path = onnx_path if kind == "onnxruntime" else export_openvino(onnx_path, os.path.join(workdir, "model.xml"))
    if kind == "torchscript":
        return rt.TorchScriptRuntime(path, static_hw)
    if kind == "onnxruntime":
        return rt.OnnxRuntime(path, threads, input_hw=static_hw)
    if kind in ("openvino", "openvino-int8"):
        return rt.OpenVINORuntime(path, threads, input_hw=static_hw, name=kind)
    raise ValueError(f"unknown runtime {kind!r}; choose one of {list(rt.RUNTIMES) + ['openvino-int8']}")

"""Runtimes that run a deployable network: raw padded images (B, C, H, W) float32 -> raw outputs.

Every runtime is a callable ``runtime(images: Tensor) -> list[Tensor]`` with a ``name`` and an
``input_hw`` (the fixed (H, W) of a static graph, or None when any multiple of the contract's
size divisibility is accepted), so that the predictor, the export check and the benchmark
treat them alike:

=================  ==========================================================================
``pytorch``        :class:`~medseg_core.deploy.interface.DeployNetwork` in eager PyTorch (unfused)
``pytorch-fused``  the same after ``model.fuse()`` (Conv+BN folding, re-parameterisation), with
                   channels-last 2D convolution weights and input (oneDNN's native layout:
                   about 12 % faster for LMSF-A / YOLOv8n-seg on one CPU thread, 1e-5 apart)
``torchscript``    a ``torch.jit.trace`` file (:func:`medseg_core.deploy.export.export_torchscript`)
``onnxruntime``    an ONNX file in ONNX Runtime (CPU execution provider unless told otherwise)
``openvino``       an OpenVINO IR (``.xml`` + ``.bin``; FP32 or NNCF INT8) on the OpenVINO CPU plugin
``tensorrt``       torch-tensorrt FP16 compilation of the PyTorch network; only with a CUDA GPU
=================  ==========================================================================

Thread counts: ``threads`` > 0 pins the runtime's intra-op pool (ONNX Runtime
``intra_op_num_threads``, OpenVINO ``INFERENCE_NUM_THREADS``; PyTorch uses the process-wide
``torch.set_num_threads``). OpenVINO is compiled with the LATENCY hint, one stream and FP32
inference precision (``INFERENCE_PRECISION_HINT f32``: CPUs with BF16 support would otherwise
run FP32 models in BF16), so that an FP32 IR reproduces PyTorch within float tolerance; a
dynamic-shape IR is compiled once per input shape it sees (a video has one shape).
"""
from __future__ import annotations

import logging
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor, nn

from ..extras import require_extra

__all__ = [
    "RUNTIMES", "TorchRuntime", "TorchScriptRuntime", "OnnxRuntime", "OpenVINORuntime", "TensorRTRuntime",
    "cuda_available",
]

logger = logging.getLogger(__name__)

RUNTIMES = ("pytorch", "pytorch-fused", "torchscript", "onnxruntime", "openvino", "tensorrt")


def cuda_available() -> bool:
    return torch.cuda.is_available()


def _np_input(images: Tensor) -> np.ndarray:
    return np.ascontiguousarray(images.detach().cpu().numpy(), dtype=np.float32)


class TorchRuntime:
    """A PyTorch module (normally a ``DeployNetwork``) called under ``torch.no_grad``;
    ``channels_last`` stores 2D convolution weights and the input channels-last."""

    def __init__(self, network: nn.Module, name: str = "pytorch", input_hw: Optional[Tuple[int, int]] = None,
                 channels_last: bool = False) -> None:
        self.network = network.eval()
        self.name = name
        self.input_hw = input_hw
        self.device = next((b.device for b in network.buffers()), torch.device("cpu"))
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        if channels_last:
            for m in network.modules():
                if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                    m.weight.data = m.weight.data.contiguous(memory_format=torch.channels_last)

    @torch.no_grad()
    def __call__(self, images: Tensor) -> List[Tensor]:
        x = images.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)
        return list(self.network(x))


class TorchScriptRuntime(TorchRuntime):
    """A saved TorchScript file (``torch.jit.load``; no project code needed to run it)."""

    def __init__(self, path: str, input_hw: Optional[Tuple[int, int]] = None, device: str = "cpu") -> None:
        super().__init__(torch.jit.load(path, map_location=device), "torchscript", input_hw)
        self.device = torch.device(device)
        self.path = path


class OnnxRuntime:
    """An ONNX file in ONNX Runtime (full graph optimisation)."""

    def __init__(self, path: str, threads: int = 0, providers: Sequence[str] = ("CPUExecutionProvider",),
                 input_hw: Optional[Tuple[int, int]] = None) -> None:
        require_extra("deploy", "the onnxruntime runtime")
        import onnxruntime as ort

        opts = ort.SessionOptions()
        if threads > 0:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(path, opts, providers=list(providers))
        self.input_name = self.session.get_inputs()[0].name
        self.name = "onnxruntime"
        self.input_hw = input_hw
        self.path = path

    def __call__(self, images: Tensor) -> List[Tensor]:
        return [torch.from_numpy(o) for o in self.session.run(None, {self.input_name: _np_input(images)})]


class OpenVINORuntime:
    """An OpenVINO IR (or ONNX file) compiled for the OpenVINO CPU plugin (see the module docstring)."""

    def __init__(self, path: str, threads: int = 0, device: str = "CPU", precision: str = "f32",
                 input_hw: Optional[Tuple[int, int]] = None, name: str = "openvino") -> None:
        require_extra("deploy", "the openvino runtime")
        import openvino as ov

        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: no such OpenVINO model file")
        self.core = ov.Core()
        self.path, self.device, self.name, self.input_hw = path, device, name, input_hw
        self.config: Dict[str, object] = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1}
        if device == "CPU":
            self.config["INFERENCE_PRECISION_HINT"] = precision
        if threads > 0:
            self.config["INFERENCE_NUM_THREADS"] = int(threads)
        self.model = self.core.read_model(path)
        self.dynamic = self.model.inputs[0].get_partial_shape().is_dynamic
        self._compiled: Dict[Tuple[int, ...], object] = {}
        self._requests: Dict[Tuple[int, ...], object] = {}

    def _request(self, shape: Tuple[int, ...]):
        key = shape if self.dynamic else ()
        req = self._requests.get(key)
        if req is None:
            model = self.model
            if self.dynamic:
                model = self.core.read_model(self.path)
                model.reshape({model.inputs[0].get_any_name(): list(shape)})
            try:
                compiled = self.core.compile_model(model, self.device, self.config)
            except RuntimeError as e:
                if "snippets" not in str(e) or self.device != "CPU":
                    raise
                # OpenVINO's CPU "snippets" (fused element-wise subgraphs) reject some graphs (Mask2Former:
                # "ReduceDecomposition supports only Reduce by last dimension"); the plain kernels run them
                logger.warning("%s: OpenVINO snippets failed (%s); compiling with SNIPPETS_MODE DISABLE",
                               self.path, str(e).strip().splitlines()[-1])
                self.config["SNIPPETS_MODE"] = "DISABLE"
                compiled = self.core.compile_model(model, self.device, self.config)
            self._compiled[key] = compiled
            req = self._requests[key] = compiled.create_infer_request()
        return req

    def __call__(self, images: Tensor) -> List[Tensor]:
        x = _np_input(images)
        req = self._request(tuple(x.shape))
        req.infer({0: x})
        # copies: the request's output buffers are reused by the next call
        return [torch.from_numpy(np.array(req.get_output_tensor(i).data)) for i in range(len(req.model_outputs))]


class TensorRTRuntime(TorchRuntime):
    """torch-tensorrt FP16 compilation of a PyTorch network for a fixed input shape (CUDA only)."""

    def __init__(self, network: nn.Module, example: Tensor, fp16: bool = True) -> None:
        if not cuda_available():
            raise RuntimeError("tensorrt: needs a CUDA GPU (torch.cuda.is_available() is False)")
        try:
            import torch_tensorrt
        except ImportError as e:
            raise RuntimeError("tensorrt: the torch-tensorrt package is not installed") from e
        net = network.eval().cuda()
        example = example.cuda()
        precisions = {torch.float16, torch.float32} if fp16 else {torch.float32}
        compiled = torch_tensorrt.compile(net, ir="dynamo", inputs=[example], enabled_precisions=precisions)
        super().__init__(compiled, "tensorrt-fp16" if fp16 else "tensorrt", tuple(example.shape[-2:]))
        self.device = torch.device("cuda")

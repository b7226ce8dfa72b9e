"""Batch-1 inference latency of any model of the toolkit, measured the same way for all.

Protocol (LMSF-A paper §IV-B/IV-E: "FPS is the inverse of average per-image inference time ...
with batch size 1"; issue 4):

* the model is put in eval mode and, where it supports it, fused for deployment (``fuse()``:
  Conv+BN folding, RepVGG re-parameterisation); a model without ``fuse`` is timed as is and the
  result says so;
* on a GPU the forward runs under ``torch.autocast`` in FP16 (or BF16) by default; on the CPU in
  FP32 (CPU autocast is slower than FP32 for most of these models);
* ``warmup`` untimed calls (first calls allocate memory, pick kernels, fill caches), then
  ``runs`` (at least 20) timed calls, each synchronised on CUDA; the result reports the median
  and the spread (IQR, std, min/max, p10/p90) rather than the mean alone, because shared CPUs
  have heavy-tailed timings;
* FPS = 1000 / median latency;
* device name, torch thread count and dtype are part of the result, since numbers are only
  comparable on the same device and settings.

What is timed is a callable, so that callers choose the scope: :func:`profile_model` times the
whole Detectron2 forward on one pre-loaded image (data loading excluded; the model's own
pre/post-processing, e.g. NMS and mask pasting, included), or the network alone
(``complexity_forward`` on a normalised tensor, where a model has one).
"""
from __future__ import annotations

import copy
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from torch import nn

from . import compat  # noqa: F401

__all__ = [
    "LatencyResult", "MIN_RUNS", "device_description", "prepare_for_inference",
    "measure_latency", "profile_model", "autocast_dtype",
]

MIN_RUNS = 20


@dataclass
class LatencyResult:
    """Timing statistics of one batch-1 latency measurement (milliseconds)."""

    median_ms: float
    mean_ms: float
    std_ms: float
    iqr_ms: float
    p10_ms: float
    p90_ms: float
    min_ms: float
    max_ms: float
    fps: float
    runs: int
    warmup: int
    device: str
    device_name: str
    threads: int
    dtype: str
    fused: bool
    mode: str = "model"
    batch_size: int = 1
    times_ms: List[float] = field(default_factory=list, repr=False)

    def as_dict(self, with_times: bool = False) -> Dict[str, Any]:
        d = asdict(self)
        if not with_times:
            d.pop("times_ms")
        return d

    def summary(self) -> str:
        return (
            f"{self.median_ms:.2f} ms median (IQR {self.iqr_ms:.2f}, min {self.min_ms:.2f}, max "
            f"{self.max_ms:.2f}; {self.runs} runs after {self.warmup} warm-up), {self.fps:.1f} FPS, "
            f"batch {self.batch_size}, {self.dtype}, {'fused' if self.fused else 'not fused'}, "
            f"{self.device_name}, {self.threads} threads"
        )


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def device_description(device: torch.device) -> str:
    """Human-readable device name: the GPU model, or the CPU model and logical core count."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{_cpu_name()} ({os.cpu_count()} logical cores)"


def autocast_dtype(device: torch.device, precision: str = "auto") -> Optional[torch.dtype]:
    """The autocast dtype for ``precision`` ("auto", "fp32", "fp16", "bf16") on ``device``;
    None means plain FP32. "auto" = FP16 on CUDA, FP32 on the CPU."""
    precision = precision.lower()
    if precision not in ("auto", "fp32", "fp16", "bf16"):
        raise ValueError(f"precision must be auto, fp32, fp16 or bf16, got {precision!r}")
    if precision == "fp32" or (precision == "auto" and torch.device(device).type != "cuda"):
        return None
    if precision == "bf16":
        return torch.bfloat16
    if torch.device(device).type != "cuda":
        raise ValueError("fp16 autocast is only used on a CUDA device; use fp32 or bf16 on the CPU")
    return torch.float16


def prepare_for_inference(model: nn.Module, fuse: bool = True, copy_model: bool = True) -> Tuple[nn.Module, bool]:
    """Eval mode and, where the model has ``fuse()``, the fused model. Returns (model, fused).

    ``copy_model`` fuses a deep copy so that the caller's (trainable, unfused) model is untouched.
    """
    if copy_model:
        model = copy.deepcopy(model)
    model.eval()
    fused = False
    if fuse and callable(getattr(model, "fuse", None)):
        out = model.fuse()
        model = out if isinstance(out, nn.Module) else model
        model.eval()
        fused = True
    return model, fused


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_latency(
    fn: Callable[[], Any],
    device: torch.device,
    warmup: int = 10,
    runs: int = 50,
    amp_dtype: Optional[torch.dtype] = None,
    fused: bool = False,
    mode: str = "model",
    clock: str = "wall",
) -> LatencyResult:
    """Time ``fn()`` ``runs`` times after ``warmup`` untimed calls (no grad, optional autocast).

    ``clock="wall"``: wall clock (CUDA-synchronised). ``clock="cpu"``: this thread's CPU time,
    only on the CPU with one intra-op thread (then all the work runs on this thread): on a shared
    machine it leaves out the time the process waits for a core, which wall-clock latencies
    include at random."""
    if clock not in ("wall", "cpu"):
        raise ValueError(f"clock = {clock!r}: 'wall' or 'cpu'")
    if runs < MIN_RUNS:
        raise ValueError(f"runs = {runs}: at least {MIN_RUNS} timed runs are needed for a stable median")
    if warmup < 1:
        raise ValueError(f"warmup = {warmup}: at least one warm-up call is needed")
    device = torch.device(device)
    if clock == "cpu" and (device.type != "cpu" or torch.get_num_threads() != 1):
        raise ValueError("clock = 'cpu' needs the CPU and one intra-op thread (thread CPU time is a latency "
                         "only when one thread does all the work)")
    now = time.perf_counter if clock == "wall" else time.thread_time

    def call():
        with torch.no_grad(), torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            return fn()

    for _ in range(warmup):
        call()
    _sync(device)
    times: List[float] = []
    for _ in range(runs):
        _sync(device)
        t0 = now()
        call()
        _sync(device)
        times.append(1000.0 * (now() - t0))
    q = statistics.quantiles(times, n=20, method="inclusive")  # 5 % steps
    q4 = statistics.quantiles(times, n=4, method="inclusive")
    median = statistics.median(times)
    return LatencyResult(
        median_ms=median,
        mean_ms=statistics.fmean(times),
        std_ms=statistics.stdev(times),
        iqr_ms=q4[2] - q4[0],
        p10_ms=q[1],
        p90_ms=q[17],
        min_ms=min(times),
        max_ms=max(times),
        fps=1000.0 / median if median > 0 else float("inf"),
        runs=runs,
        warmup=warmup,
        device=str(device),
        device_name=device_description(device),
        threads=torch.get_num_threads(),
        dtype=str(amp_dtype).replace("torch.", "") if amp_dtype is not None else "float32",
        fused=fused,
        mode=mode,
        times_ms=times,
    )


def _device_of(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")


def _is_deployable(model: nn.Module) -> bool:
    from .deploy import DeployableModel

    return isinstance(model, DeployableModel)


def profile_model(
    model: nn.Module,
    inputs: Dict[str, Any],
    warmup: int = 10,
    runs: int = 50,
    fuse: bool = True,
    precision: str = "auto",
    mode: str = "model",
    copy_model: bool = True,
) -> LatencyResult:
    """Batch-1 latency of a Detectron2-style model on one mapped input dict.

    ``mode="model"``: ``model([inputs])``, the whole forward incl. the model's post-processing.
    ``mode="network"``: the network alone (backbone, neck and head): for a model with the deploy
    interface (``medseg_core.deploy``) its ``DeployNetwork`` on the contract's padded batch;
    otherwise ``model.complexity_forward(x)`` on the normalised, zero-padded image batch.
    """
    if "image" not in inputs:
        raise ValueError("profile_model: inputs must be one mapped dataset dict with an 'image' tensor")
    model, fused = prepare_for_inference(model, fuse=fuse, copy_model=copy_model)
    device = _device_of(model)
    amp = autocast_dtype(device, precision)
    if mode == "model":
        batch = [dict(inputs, image=inputs["image"].to(device))]

        def fn():
            return model(batch)
    elif mode == "network" and _is_deployable(model):
        # the deploy interface: the contract's padding, normalisation + deploy_forward (what is exported)
        from .deploy import DeployNetwork

        net = DeployNetwork(model).eval()
        x = model.deploy_contract().pad_batch([inputs["image"]]).to(device)

        def fn():
            return net(x)
    elif mode == "network" and callable(getattr(model, "network_example", None)):
        # a model whose network runs on pieces of the input (e.g. sliding-window 3D) says which piece
        x = model.network_example(inputs["image"].to(device))

        def fn():
            return model.complexity_forward(x)
    elif mode == "network":
        if not callable(getattr(model, "complexity_forward", None)):
            raise ValueError(f"{type(model).__name__} has no complexity_forward(): use mode='model'")
        image = inputs["image"].to(device).float()
        mean = getattr(model, "pixel_mean", None)
        std = getattr(model, "pixel_std", None)
        if mean is not None and std is not None:
            image = (image - mean) / std
        # pad to the model's size divisibility, as its own preprocessing would
        div = int(getattr(model, "size_divisibility", 0) or getattr(getattr(model, "backbone", None), "size_divisibility", 0) or 0)
        h, w = image.shape[-2:]
        if div > 1:
            ph, pw = (-h) % div, (-w) % div
            image = torch.nn.functional.pad(image, (0, pw, 0, ph))
        x = image.unsqueeze(0)

        def fn():
            return model.complexity_forward(x)
    else:
        raise ValueError(f"mode must be 'model' or 'network', got {mode!r}")
    return measure_latency(fn, device, warmup=warmup, runs=runs, amp_dtype=amp, fused=fused, mode=mode)

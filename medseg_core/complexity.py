"""Parameter and FLOP counting in the conventions the papers use.

Three conventions (``MODEL.FLOPS_CONVENTION``):

* ``"thop"`` — operation counts of the legacy ``thop`` package (0.1.x, 2022), which Ultralytics
  8.2.x used for its "GFLOPs" and which LGMSNet reports as MACs. It works with forward hooks on
  modules whose **exact type** has a rule (a module with a rule is not descended into; a module
  without one only counts through its children), so functional calls (``F.interpolate``,
  ``torch.matmul``, ``x.mean()``) and unlisted types (GroupNorm, SiLU, GELU, Sigmoid) count 0.
  Rules (per call of the module): Conv/ConvTranspose = numel(output) * C_in/groups * prod(kernel),
  bias not counted — for a transposed conv this runs over the *output* grid (4x the true cost
  at k = s = 2); BatchNorm/LayerNorm/InstanceNorm = 2 * numel(input), x2 with affine;
  Linear = in_features * numel(output); AvgPool = numel(output); AdaptiveAvgPool =
  (prod(in/out spatial) + 1) * numel(output); Softmax = rows * (3n - 1); Upsample = numel(output)
  x {nearest 1, linear 5, bilinear 11, bicubic 259, trilinear 31}; PReLU (eval) = numel;
  ReLU/ReLU6/LeakyReLU/MaxPool/Dropout/ZeroPad/PixelShuffle = 0. Detectron2's ``Conv2d``
  wrapper and ``FrozenBatchNorm2d`` are added (thop would have skipped these subclasses).
* ``"thop2x"`` — 2 x the thop count, Ultralytics' "GFLOPs" (= 2 x MACs): the convention of the
  YOLOv8-seg / LMSF-A papers (docs/lmsfa.md, "Counts").
* ``"fvcore"`` — fvcore's ``FlopCountAnalysis`` (one per multiply-accumulate, transposed conv over
  the input grid, matmuls counted), Detectron2's own counter.

Counting runs on the network only, not on pre/post-processing: a meta-architecture that defines
``complexity_forward(images: Tensor)`` is counted through it; otherwise the whole model runs on
``[{"image": tensor}]`` in eval mode (Detectron2's own models; their FLOPs then depend on the
number of detections). Other projects may add rules with :func:`register_thop_rule`.

Some modules have exact inference-only fast paths (e.g. LMSF-A's SSFF mixes each scale at its
own resolution); the conventions describe the architecture as published, so counting runs
inside :func:`reference_paths` (model), which sets each such module's own switch
``use_reference_path`` (:func:`set_reference_paths`) and restores it afterwards.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import math
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from . import compat  # noqa: F401  (before any detectron2 import)

__all__ = [
    "CONVENTIONS", "THOP_LEGACY_RULES", "register_thop_rule", "count_parameters", "thop_legacy_ops",
    "fvcore_flops", "module_complexity", "model_complexity", "build_complexity_model",
    "REFERENCE_PATH_ATTR", "set_reference_paths", "reference_paths",
]

logger = logging.getLogger(__name__)

CONVENTIONS = ("thop2x", "thop", "fvcore")

# Per-module switch of exact inference-only fast paths: a module that has one declares the class
# attribute ``use_reference_path = False`` and takes its reference path while it is True (like
# ``fuse()``, a property of the model tree, never of the process).
REFERENCE_PATH_ATTR = "use_reference_path"


def set_reference_paths(model: nn.Module, enabled: bool = True) -> int:
    """Switch every fast-path module of ``model`` to its reference path (``enabled``) or back to its
    fast path; returns how many modules have the switch."""
    mods = [m for m in model.modules() if hasattr(m, REFERENCE_PATH_ATTR)]
    for m in mods:
        setattr(m, REFERENCE_PATH_ATTR, bool(enabled))
    return len(mods)


@contextlib.contextmanager
def reference_paths(model: nn.Module):
    """Reference paths on every fast-path module of ``model`` inside the block, each module's own
    previous setting restored afterwards (counting runs here: counts describe the published
    architecture)."""
    saved = [(m, getattr(m, REFERENCE_PATH_ATTR)) for m in model.modules() if hasattr(m, REFERENCE_PATH_ATTR)]
    for m, _ in saved:
        setattr(m, REFERENCE_PATH_ATTR, True)
    try:
        yield
    finally:
        for m, v in saved:
            setattr(m, REFERENCE_PATH_ATTR, v)


RuleFn = Callable[[nn.Module, Tuple[Any, ...], Any], float]


# --------------------------------------------------------------------------------------------
# legacy-thop rules
# --------------------------------------------------------------------------------------------
def _zero(m: nn.Module, x: Tuple[Any, ...], y: Any) -> float:
    return 0.0


def _conv(m: nn.Module, x: Tuple[Any, ...], y: Tensor) -> float:
    # thop 0.1.x: output numel * (input channels / groups) * kernel volume, no bias, for both
    # regular and transposed convs (so the latter is counted over the output grid).
    return float(y.numel() * (x[0].shape[1] // m.groups) * math.prod(m.weight.shape[2:]))


def _norm(m: nn.Module, x: Tuple[Any, ...], y: Tensor) -> float:
    flops = 2 * x[0].numel()
    if getattr(m, "affine", False) or getattr(m, "elementwise_affine", False):
        flops *= 2
    return float(flops)


def _linear(m: nn.Module, x: Tuple[Any, ...], y: Tensor) -> float:
    return float(m.in_features * y.numel())


def _avgpool(m: nn.Module, x: Tuple[Any, ...], y: Tensor) -> float:
    return float(y.numel())


def _adaptive_avgpool(m: nn.Module, x: Tuple[Any, ...], y: Tensor) -> float:
    kernel = math.prod(i / o for i, o in zip(x[0].shape[2:], y.shape[2:]))
    return float(int((kernel + 1) * y.numel()))


def _softmax(m: nn.Module, x: Tuple[Any, ...], y: Tensor) -> float:
    n = x[0].shape[m.dim]
    return float((x[0].numel() // n) * (3 * n - 1))


_UPSAMPLE_OPS = {"nearest": 1, "linear": 5, "bilinear": 11, "bicubic": 224 + 35, "trilinear": 13 * 2 + 5}


def _upsample(m: nn.Module, x: Tuple[Any, ...], y: Tensor) -> float:
    # legacy thop: 'trilinear' is missing from its accepted modes and counts 0
    if m.mode not in ("nearest", "linear", "bilinear", "bicubic"):
        return 0.0
    return float(int(y.numel() * _UPSAMPLE_OPS[m.mode]))


def _prelu(m: nn.Module, x: Tuple[Any, ...], y: Tensor) -> float:
    return 0.0 if m.training else float(x[0].numel())


THOP_LEGACY_RULES: Dict[type, RuleFn] = {
    nn.ZeroPad2d: _zero,
    nn.Conv1d: _conv, nn.Conv2d: _conv, nn.Conv3d: _conv,
    nn.ConvTranspose1d: _conv, nn.ConvTranspose2d: _conv, nn.ConvTranspose3d: _conv,
    nn.BatchNorm1d: _norm, nn.BatchNorm2d: _norm, nn.BatchNorm3d: _norm, nn.SyncBatchNorm: _norm,
    nn.LayerNorm: _norm, nn.InstanceNorm1d: _norm, nn.InstanceNorm2d: _norm, nn.InstanceNorm3d: _norm,
    nn.PReLU: _prelu, nn.Softmax: _softmax,
    nn.ReLU: _zero, nn.ReLU6: _zero, nn.LeakyReLU: _zero,
    nn.MaxPool1d: _zero, nn.MaxPool2d: _zero, nn.MaxPool3d: _zero,
    nn.AdaptiveMaxPool1d: _zero, nn.AdaptiveMaxPool2d: _zero, nn.AdaptiveMaxPool3d: _zero,
    nn.AvgPool1d: _avgpool, nn.AvgPool2d: _avgpool, nn.AvgPool3d: _avgpool,
    nn.AdaptiveAvgPool1d: _adaptive_avgpool, nn.AdaptiveAvgPool2d: _adaptive_avgpool,
    nn.AdaptiveAvgPool3d: _adaptive_avgpool,
    nn.Linear: _linear, nn.Dropout: _zero,
    nn.Upsample: _upsample, nn.UpsamplingBilinear2d: _upsample, nn.UpsamplingNearest2d: _upsample,
    nn.PixelShuffle: _zero,
}
# containers are never counted themselves (legacy thop descends into them)
_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


def _register_detectron2_rules() -> None:
    """Detectron2's ``Conv2d`` wrapper (a subclass, so legacy thop would skip it) counts as a conv
    plus its optional norm child; ``FrozenBatchNorm2d`` counts as an affine BatchNorm."""
    from detectron2.layers import Conv2d as D2Conv2d
    from detectron2.layers import FrozenBatchNorm2d

    def d2_conv(m: nn.Module, x: Tuple[Any, ...], y: Tensor) -> float:
        ops = _conv(m, x, y)
        norm = getattr(m, "norm", None)
        if norm is not None and type(norm) in THOP_LEGACY_RULES:
            ops += THOP_LEGACY_RULES[type(norm)](norm, (y,), y)
        return ops

    THOP_LEGACY_RULES[D2Conv2d] = d2_conv
    THOP_LEGACY_RULES[FrozenBatchNorm2d] = lambda m, x, y: float(4 * x[0].numel())


_register_detectron2_rules()


def register_thop_rule(*module_types: type) -> Callable[[RuleFn], RuleFn]:
    """Decorator adding a legacy-thop counting rule ``fn(module, inputs, output) -> ops``.

    Matching is by exact type, as in thop; register subclasses explicitly.
    """

    def deco(fn: RuleFn) -> RuleFn:
        for t in module_types:
            THOP_LEGACY_RULES[t] = fn
        return fn

    return deco


# --------------------------------------------------------------------------------------------
# counters
# --------------------------------------------------------------------------------------------
def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter elements (shared parameters once). Frozen ones count unless asked."""
    seen = {}
    for p in model.parameters():
        if trainable_only and not p.requires_grad:
            continue
        seen[id(p)] = p.numel()
    return int(sum(seen.values()))


def _counted_modules(model: nn.Module) -> List[nn.Module]:
    """Modules with a rule, not inside another module with a rule (legacy thop's dfs_count)."""
    out: List[nn.Module] = []

    def visit(m: nn.Module) -> None:
        if type(m) in THOP_LEGACY_RULES and not isinstance(m, _CONTAINERS):
            out.append(m)
            return
        for c in m.children():
            visit(c)

    visit(model)
    return out


@torch.no_grad()
def thop_legacy_ops(model: nn.Module, run: Callable[[], Any]) -> Tuple[float, Dict[str, float]]:
    """Legacy-thop operation count of one call of ``run()`` (which must run ``model``).

    Returns (total ops, ops per module type name). Each module call adds its ops (a shared
    module called for three pyramid levels counts three times).
    """
    per_type: Dict[str, float] = {}
    total = [0.0]
    handles = []

    def hook(m: nn.Module, x: Tuple[Any, ...], y: Any) -> None:
        ops = THOP_LEGACY_RULES[type(m)](m, x, y)
        total[0] += ops
        per_type[type(m).__name__] = per_type.get(type(m).__name__, 0.0) + ops

    for m in _counted_modules(model):
        handles.append(m.register_forward_hook(hook))
    try:
        with reference_paths(model):
            run()
    finally:
        for h in handles:
            h.remove()
    return total[0], per_type


def _flatten_tensors(obj: Any) -> List[Tensor]:
    if isinstance(obj, Tensor):
        return [obj]
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return [t for f in dataclasses.fields(obj) for t in _flatten_tensors(getattr(obj, f.name))]
    if isinstance(obj, dict):
        return [t for v in obj.values() for t in _flatten_tensors(v)]
    if isinstance(obj, (list, tuple)):
        return [t for v in obj for t in _flatten_tensors(v)]
    return []


class _TensorForward(nn.Module):
    """Traceable view of ``fn(x)``: returns every output tensor as a flat tuple."""

    def __init__(self, model: nn.Module, fn: Callable[[Tensor], Any]) -> None:
        super().__init__()
        self.model = model
        self._fn = fn

    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        return tuple(_flatten_tensors(self._fn(x)))


@torch.no_grad()
def fvcore_flops(model: nn.Module, images: Tensor, fn: Optional[Callable[[Tensor], Any]] = None) -> float:
    """fvcore FLOPs (multiply-accumulates) of ``fn(images)`` (default ``model(images)``)."""
    from fvcore.nn import FlopCountAnalysis

    wrapper = _TensorForward(model, fn or model)
    analysis = FlopCountAnalysis(wrapper, (images,))
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
    with reference_paths(model):
        return float(analysis.total())


def _thop_on_meta(model: nn.Module, images: Tensor, fn: Callable[[Tensor], Any]):
    """Legacy-thop count on a meta-device copy (shapes only: fast); (None, None) if it cannot run.

    ``fn`` must be ``model`` itself or a bound method of it, so that it can be re-bound to the copy.
    """
    if fn is model:
        def rebind(m):
            return m
    elif getattr(fn, "__self__", None) is model:
        name = fn.__name__

        def rebind(m):
            return getattr(m, name)
    else:
        return None, None
    try:
        meta = copy.deepcopy(model).to("meta")
        x = images.to("meta")
        return thop_legacy_ops(meta, lambda: rebind(meta)(x))
    except Exception as e:  # noqa: BLE001 - any op without a meta kernel: fall back to real tensors
        logger.debug("meta-device counting failed (%s); counting on real tensors", e)
        return None, None


@torch.no_grad()
def module_complexity(model: nn.Module, images: Tensor,
                      fn: Optional[Callable[[Tensor], Any]] = None, with_fvcore: bool = True) -> Dict[str, Any]:
    """Params and FLOPs (all conventions) of ``fn(images)`` (default ``model(images)``) in eval mode."""
    fn = fn or model
    was_training = model.training
    model.eval()
    try:
        ops, per_type = _thop_on_meta(model, images, fn)
        if ops is None:  # data-dependent ops (e.g. NMS inside the model): count on real tensors
            ops, per_type = thop_legacy_ops(model, lambda: fn(images))
        out: Dict[str, Any] = {
            "params": count_parameters(model),
            "gmacs_thop": ops / 1e9,
            "gflops_thop2x": 2 * ops / 1e9,
            "thop_ops_by_type": {k: v / 1e9 for k, v in sorted(per_type.items(), key=lambda kv: -kv[1])},
        }
        if with_fvcore:
            out["gflops_fvcore"] = fvcore_flops(model, images, fn) / 1e9
    finally:
        model.train(was_training)
    return out


# --------------------------------------------------------------------------------------------
# config level
# --------------------------------------------------------------------------------------------
def build_complexity_model(cfg) -> nn.Module:
    """The model of ``cfg`` on the CPU in eval mode (weights as initialised; counts do not depend on them)."""
    from detectron2.modeling import build_model

    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.DEVICE = "cpu"
    model = build_model(cfg)
    model.eval()
    return model


def _forward_fn(model: nn.Module) -> Callable[[Tensor], Any]:
    if hasattr(model, "complexity_forward"):
        return model.complexity_forward

    def run_detectron2(images: Tensor) -> Any:
        # Detectron2 models take a list of dicts with a CHW image in 0-255.
        h, w = images.shape[-2:]
        return model([{"image": img, "height": h, "width": w} for img in images])

    return run_detectron2


def _example_images(shape: Sequence[int], has_network_forward: bool) -> Tensor:
    g = torch.Generator().manual_seed(0)
    images = torch.rand((1, *shape), generator=g)
    # full-model fallback goes through the model's own normalisation, which expects 0-255 pixels
    return images if has_network_forward else images * 255.0


def model_complexity(cfg, fused: bool = False, model: Optional[nn.Module] = None,
                     with_fvcore: bool = True) -> Dict[str, Any]:
    """Params (unfused and fused) and GFLOPs of the model of ``cfg`` at TEST.COMPLEXITY_INPUT_SHAPE.

    Keys: params, params_fused, gflops_paper (in MODEL.FLOPS_CONVENTION), gflops_thop2x,
    gmacs_thop, gflops_fvcore, convention, input_shape, fused (which model the FLOPs are of),
    has_fuse, thop_ops_by_type.
    """
    convention = str(cfg.MODEL.FLOPS_CONVENTION)
    if convention not in CONVENTIONS:
        raise ValueError(f"MODEL.FLOPS_CONVENTION = '{convention}': choose one of {list(CONVENTIONS)}")
    shape = tuple(int(s) for s in cfg.TEST.COMPLEXITY_INPUT_SHAPE)
    if len(shape) not in (3, 4) or min(shape) < 1:
        raise ValueError(
            f"TEST.COMPLEXITY_INPUT_SHAPE = {shape}: expected (C, H, W) or (C, D, H, W) with positive sizes"
        )
    model = model if model is not None else build_complexity_model(cfg)
    model.eval()
    params = count_parameters(model)
    has_fuse = callable(getattr(model, "fuse", None))
    fused_model = None
    if has_fuse:
        fused_model = copy.deepcopy(model)
        fused_model = fused_model.fuse() or fused_model
    params_fused = count_parameters(fused_model) if fused_model is not None else params
    target = fused_model if (fused and fused_model is not None) else model
    fn = _forward_fn(target)
    images = _example_images(shape, hasattr(target, "complexity_forward"))
    c = module_complexity(target, images, fn, with_fvcore=with_fvcore or convention == "fvcore")
    paper = {"thop2x": c["gflops_thop2x"], "thop": c["gmacs_thop"], "fvcore": c.get("gflops_fvcore")}[convention]
    return {
        "params": params,
        "params_fused": params_fused,
        "gflops_paper": paper,
        "gflops_thop2x": c["gflops_thop2x"],
        "gmacs_thop": c["gmacs_thop"],
        "gflops_fvcore": c.get("gflops_fvcore"),
        "convention": convention,
        "input_shape": list(shape),
        "fused": bool(fused and fused_model is not None),
        "has_fuse": has_fuse,
        "thop_ops_by_type": c["thop_ops_by_type"],
    }

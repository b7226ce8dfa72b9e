"""Export a deployable network (TorchScript, ONNX, OpenVINO IR) and check any runtime against PyTorch.

What is exported is :class:`~medseg_core.deploy.interface.DeployNetwork`: the contract's
normalisation followed by the model's ``deploy_forward``; its input ``images`` is a float32
(B, C, H, W) batch of raw pixel values in the contract's channel order, resized and padded as
the contract says, its outputs are ``deploy_output_names()``. Post-processing (NMS, masks at
the original size) stays in PyTorch (``deploy_postprocess``) for every runtime, so that an
exported model gives the detections of the evaluated one; its cost is measured separately.

* TorchScript: ``torch.jit.trace`` + ``torch.jit.save`` (no pickled Python objects).
* ONNX: ``torch.onnx.export(dynamo=True)``, opset 18, weights inside the file; ``dynamic`` makes
  batch, height and width free (height and width multiples of the size divisibility).
* OpenVINO: that ONNX file read by OpenVINO's ONNX front end, saved as IR (``.xml`` + ``.bin``) with
  FP32 weights (``compress_to_fp16=False``).

Export-friendly substitution (:func:`make_export_friendly`): ``nn.AdaptiveAvgPool2d`` pooling
whole axes to 1 becomes the equal axis mean; the ONNX exporter otherwise bakes the example's
pooling window into the graph, which is wrong at any other input size.

Check (:func:`check_runtime`): on real images, per runtime, (1) the max absolute difference of
every raw output against the PyTorch network and (2) the post-processed results compared:
instances matched one-to-one (same class, box IoU >= 0.5, by score) -> matched fraction, max
score / box difference and the mask IoU of every matched pair; semantic maps -> the fraction of
pixels with the same arg-max class. A runtime passes only when all of these are within
tolerance (:class:`Tolerances`): a graph whose masks disagree fails even when its raw
differences were allowed.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor, nn

from ..extras import require_extra

__all__ = [
    "ONNX_OPSET", "make_export_friendly", "export_torchscript", "export_onnx", "export_openvino",
    "Tolerances", "raw_differences", "compare_results", "check_runtime",
]

ONNX_OPSET = 18


class _AxisMean(nn.Module):
    """Mean over ``dims`` keeping them: an adaptive average pool to size 1 along those axes."""

    def __init__(self, dims: Tuple[int, ...]) -> None:
        super().__init__()
        self.dims = dims

    def forward(self, x: Tensor) -> Tensor:
        return x.mean(self.dims, keepdim=True)


def make_export_friendly(module: nn.Module) -> int:
    """Replace every ``nn.AdaptiveAvgPool2d`` that pools whole axes to 1 by an axis mean (same
    values); returns how many were replaced. Other adaptive pools are left as they are."""
    replaced = 0
    for name, child in list(module.named_children()):
        if isinstance(child, nn.AdaptiveAvgPool2d):
            size = child.output_size if isinstance(child.output_size, (tuple, list)) else (child.output_size,) * 2
            if all(s in (None, 1) for s in size) and any(s == 1 for s in size):
                setattr(module, name, _AxisMean(tuple(d for d, s in zip((-2, -1), size) if s == 1)))
                replaced += 1
        else:
            replaced += make_export_friendly(child)
    return replaced


def export_torchscript(net: nn.Module, example: Tensor, path: str) -> str:
    with torch.no_grad():
        traced = torch.jit.trace(net, (example,), check_trace=False, strict=False)
    torch.jit.save(traced, path)
    return path


def export_onnx(net: nn.Module, example: Tensor, path: str, names: Sequence[str], dynamic: bool,
                opset: int = ONNX_OPSET, divisibility: int = 32) -> str:
    """ONNX through ``torch.export`` (dynamo exporter); dynamic H/W are multiples of ``divisibility``."""
    require_extra("deploy", "ONNX export")
    kwargs = {}
    if dynamic:
        d = torch.export.Dim
        hmax = max(2, 4096 // divisibility)
        kwargs["dynamic_shapes"] = ({
            0: d("batch", min=1, max=256),
            2: divisibility * d("h_blocks", min=1, max=hmax),
            3: divisibility * d("w_blocks", min=1, max=hmax),
        },)
    with torch.no_grad():
        torch.onnx.export(
            net, (example,), path, dynamo=True, opset_version=opset, input_names=["images"],
            output_names=list(names), external_data=False, verbose=False, **kwargs,
        )
    return path


def export_openvino(onnx_path: str, xml_path: str) -> str:
    """OpenVINO IR of an exported ONNX file, FP32 weights (``.xml`` + ``.bin`` next to it)."""
    require_extra("deploy", "OpenVINO export")
    import openvino as ov

    # read_model, not convert_model: the latter splits a path containing commas into several models
    model = ov.Core().read_model(onnx_path)
    ov.save_model(model, xml_path, compress_to_fp16=False)
    return xml_path


# ---------------------------------------------------------------------------------- check
@dataclass
class Tolerances:
    """When a runtime agrees with PyTorch (all must hold)."""

    atol: float = 1e-3  # max |raw output difference|
    min_matched: float = 0.95  # matched detections / max(detections of either side)
    score_atol: float = 1e-3  # max score difference of matched detections
    min_mask_iou: float = 0.9  # smallest mask IoU of a matched pair
    min_pixel_agreement: float = 0.99  # semantic: pixels with the same arg-max class


def raw_differences(ref: Sequence[Tensor], got: Sequence[Tensor]) -> List[float]:
    if len(ref) != len(got):
        raise ValueError(f"the runtime returned {len(got)} outputs, PyTorch {len(ref)}")
    out = []
    for a, b in zip(ref, got):
        if tuple(a.shape) != tuple(b.shape):
            raise ValueError(f"output shapes differ: PyTorch {tuple(a.shape)}, runtime {tuple(b.shape)}")
        out.append(float((a.float() - b.float()).abs().max()) if a.numel() else 0.0)
    return out


def _match(r, g, min_iou: float = 0.5) -> List[Tuple[int, int]]:
    """Greedy one-to-one matching of two Instances: by descending reference score, each takes the
    unmatched same-class detection of highest box IoU (>= ``min_iou``); among near-equal IoUs
    (within 1e-3: e.g. identical boxes of different queries) the one of closest score."""
    from torchvision.ops import box_iou

    if not len(r) or not len(g):
        return []
    rb, gb = r.pred_boxes.tensor.float(), g.pred_boxes.tensor.float()
    iou = box_iou(rb, gb)
    # zero-area boxes (an untrained or INT8 model clips some to a line) have IoU 0 / 0 = NaN: the
    # same box (within 0.01 px) is the same detection, any other matches nothing
    same = (rb[:, None, :] - gb[None, :, :]).abs().amax(-1) <= 0.01
    iou = torch.where(torch.isnan(iou), same.float(), iou)  # no NaN left: it would poison row.max()
    iou[r.pred_classes[:, None] != g.pred_classes[None, :]] = -1
    pairs, used = [], torch.zeros(len(g), dtype=torch.bool)
    for i in torch.argsort(r.scores, descending=True).tolist():
        row = iou[i].clone()
        row[used] = -1
        best = float(row.max())
        if best < min_iou:
            continue
        near = (row >= best - 1e-3).nonzero()[:, 0]
        j = int(near[(g.scores[near] - r.scores[i]).abs().argmin()])
        used[j] = True
        pairs.append((i, j))
    return pairs


def _mask_iou(a: Tensor, b: Tensor) -> float:
    inter = (a & b).sum().item()
    union = (a | b).sum().item()
    return 1.0 if union == 0 else inter / union


def compare_results(ref: Sequence[Dict], got: Sequence[Dict]) -> Dict[str, float]:
    """Post-processed agreement of two result lists (one dict per image; see the module docstring)."""
    out: Dict[str, float] = {}
    if ref and "instances" in ref[0]:
        n_ref = n_got = matched = 0
        score_d, box_d, ious = [0.0], [0.0], []
        for r, g in zip(ref, got):
            r, g = r["instances"].to("cpu"), g["instances"].to("cpu")
            n_ref, n_got = n_ref + len(r), n_got + len(g)
            pairs = _match(r, g)
            matched += len(pairs)
            for i, j in pairs:
                score_d.append(float((r.scores[i] - g.scores[j]).abs()))
                box_d.append(float((r.pred_boxes.tensor[i] - g.pred_boxes.tensor[j]).abs().max()))
                if r.has("pred_masks"):
                    ious.append(_mask_iou(r.pred_masks[i].bool(), g.pred_masks[j].bool()))
        out.update(
            detections_pytorch=n_ref, detections_runtime=n_got,
            matched_fraction=matched / max(n_ref, n_got) if max(n_ref, n_got) else 1.0,
            max_score_abs_diff=max(score_d), max_box_abs_diff=max(box_d),
            min_mask_iou=min(ious) if ious else 1.0, mean_mask_iou=float(np.mean(ious)) if ious else 1.0,
        )
    if ref and "sem_seg" in ref[0]:
        same = total = 0
        for r, g in zip(ref, got):
            a, b = r["sem_seg"].argmax(0), g["sem_seg"].argmax(0)
            same += int((a == b).sum())
            total += a.numel()
        out["pixel_agreement"] = same / max(total, 1)
    return out


def verdict(raw_max: float, agreement: Dict[str, float], tol: Tolerances) -> List[str]:
    """The failed criteria (empty: the runtime agrees with PyTorch)."""
    failed = []
    if not raw_max <= tol.atol:
        failed.append(f"raw outputs differ by {raw_max:.3g} > atol {tol.atol:g}")
    if "matched_fraction" in agreement:
        if agreement["matched_fraction"] < tol.min_matched:
            failed.append(f"only {agreement['matched_fraction']:.3f} of the detections match (< {tol.min_matched:g})")
        if agreement["max_score_abs_diff"] > tol.score_atol:
            failed.append(f"scores differ by {agreement['max_score_abs_diff']:.3g} > {tol.score_atol:g}")
        if agreement["min_mask_iou"] < tol.min_mask_iou:
            failed.append(f"a matched mask has IoU {agreement['min_mask_iou']:.3f} < {tol.min_mask_iou:g}")
    if "pixel_agreement" in agreement and agreement["pixel_agreement"] < tol.min_pixel_agreement:
        failed.append(f"semantic labels agree on {agreement['pixel_agreement']:.4f} of the pixels "
                      f"(< {tol.min_pixel_agreement:g})")
    return failed


@torch.no_grad()
def check_runtime(model, reference, runtime, images: Sequence[np.ndarray], image_format: str = "BGR",
                  tol: Optional[Tolerances] = None, names: Optional[Sequence[str]] = None) -> Dict:
    """Compare ``runtime`` with the PyTorch ``reference`` runtime on real frames (arrays in
    ``image_format``), through the same contract and post-processing of ``model`` (deployable).

    Returns ``{"runtime", "max_abs_diff", "max_abs_diff_per_output", "agreement", "failed", "ok",
    "images"}``; ``ok`` is False whenever any criterion of ``tol`` fails."""
    from .predictor import Predictor

    tol = tol or Tolerances()
    names = list(names or model.deploy_output_names())
    p_got = Predictor(model, runtime)
    per_output = dict.fromkeys(names, 0.0)
    ref_res, got_res = [], []
    for img in images:
        batch, sizes, originals = p_got.prepare([img], image_format)
        raw_ref, raw_got = reference(batch), runtime(batch)
        for n, d in zip(names, raw_differences(raw_ref, raw_got)):
            per_output[n] = max(per_output[n], d)
        ref_res += model.deploy_postprocess(raw_ref, sizes, originals)
        got_res += model.deploy_postprocess(raw_got, sizes, originals)
    raw_max = max(per_output.values()) if per_output else 0.0
    agreement = compare_results(ref_res, got_res)
    failed = verdict(raw_max, agreement, tol)
    return {
        "runtime": runtime.name, "images": len(images), "max_abs_diff": raw_max,
        "max_abs_diff_per_output": per_output, "agreement": agreement, "failed": failed, "ok": not failed,
        "tolerances": dataclasses.asdict(tol),
    }

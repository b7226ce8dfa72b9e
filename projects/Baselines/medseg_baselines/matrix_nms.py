"""Matrix NMS (SOLOv2, Wang et al. 2020, Sec. 3.3.2, Eq. 4): parallel soft-NMS on masks.

With masks sorted by score (descending), the decay factor of mask j is

    decay_j = min_{i : s_i > s_j} f(iou_ij) / f(iou_{., i}),     iou_{., i} = max_{k : s_k > s_i} iou_ki

i.e. each higher-scoring mask i penalises j by f(iou_ij), compensated by how much i itself is
likely to be suppressed (its own largest IoU with a better mask). Decay functions:
linear f(iou) = 1 - iou, Gaussian f(iou) = exp(-iou^2 / sigma) (the paper's listing: sigma
0.5; the reference code's ``sigma=2`` multiplies instead of dividing, the same decay). Scores
become s_j * decay_j; nothing is removed here (a score threshold follows).

As in the reference implementation, only masks of the same class decay each other (the
paper's listing omits the label test; the decay is applied within a class there too).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

__all__ = ["mask_iou_matrix", "matrix_nms"]


def mask_iou_matrix(masks: Tensor, areas: Optional[Tensor] = None) -> Tensor:
    """(N, ...) binary masks -> (N, N) IoU."""
    flat = masks.reshape(masks.shape[0], -1).float()
    inter = flat @ flat.t()
    areas = flat.sum(1) if areas is None else areas.float()
    union = areas[:, None] + areas[None, :] - inter
    return inter / union.clamp(min=1e-6)


def matrix_nms(
    masks: Tensor,
    labels: Tensor,
    scores: Tensor,
    kernel: str = "gaussian",
    sigma: float = 0.5,
    areas: Optional[Tensor] = None,
    class_aware: bool = True,
) -> Tensor:
    """Decayed scores (N,) of score-sorted (descending) binary masks (N, H, W); see module doc."""
    n = scores.shape[0]
    if n == 0:
        return scores
    iou = mask_iou_matrix(masks, areas).triu(diagonal=1)  # iou_ij for i ranked before j
    if class_aware:
        iou = iou * (labels[:, None] == labels[None, :]).triu(diagonal=1).to(iou.dtype)
    # compensation: the largest IoU of mask i with any better mask, broadcast along row i
    comp = iou.max(dim=0).values[:, None].expand(n, n)
    if kernel == "gaussian":
        decay = torch.exp(-(iou.pow(2) - comp.pow(2)) / float(sigma))
    elif kernel == "linear":
        decay = (1.0 - iou) / (1.0 - comp).clamp(min=1e-6)
    else:
        raise ValueError(f"Matrix NMS kernel must be 'gaussian' or 'linear', got {kernel!r}")
    return scores * decay.min(dim=0).values

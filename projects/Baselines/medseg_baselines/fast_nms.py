"""Fast NMS (YOLACT, Bolya et al. 2019, Sec. 3.4): NMS as one matrix operation per class.

For each class the top n detections (by score, descending) give an n x n IoU matrix X. Its upper
triangle (X_ij for i < j: detection i scores higher than j) is kept, the rest zeroed, and the
column-wise maximum K_j = max_i X_ij is the largest IoU of detection j with any higher-scoring
detection. Detections with K_j < t are kept. Unlike greedy NMS, an already-suppressed detection
can still suppress others: this is what makes it a single matrix operation (the paper reports
a small mAP cost for a large speed-up).
"""
from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor

__all__ = ["batched_box_iou", "fast_nms_keep", "fast_nms"]


def batched_box_iou(boxes: Tensor) -> Tensor:
    """(C, n, 4) XYXY boxes -> (C, n, n) pairwise IoU within each class."""
    area = (boxes[..., 2] - boxes[..., 0]).clamp(min=0) * (boxes[..., 3] - boxes[..., 1]).clamp(min=0)
    lt = torch.maximum(boxes[..., :, None, :2], boxes[..., None, :, :2])
    rb = torch.minimum(boxes[..., :, None, 2:], boxes[..., None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    union = area[..., :, None] + area[..., None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(inter))


def fast_nms_keep(iou: Tensor, iou_threshold: float) -> Tensor:
    """Keep mask (C, n) from (C, n, n) IoU matrices of score-sorted (descending) detections."""
    upper = torch.triu(iou, diagonal=1)  # X_ij, i < j only
    column_max = upper.max(dim=-2).values if upper.shape[-1] else upper.sum(-2)
    return column_max < iou_threshold


def fast_nms(
    boxes: Tensor,
    scores: Tensor,
    score_threshold: float,
    iou_threshold: float,
    top_k: int,
    max_detections: int,
) -> Tuple[Tensor, Tensor, Tensor]:
    """Multi-class Fast NMS over candidate boxes shared by all classes.

    Args:
        boxes: (A, 4) XYXY candidate boxes (one per anchor, class-agnostic as in YOLACT).
        scores: (A, C) class scores (no background column).
        score_threshold: scores at or below this are discarded.
        iou_threshold: t; a detection survives when its largest IoU with a higher-scoring
            detection of its class is < t.
        top_k: n, candidates per class entering the IoU matrix.
        max_detections: detections kept over all classes, best first.

    Returns:
        (candidate index (K,), class (K,), score (K,)), sorted by score, K <= max_detections.
    """
    num_classes = scores.shape[1]
    k = min(int(top_k), scores.shape[0])
    if k == 0 or num_classes == 0:
        empty = torch.zeros((0,), dtype=torch.long, device=scores.device)
        return empty, empty.clone(), scores.new_zeros((0,))
    top_scores, top_idx = scores.t().topk(k, dim=1)  # (C, k) sorted descending per class
    iou = batched_box_iou(boxes[top_idx])  # (C, k, k)
    keep = fast_nms_keep(iou, iou_threshold) & (top_scores > score_threshold)
    classes = torch.arange(num_classes, device=scores.device)[:, None].expand_as(top_idx)
    kept_scores = top_scores[keep]
    order = kept_scores.argsort(descending=True)[: int(max_detections)]
    return top_idx[keep][order], classes[keep][order], kept_scores[order]

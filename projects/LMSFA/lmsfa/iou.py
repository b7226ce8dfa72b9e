"""Box IoU and Complete-IoU (CIoU) between broadcastable xyxy box tensors.

LMSF-A trains with the YOLOv8-seg loss (paper §III-E; docs/lmsfa.md): the task-aligned
assigner scores anchors by CIoU and the box loss is ``1 - CIoU``. CIoU (Zheng et al., AAAI 2020)
= IoU - rho^2 / c^2 - alpha * v, with rho the centre distance, c the diagonal of the smallest
enclosing box, ``v = 4/pi^2 (atan(w_gt/h_gt) - atan(w/h))^2`` and ``alpha = v / (1 - IoU + v)``
treated as a constant (no gradient), as in the YOLOv8 implementation the paper builds on.
"""
from __future__ import annotations

import math

import medseg_core  # noqa: F401  (NumPy-2 / Pillow shim before detectron2)
import torch
from torch import Tensor

__all__ = ["box_iou_xyxy", "bbox_ciou"]


def box_iou_xyxy(box1: Tensor, box2: Tensor, eps: float = 1e-7) -> Tensor:
    """Plain IoU of broadcastable (..., 4) xyxy boxes -> (...)."""
    x1 = torch.maximum(box1[..., 0], box2[..., 0])
    y1 = torch.maximum(box1[..., 1], box2[..., 1])
    x2 = torch.minimum(box1[..., 2], box2[..., 2])
    y2 = torch.minimum(box1[..., 3], box2[..., 3])
    inter = (x2 - x1).clamp(min=0) * (y2 - y1).clamp(min=0)
    a1 = (box1[..., 2] - box1[..., 0]) * (box1[..., 3] - box1[..., 1])
    a2 = (box2[..., 2] - box2[..., 0]) * (box2[..., 3] - box2[..., 1])
    return inter / (a1 + a2 - inter + eps)


def bbox_ciou(box1: Tensor, box2: Tensor, eps: float = 1e-7) -> Tensor:
    """Complete IoU of broadcastable (..., 4) xyxy boxes -> (...). Values lie in (-1.5, 1]."""
    b1x1, b1y1, b1x2, b1y2 = box1.unbind(-1)
    b2x1, b2y1, b2x2, b2y2 = box2.unbind(-1)
    w1, h1 = b1x2 - b1x1, b1y2 - b1y1 + eps
    w2, h2 = b2x2 - b2x1, b2y2 - b2y1 + eps
    inter = (torch.minimum(b1x2, b2x2) - torch.maximum(b1x1, b2x1)).clamp(min=0) * (
        torch.minimum(b1y2, b2y2) - torch.maximum(b1y1, b2y1)
    ).clamp(min=0)
    union = w1 * h1 + w2 * h2 - inter + eps
    iou = inter / union
    # smallest enclosing box: squared diagonal
    cw = torch.maximum(b1x2, b2x2) - torch.minimum(b1x1, b2x1)
    ch = torch.maximum(b1y2, b2y2) - torch.minimum(b1y1, b2y1)
    c2 = cw.pow(2) + ch.pow(2) + eps
    # squared distance of the centres (sums are twice the centres, hence / 4)
    rho2 = ((b2x1 + b2x2 - b1x1 - b1x2).pow(2) + (b2y1 + b2y2 - b1y1 - b1y2).pow(2)) / 4
    v = (4 / math.pi**2) * (torch.atan(w2 / h2) - torch.atan(w1 / h1)).pow(2)
    with torch.no_grad():
        alpha = v / (v - iou + (1 + eps))
    return iou - (rho2 / c2 + v * alpha)

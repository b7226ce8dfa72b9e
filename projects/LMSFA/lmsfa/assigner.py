"""Task-aligned label assignment (TOOD / YOLOv8), used by the LMSF-A training loss.

The LMSF-A paper trains with the YOLOv8-seg recipe without restating it (§IV-B: "all other
hyper-parameters followed the defaults"); this is Ultralytics 8.2's rule:

* candidates of a ground-truth box are the anchor centres strictly inside it;
* alignment metric ``t = s^alpha * u^beta`` with ``s`` the predicted (sigmoid) score of the
  GT class and ``u`` the CIoU of the predicted box with the GT, clamped at 0;
* each GT takes its ``topk`` (10) candidates by ``t``; alpha 0.5, beta 6.0;
* an anchor claimed by several GTs keeps the GT it overlaps most (highest CIoU among the
  GTs whose box contains it, as YOLOv8 does);
* soft classification target of a positive anchor: ``one_hot(class) * t / max_t(GT) *
  max_u(GT)`` (the maxima over that GT's positive anchors).

Everything is batched: GTs are padded to the largest count in the batch (``mask_gt``) and all
(image, GT, anchor) triples are handled in tensor operations, with no Python loop over
images, GTs or anchors. The CIoU is computed only for the (GT, anchor) pairs whose anchor
lies inside the GT box.
"""
from __future__ import annotations

from typing import NamedTuple

import medseg_core  # noqa: F401  (NumPy-2 / Pillow shim before detectron2)
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .iou import bbox_ciou
from medseg_core.errors import here

__all__ = ["TaskAlignedAssigner", "AssignResult", "anchors_inside_boxes"]


class AssignResult(NamedTuple):
    """Per-anchor targets. B images, N anchors, C classes."""

    labels: Tensor  # (B, N) long, class of the assigned GT (0 for background anchors)
    bboxes: Tensor  # (B, N, 4) xyxy of the assigned GT (GT 0's box for background anchors)
    scores: Tensor  # (B, N, C) soft classification targets (zero rows for background)
    fg_mask: Tensor  # (B, N) bool, positive anchors
    gt_idx: Tensor  # (B, N) long, index of the assigned GT within its image


def anchors_inside_boxes(anchor_points: Tensor, gt_bboxes: Tensor, eps: float = 1e-9) -> Tensor:
    """(N, 2) anchor centres, (B, M, 4) xyxy boxes -> (B, M, N) bool, centre strictly inside."""
    xy = anchor_points[None, None]  # (1, 1, N, 2)
    lt = xy - gt_bboxes[..., None, :2]
    rb = gt_bboxes[..., None, 2:] - xy
    return torch.cat((lt, rb), -1).amin(-1) > eps


class TaskAlignedAssigner(nn.Module):
    """YOLOv8's TaskAlignedAssigner (topk 10, alpha 0.5, beta 6.0 by default)."""

    def __init__(
        self, num_classes: int, topk: int = 10, alpha: float = 0.5, beta: float = 6.0, eps: float = 1e-9
    ) -> None:
        super().__init__()
        if num_classes < 1 or topk < 1:
            raise ValueError(
                here() + f"num_classes and topk must be >= 1, got {num_classes}, {topk}"
            )
        self.num_classes, self.topk, self.alpha, self.beta, self.eps = num_classes, topk, alpha, beta, eps

    @torch.no_grad()
    def forward(
        self,
        pd_scores: Tensor,
        pd_bboxes: Tensor,
        anchor_points: Tensor,
        gt_labels: Tensor,
        gt_bboxes: Tensor,
        mask_gt: Tensor,
    ) -> AssignResult:
        """Assign GTs to anchors.

        Args:
            pd_scores: (B, N, C) predicted class probabilities (after sigmoid).
            pd_bboxes: (B, N, 4) predicted xyxy boxes, same units as ``gt_bboxes`` (pixels).
            anchor_points: (N, 2) anchor centres (pixels).
            gt_labels: (B, M) long class ids (padding entries may hold anything in range).
            gt_bboxes: (B, M, 4) xyxy GT boxes; padding rows are ignored through ``mask_gt``.
            mask_gt: (B, M) bool, real (non-padding) GTs.
        """
        b, n, c = pd_scores.shape
        m = gt_bboxes.shape[1]
        device = pd_scores.device
        if m == 0:
            return AssignResult(
                torch.zeros((b, n), dtype=torch.long, device=device),
                torch.zeros((b, n, 4), dtype=pd_bboxes.dtype, device=device),
                torch.zeros((b, n, c), dtype=pd_scores.dtype, device=device),
                torch.zeros((b, n), dtype=torch.bool, device=device),
                torch.zeros((b, n), dtype=torch.long, device=device),
            )
        gt_labels = gt_labels.long().clamp(0, c - 1)
        mask_gt = mask_gt.bool()
        in_gts = anchors_inside_boxes(anchor_points, gt_bboxes) & mask_gt[..., None]  # (B, M, N)

        # alignment metric only where the anchor lies inside the GT box
        cls_scores = torch.gather(pd_scores.transpose(1, 2), 1, gt_labels[..., None].expand(-1, -1, n))
        overlaps = torch.zeros((b, m, n), dtype=pd_bboxes.dtype, device=device)
        bi, mi, ni = in_gts.nonzero(as_tuple=True)
        overlaps[bi, mi, ni] = bbox_ciou(gt_bboxes[bi, mi], pd_bboxes[bi, ni]).clamp(min=0).to(overlaps.dtype)
        align = cls_scores.pow(self.alpha) * overlaps.pow(self.beta) * in_gts

        # top-k candidates per GT by the alignment metric (then kept only inside the box)
        k = min(self.topk, n)
        topk_idx = align.topk(k, dim=-1).indices  # (B, M, k)
        mask_topk = torch.zeros_like(in_gts).scatter_(-1, topk_idx, True)
        mask_pos = mask_topk & in_gts  # (B, M, N)

        # an anchor claimed by several GTs keeps the one it overlaps most
        num_claims = mask_pos.sum(1)  # (B, N)
        multi = num_claims > 1
        if bool(multi.any()):
            best = F.one_hot(overlaps.argmax(1), m).transpose(1, 2).bool()  # (B, M, N)
            mask_pos = torch.where(multi[:, None, :], best, mask_pos)
        fg_mask = mask_pos.any(1)  # (B, N)
        gt_idx = mask_pos.to(torch.uint8).argmax(1)  # (B, N)

        labels = torch.gather(gt_labels, 1, gt_idx)
        bboxes = torch.gather(gt_bboxes, 1, gt_idx[..., None].expand(-1, -1, 4))
        scores = F.one_hot(labels, c).to(pd_scores.dtype) * fg_mask[..., None]

        # soft targets: normalise t by the GT's best t, scale by the GT's best IoU
        align = align * mask_pos
        max_align = align.amax(-1, keepdim=True)  # (B, M, 1)
        max_iou = (overlaps * mask_pos).amax(-1, keepdim=True)
        norm = (align * max_iou / (max_align + self.eps)).amax(1)  # (B, N)
        scores = scores * norm[..., None]
        return AssignResult(labels, bboxes, scores, fg_mask, gt_idx)

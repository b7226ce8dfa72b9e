"""YOLOv8-seg training loss used by LMSF-A (paper §IV-B: "defaults of the implementation";
docs/lmsfa.md, "Loss and training recipe").

Four terms, each normalised as in Ultralytics' ``v8SegmentationLoss``:

* **cls**: BCE-with-logits of every anchor x class against the task-aligned soft targets,
  summed and divided by ``S`` = max(sum of all soft targets, 1);
* **box**: ``1 - CIoU`` of each positive anchor's decoded box with its GT, weighted by the
  anchor's soft-target sum, / ``S``;
* **dfl**: distribution focal loss: cross-entropy of each side's ``reg_max``-bin distribution
  against the two integer bins around the GT distance (in stride units, clamped to
  ``reg_max - 1.01``), linearly weighted, averaged over the 4 sides, same weight and ``S``;
* **seg**: for each positive anchor, mask logits ``coef . protos`` at prototype resolution
  (1/4 of the padded input) against its GT instance mask; per-pixel BCE zeroed outside the GT
  box (in prototype coordinates), averaged over the box area, summed over positives and
  divided by the number of positives.

Gains: box 7.5, seg 7.5 (Ultralytics uses the box gain for masks), cls 0.5, dfl 1.5. Like
Ultralytics, every term is multiplied by the batch size (``scale_by_batch``), which is what its
lr 0.01 is tuned for. Choice made where YOLOv8 is vague for us: GT masks stay per instance
(no Ultralytics "overlap" index map; docs/lmsfa.md, choice #15).

The loss is vectorised over the whole batch: GTs are padded to the largest count (a mask of
valid entries), positives are gathered into a (B, P) padded layout for the mask term, and
images with no instances give a finite loss (zero box/dfl/seg terms that keep the graph).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict

import medseg_core  # noqa: F401  (NumPy-2 / Pillow shim before detectron2)
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .assigner import TaskAlignedAssigner
from .dfl import bbox2dist, dfl_decode, dist2bbox
from .iou import bbox_ciou
from medseg_core.errors import here

__all__ = ["SegTargets", "YOLOSegLoss"]


@dataclass
class SegTargets:
    """Padded ground truth of a batch (B images, at most M instances each).

    ``boxes`` are xyxy in input pixels (of the padded batch tensor); ``masks`` are the
    instance masks already at prototype resolution (values in [0, 1]).
    """

    boxes: Tensor  # (B, M, 4)
    classes: Tensor  # (B, M) long
    valid: Tensor  # (B, M) bool
    masks: Tensor  # (B, M, Hp, Wp) float


class YOLOSegLoss(nn.Module):
    """The four YOLOv8-seg losses for flattened head outputs (see the module docstring)."""

    def __init__(
        self,
        num_classes: int,
        reg_max: int = 16,
        box_gain: float = 7.5,
        cls_gain: float = 0.5,
        dfl_gain: float = 1.5,
        seg_gain: float = 7.5,
        tal_topk: int = 10,
        tal_alpha: float = 0.5,
        tal_beta: float = 6.0,
        scale_by_batch: bool = True,
        proto_stride: int = 4,
    ) -> None:
        super().__init__()
        self.num_classes, self.reg_max = num_classes, reg_max
        self.box_gain, self.cls_gain, self.dfl_gain, self.seg_gain = box_gain, cls_gain, dfl_gain, seg_gain
        self.scale_by_batch = scale_by_batch
        self.proto_stride = proto_stride
        self.assigner = TaskAlignedAssigner(num_classes, tal_topk, tal_alpha, tal_beta)

    def forward(
        self,
        pred_dist: Tensor,
        pred_cls: Tensor,
        pred_coef: Tensor,
        protos: Tensor,
        anchor_points: Tensor,
        stride_tensor: Tensor,
        targets: SegTargets,
    ) -> Dict[str, Tensor]:
        """Compute the losses.

        Args:
            pred_dist: (B, N, 4*reg_max) raw DFL logits.
            pred_cls: (B, N, C) raw class logits.
            pred_coef: (B, N, nm) mask coefficients.
            protos: (B, nm, Hp, Wp) prototypes (Hp, Wp = padded input / 4).
            anchor_points: (N, 2) anchor centres in grid units of their level.
            stride_tensor: (N, 1) stride of every anchor.
            targets: padded ground truth (:class:`SegTargets`).
        Returns:
            {"loss_box", "loss_seg", "loss_cls", "loss_dfl"}, gains and batch scaling applied.
        """
        b, n, _ = pred_cls.shape
        if pred_cls.shape[-1] != self.num_classes:
            raise ValueError(
                here() + f"head predicts {pred_cls.shape[-1]} classes but the loss was "
                f"built for {self.num_classes}"
            )
        dtype = pred_cls.dtype
        # decoded boxes in grid units of each anchor's level
        dist = dfl_decode(pred_dist.transpose(1, 2), self.reg_max).transpose(1, 2)  # (B, N, 4)
        pred_bboxes = dist2bbox(dist, anchor_points)  # (B, N, 4)

        assign = self.assigner(
            pred_cls.detach().sigmoid(),
            (pred_bboxes.detach() * stride_tensor).to(targets.boxes.dtype),
            anchor_points * stride_tensor,
            targets.classes,
            targets.boxes,
            targets.valid,
        )
        target_scores_sum = assign.scores.sum().clamp(min=1)

        loss_cls = F.binary_cross_entropy_with_logits(
            pred_cls, assign.scores.to(dtype), reduction="none"
        ).sum() / target_scores_sum

        fg = assign.fg_mask
        num_fg = int(fg.sum())
        if num_fg > 0:
            weight = assign.scores.sum(-1)[fg]  # (F,)
            target_grid = assign.bboxes / stride_tensor  # (B, N, 4) grid units
            ciou = bbox_ciou(pred_bboxes[fg], target_grid[fg])
            loss_box = ((1.0 - ciou) * weight).sum() / target_scores_sum
            target_ltrb = bbox2dist(anchor_points.expand(b, -1, -1)[fg], target_grid[fg], self.reg_max)
            loss_dfl = (self._dfl(pred_dist[fg], target_ltrb) * weight).sum() / target_scores_sum
            loss_seg = self._mask_loss(
                fg, assign.gt_idx, assign.bboxes / self.proto_stride, pred_coef, protos, targets
            )
        else:
            # nothing to regress: zero terms that still touch every branch of the graph
            zero = pred_dist.sum() * 0 + pred_coef.sum() * 0 + protos.sum() * 0
            loss_box = loss_dfl = loss_seg = zero

        scale = float(b) if self.scale_by_batch else 1.0
        return {
            "loss_box": loss_box * self.box_gain * scale,
            "loss_seg": loss_seg * self.seg_gain * scale,
            "loss_cls": loss_cls * self.cls_gain * scale,
            "loss_dfl": loss_dfl * self.dfl_gain * scale,
        }

    def _dfl(self, pred_dist: Tensor, target: Tensor) -> Tensor:
        """(F, 4*reg_max) logits, (F, 4) distances in bins -> (F,) DFL averaged over sides."""
        logits = pred_dist.reshape(-1, self.reg_max)
        t = target.reshape(-1)
        left = t.long()
        w_left = (left + 1).to(t.dtype) - t
        ce_left = F.cross_entropy(logits, left, reduction="none")
        ce_right = F.cross_entropy(logits, left + 1, reduction="none")
        return (ce_left * w_left + ce_right * (1 - w_left)).view(-1, 4).mean(-1)

    @staticmethod
    def _mask_loss(
        fg: Tensor, gt_idx: Tensor, proto_boxes: Tensor, pred_coef: Tensor, protos: Tensor, targets: SegTargets
    ) -> Tensor:
        """Prototype mask BCE, mean inside the GT box, summed over positives / #positives.

        ``proto_boxes`` (B, N, 4) are the assigned GT boxes in prototype pixels."""
        b, nm, hp, wp = protos.shape
        counts = fg.sum(1)  # (B,)
        p = int(counts.max())
        # positives first in every row (stable sort keeps anchor order), padded to P
        order = torch.sort((~fg).to(torch.uint8), dim=1, stable=True).indices[:, :p]  # (B, P)
        valid = torch.arange(p, device=fg.device)[None] < counts[:, None]  # (B, P)
        coef = torch.gather(pred_coef, 1, order[..., None].expand(-1, -1, nm))  # (B, P, nm)
        logits = torch.bmm(coef, protos.reshape(b, nm, hp * wp))  # (B, P, Hp*Wp)
        inst = torch.gather(gt_idx, 1, order)  # (B, P)
        m = targets.masks.shape[1]
        gt = torch.gather(
            targets.masks.reshape(b, m, hp * wp), 1, inst[..., None].expand(-1, -1, hp * wp)
        ).to(logits.dtype)
        bce = F.binary_cross_entropy_with_logits(logits, gt, reduction="none").view(b, p, hp, wp)

        # crop to the GT box in prototype coordinates
        boxes = torch.gather(proto_boxes, 1, order[..., None].expand(-1, -1, 4))
        xs = torch.arange(wp, device=fg.device, dtype=boxes.dtype)
        ys = torch.arange(hp, device=fg.device, dtype=boxes.dtype)
        in_x = (xs >= boxes[..., 0:1]) & (xs < boxes[..., 2:3])  # (B, P, Wp)
        in_y = (ys >= boxes[..., 1:2]) & (ys < boxes[..., 3:4])  # (B, P, Hp)
        crop = in_y[..., :, None] & in_x[..., None, :]  # (B, P, Hp, Wp)
        # mean over the full map / normalised box area == mean BCE inside the box
        area = ((boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])).clamp(min=1e-6)
        per_pos = (bce * crop).sum((-2, -1)) / area  # (B, P)
        return (per_pos * valid).sum() / valid.sum()

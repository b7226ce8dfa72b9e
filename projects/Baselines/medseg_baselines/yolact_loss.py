"""YOLACT's training losses (Bolya et al. 2019, Sec. 3.1-3.3 and 6).

* Matching (SSD, as the paper): anchor-GT IoU >= 0.5 positive, < 0.4 background, in between
  ignored; each GT also claims its best anchor (Detectron2's ``Matcher`` with low-quality matches).
* Classification (weight 1): softmax cross-entropy over c + 1 classes with **online hard
  example mining** (the paper uses SSD's losses, not focal loss): per image, all positives plus
  the 3 x #positives background anchors with the largest background loss.
* Box (weight 1.5): smooth-L1 (beta 1) on SSD's (dx, dy, dw, dh) encoding (variances 0.1/0.2).
* Mask (weight 6.125): pixel-wise BCE between the assembled mask sigma(P c^T) (at the
  prototype resolution) and the GT mask, both **cropped to the GT box**, summed over the box and
  divided by the box area "to preserve small objects in the prototypes". At most
  ``masks_to_train`` positives per image (a random subset; the reference code's cap).
* Semantic segmentation (weight 1, Sec. 6): BCE-with-logits of a 1x1 conv on P3 (c sigmoid
  channels: a pixel may belong to several classes) against the union of each class's GT masks
  at the P3 stride, summed over classes, averaged over pixels and images.

Class, box and mask losses are divided by the number of positives in the batch, as SSD. An
image without annotations has no positives and so, under OHEM's 3:1 ratio, no mined negatives
(SSD's behaviour); it still enters the semantic loss as all-background.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List

import torch
import torch.nn.functional as F
from torch import Tensor

import medseg_core  # noqa: F401  (compatibility shim before detectron2)

from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.modeling.matcher import Matcher
from detectron2.structures import Boxes, pairwise_iou

from .instance_masks import crop_to_boxes, downsample_masks

__all__ = ["ImageTargets", "YOLACTLoss"]


@dataclass
class ImageTargets:
    """Ground truth of one image on the padded input canvas."""

    boxes: Tensor    # (K, 4) XYXY input pixels
    classes: Tensor  # (K,) int64 in [0, c)
    masks: Tensor    # (K, H, W) float 0/1, padded canvas


class YOLACTLoss:
    """Callable computing the four YOLACT losses for a batch (see the module docstring)."""

    def __init__(
        self,
        num_classes: int,
        iou_thresholds=(0.4, 0.5),
        bbox_reg_weights=(10.0, 10.0, 5.0, 5.0),
        neg_pos_ratio: int = 3,
        cls_weight: float = 1.0,
        box_weight: float = 1.5,
        mask_weight: float = 6.125,
        sem_weight: float = 1.0,
        masks_to_train: int = 100,
    ) -> None:
        self.num_classes = int(num_classes)
        self.matcher = Matcher(list(iou_thresholds), [0, -1, 1], allow_low_quality_matches=True)
        self.box2box = Box2BoxTransform(weights=tuple(bbox_reg_weights))
        self.neg_pos_ratio = int(neg_pos_ratio)
        self.cls_weight, self.box_weight = float(cls_weight), float(box_weight)
        self.mask_weight, self.sem_weight = float(mask_weight), float(sem_weight)
        self.masks_to_train = int(masks_to_train)

    def __call__(
        self,
        cls_logits: Tensor,   # (B, A, c + 1), background last
        box_deltas: Tensor,   # (B, A, 4)
        coefs: Tensor,        # (B, A, k)
        protos: Tensor,       # (B, k, Hp, Wp)
        sem_logits: Tensor,   # (B, c, Hs, Ws)
        anchors: Tensor,      # (A, 4)
        targets: List[ImageTargets],
    ) -> Dict[str, Tensor]:
        bg = self.num_classes
        H = targets[0].masks.shape[-2]
        proto_stride = H // protos.shape[-2]
        cls_terms, box_terms, mask_terms = [], [], []
        num_pos_total = 0
        for i, t in enumerate(targets):
            labels, matched = self._match(anchors, t, bg)
            pos = (labels >= 0) & (labels != bg)
            num_pos = int(pos.sum())
            num_pos_total += num_pos
            cls_terms.append(self._ohem_ce(cls_logits[i], labels, pos, num_pos, bg))
            if num_pos == 0:
                continue
            pos_idx = pos.nonzero()[:, 0]
            gt_idx = matched[pos_idx]
            deltas = self.box2box.get_deltas(anchors[pos_idx], t.boxes[gt_idx])
            box_terms.append(F.smooth_l1_loss(box_deltas[i, pos_idx], deltas, beta=1.0, reduction="sum"))
            mask_terms.append(self._mask_bce(coefs[i], protos[i], t, pos_idx, gt_idx, proto_stride))
        n = max(num_pos_total, 1)
        # keeps every output in the graph when a batch has no positives (DDP needs all grads)
        zero = (cls_logits.sum() + box_deltas.sum() + coefs.sum() + protos.sum()) * 0.0
        return {
            "loss_cls": self.cls_weight * sum(cls_terms, zero) / n,
            "loss_box": self.box_weight * sum(box_terms, zero) / n,
            "loss_mask": self.mask_weight * sum(mask_terms, zero) / n,
            "loss_sem": self.sem_weight * self._semantic(sem_logits, targets),
        }

    # ------------------------------------------------------------------ pieces
    def _match(self, anchors: Tensor, t: ImageTargets, bg: int):
        """Per-anchor class target (c = background, -1 = ignored) and matched GT index."""
        A = anchors.shape[0]
        if t.boxes.shape[0] == 0:
            return torch.full((A,), bg, dtype=torch.long, device=anchors.device), torch.zeros(
                (A,), dtype=torch.long, device=anchors.device
            )
        iou = pairwise_iou(Boxes(t.boxes), Boxes(anchors))
        matched, match_labels = self.matcher(iou)
        labels = t.classes[matched].clone()
        labels[match_labels == 0] = bg
        labels[match_labels == -1] = -1
        return labels, matched

    def _ohem_ce(self, logits: Tensor, labels: Tensor, pos: Tensor, num_pos: int, bg: int) -> Tensor:
        """Summed CE over the positives and the hardest 3 x num_pos background anchors."""
        neg_candidates = labels == bg
        num_neg = min(self.neg_pos_ratio * num_pos, int(neg_candidates.sum()))
        selected = pos.clone()
        if num_neg > 0:
            with torch.no_grad():
                bg_loss = torch.logsumexp(logits, dim=1) - logits[:, bg]
                bg_loss = torch.where(neg_candidates, bg_loss, torch.full_like(bg_loss, -1.0))
                hardest = bg_loss.topk(num_neg).indices
            selected[hardest] = True
        if not bool(selected.any()):
            return logits.sum() * 0.0
        return F.cross_entropy(logits[selected], labels[selected], reduction="sum")

    def _mask_bce(
        self, coefs: Tensor, protos: Tensor, t: ImageTargets, pos_idx: Tensor, gt_idx: Tensor, stride: int
    ) -> Tensor:
        """Sum over positives of (BCE summed inside the GT box) / (GT box area), prototype grid."""
        if pos_idx.numel() > self.masks_to_train:
            pick = torch.randperm(pos_idx.numel(), device=pos_idx.device)[: self.masks_to_train]
            pos_idx, gt_idx = pos_idx[pick], gt_idx[pick]
        k, hp, wp = protos.shape
        logits = (coefs[pos_idx] @ protos.reshape(k, -1)).reshape(-1, hp, wp)
        gt = downsample_masks(t.masks, stride)[gt_idx]
        boxes = t.boxes[gt_idx] / stride
        inside = crop_to_boxes(torch.ones_like(gt), boxes)
        bce = F.binary_cross_entropy_with_logits(logits, gt, reduction="none") * inside
        area = inside.flatten(1).sum(1).clamp(min=1.0)
        return (bce.flatten(1).sum(1) / area).sum()

    def _semantic(self, sem_logits: Tensor, targets: List[ImageTargets]) -> Tensor:
        B, C, hs, ws = sem_logits.shape
        H = targets[0].masks.shape[-2]
        stride = H // hs
        target = sem_logits.new_zeros(sem_logits.shape)
        for i, t in enumerate(targets):
            if t.classes.numel() == 0:
                continue
            small = downsample_masks(t.masks, stride)
            for c in t.classes.unique().tolist():
                target[i, c] = small[t.classes == c].amax(0)
        return F.binary_cross_entropy_with_logits(sem_logits, target, reduction="sum") / (hs * ws * B)

"""SOLOv2's loss (Wang et al. 2020, Sec. 3.2, following SOLO Sec. 3.3): L = L_cate + lambda L_mask.

* L_cate: sigmoid focal loss (alpha 0.25, gamma 2) over every grid cell of every level and
  class, summed and divided by (#positives + 1) (the reference normalisation);
* L_mask (lambda = 3): Dice loss of each positive cell's mask sigma(G * F) (its dynamic kernel
  G convolved with the mask feature F) against its object's mask at the mask feature stride,
  averaged over positives. Dice as SOLO: 1 - 2 sum(p q) / (sum p^2 + sum q^2) (+0.001 each).
"""
from __future__ import annotations

from typing import Dict, List

import torch
import torch.nn.functional as F
from torch import Tensor

import medseg_core  # noqa: F401  (compatibility shim before detectron2)

from fvcore.nn import sigmoid_focal_loss

from .solov2_targets import SOLOTargets

__all__ = ["dice_loss", "dynamic_masks", "SOLOv2Loss"]


def dice_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """(P, H, W) mask logits and 0/1 targets -> (P,) Dice losses."""
    p = logits.sigmoid().flatten(1)
    q = targets.flatten(1)
    inter = (p * q).sum(1)
    return 1.0 - 2.0 * inter / ((p * p).sum(1) + 0.001 + (q * q).sum(1) + 0.001)


def dynamic_masks(mask_feature: Tensor, kernels: Tensor, kernel_size: int) -> Tensor:
    """One image's mask feature (E, H, W) convolved with P dynamic kernels (P, E * k^2) -> (P, H, W)."""
    e = mask_feature.shape[0]
    weight = kernels.reshape(-1, e, kernel_size, kernel_size)
    return F.conv2d(mask_feature[None], weight, padding=kernel_size // 2)[0]


class SOLOv2Loss:
    """Callable computing ``loss_cate`` and ``loss_mask`` for a batch."""

    def __init__(
        self, num_classes: int, kernel_size: int = 1, focal_alpha: float = 0.25, focal_gamma: float = 2.0,
        cate_weight: float = 1.0, mask_weight: float = 3.0,
    ) -> None:
        self.num_classes, self.kernel_size = int(num_classes), int(kernel_size)
        self.alpha, self.gamma = float(focal_alpha), float(focal_gamma)
        self.cate_weight, self.mask_weight = float(cate_weight), float(mask_weight)

    def __call__(
        self,
        cate_logits: Tensor,   # (B, sum S^2, C)
        kernels: Tensor,       # (B, sum S^2, D)
        mask_feature: Tensor,  # (B, E, H/4, W/4)
        targets: List[SOLOTargets],
    ) -> Dict[str, Tensor]:
        labels = torch.stack([t.labels for t in targets])  # (B, sum S^2)
        onehot = F.one_hot(labels, self.num_classes + 1)[..., : self.num_classes].to(cate_logits.dtype)
        num_pos = sum(int(t.positives.numel()) for t in targets)
        loss_cate = sigmoid_focal_loss(cate_logits, onehot, self.alpha, self.gamma, reduction="sum") / (num_pos + 1)
        dice_terms = []
        for i, t in enumerate(targets):
            if t.positives.numel() == 0:
                continue
            logits = dynamic_masks(mask_feature[i], kernels[i, t.positives], self.kernel_size)
            dice_terms.append(dice_loss(logits, t.masks))
        if dice_terms:
            loss_mask = torch.cat(dice_terms).mean()
        else:  # no positives in the batch: keep the branch in the graph
            loss_mask = (kernels.sum() + mask_feature.sum()) * 0.0
        return {"loss_cate": self.cate_weight * loss_cate, "loss_mask": self.mask_weight * loss_mask}

"""Segmentation losses of LGMSNet and its baselines.

* Binary (one logit): ``L = 0.5 * BCE(y_hat, y) + Dice(y_hat, y)`` (LGMSNet Eq. 9), exactly the
  authors' ``BCEDiceLoss``: BCE-with-logits averaged over pixels, and
  ``1 - mean_over_images((2 * sum(p * y) + s) / (sum(p) + sum(y) + s))`` with ``p = sigmoid``
  and ``s = 1e-5`` (a per-image soft Dice averaged over the batch, not one Dice over the batch).
* Multi-class (K logits): softmax cross-entropy + soft Dice (the paper only defines the binary
  case). The Dice term is the per-image, per-class soft Dice on softmax probabilities against the
  one-hot target, averaged over classes (background included) and images, with the same
  smoothing; this is MONAI's ``DiceCELoss(softmax=True)`` convention that the authors' 3D
  pipeline uses.

Pixels equal to ``ignore_value`` (255; also the padding the meta-architecture adds) are left out
of every term: they do not enter the BCE/CE mean nor the Dice sums. Under DDP the BCE/CE mean
is over the valid pixels of the global batch (``count_normalizer``), so that the processes'
mean loss equals one process's on the global batch; the per-image Dice needs nothing.
"""
from __future__ import annotations

from typing import Dict

import torch
import torch.nn.functional as F

import medseg_core  # noqa: F401
from medseg_core.modeling.distributed import count_normalizer

__all__ = ["binary_bce_dice_loss", "multiclass_ce_dice_loss", "segmentation_losses"]


def _flat(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], -1)


def binary_bce_dice_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    ignore_value: int = 255,
    bce_weight: float = 0.5,
    dice_weight: float = 1.0,
    smooth: float = 1e-5,
) -> Dict[str, torch.Tensor]:
    """Eq. 9 for logits (B, 1, *S) and integer targets (B, *S) in {0, 1, ignore_value}."""
    if logits.shape[1] != 1:
        raise ValueError(f"binary loss: expected 1 logit channel, got {logits.shape[1]}")
    z = logits[:, 0].float()
    valid = targets != ignore_value
    y = (targets == 1).to(z.dtype)
    bce = (F.binary_cross_entropy_with_logits(z, y, reduction="none") * valid).sum() / count_normalizer(valid.sum())
    p = torch.sigmoid(z) * valid
    y = y * valid
    inter = _flat(p * y).sum(1)
    dice = (2 * inter + smooth) / (_flat(p).sum(1) + _flat(y).sum(1) + smooth)
    return {"loss_bce": bce_weight * bce, "loss_dice": dice_weight * (1 - dice.mean())}


def multiclass_ce_dice_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    ignore_value: int = 255,
    ce_weight: float = 1.0,
    dice_weight: float = 1.0,
    smooth: float = 1e-5,
) -> Dict[str, torch.Tensor]:
    """Softmax CE (ignore_index) + per-image, per-class soft Dice for logits (B, K, *S)."""
    k = logits.shape[1]
    logits = logits.float()
    valid = targets != ignore_value
    bad = valid & ((targets < 0) | (targets >= k))
    if bad.any():
        raise ValueError(
            f"multi-class loss: target values {sorted(targets[bad].unique().tolist())[:5]} are not "
            f"class ids 0..{k - 1} nor the ignore value {ignore_value} (check the data set's "
            f"classes against MODEL.SEM_SEG_HEAD.NUM_CLASSES)"
        )
    # an all-ignore batch gives 0 and keeps the graph
    ce = F.cross_entropy(logits, targets.long(), ignore_index=ignore_value, reduction="sum")
    ce = ce / count_normalizer(valid.sum())
    prob = logits.softmax(1) * valid.unsqueeze(1)
    onehot = F.one_hot(torch.where(valid, targets, torch.zeros_like(targets)).long(), k)
    onehot = onehot.movedim(-1, 1).to(prob.dtype) * valid.unsqueeze(1)
    b = logits.shape[0]
    p, y = prob.reshape(b, k, -1), onehot.reshape(b, k, -1)
    dice = (2 * (p * y).sum(-1) + smooth) / (p.sum(-1) + y.sum(-1) + smooth)
    return {"loss_ce": ce_weight * ce, "loss_dice": dice_weight * (1 - dice.mean())}


def segmentation_losses(logits: torch.Tensor, targets: torch.Tensor, cfg_loss: Dict) -> Dict[str, torch.Tensor]:
    """Eq. 9 for one-logit heads, CE + Dice otherwise; ``cfg_loss`` holds weights and smoothing."""
    if logits.shape[1] == 1:
        return binary_bce_dice_loss(
            logits, targets, cfg_loss["ignore_value"], cfg_loss["bce_weight"], cfg_loss["dice_weight"], cfg_loss["smooth"]
        )
    return multiclass_ce_dice_loss(
        logits, targets, cfg_loss["ignore_value"], cfg_loss["ce_weight"], cfg_loss["dice_weight"], cfg_loss["smooth"]
    )

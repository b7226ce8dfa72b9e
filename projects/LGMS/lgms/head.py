"""Common semantic head of the U-shaped models of this project (LGMSNet, U-Net, CMUNeXt).

A U-shaped decoder's body (passed in by the subclass) turns the backbone's ``res1..res5``
features into a stride-1 map; a 1x1 conv (with bias) predicts the logits. Binary models (2
classes with ``MODEL.LGMS.BINARY_ONE_LOGIT``) predict a single foreground logit, trained with
0.5*BCE + Dice (LGMSNet Eq. 9), and at inference return the two channels ``[0, z]`` so that
Detectron2's argmax-based post-processing and evaluators see ``argmax == (sigmoid(z) > 0.5)``,
the authors' threshold. Multi-class models predict K logits with CE + Dice (ignore 255).
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch
from torch import nn

from .losses import segmentation_losses

__all__ = ["UShapeSemSegHead", "head_outputs"]


def head_outputs(cfg) -> int:
    """Number of logits the head predicts: 1 for a binary one-logit model, else NUM_CLASSES."""
    k = int(cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES)
    if k < 2:
        raise ValueError(
            f"MODEL.SEM_SEG_HEAD.NUM_CLASSES = {k}: count the background too (2 for a binary task)"
        )
    return 1 if (k == 2 and cfg.MODEL.LGMS.BINARY_ONE_LOGIT) else k


class UShapeSemSegHead(nn.Module):
    """Decoder body + 1x1 classifier + the losses of this project."""

    def __init__(self, decoder: nn.Module, decoder_channels: int, cfg, nd: int = 2):
        super().__init__()
        self.decoder = decoder
        self.num_classes = int(cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES)
        self.num_outputs = head_outputs(cfg)
        self.ignore_value = int(cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE)
        self.predictor = {2: nn.Conv2d, 3: nn.Conv3d}[nd](decoder_channels, self.num_outputs, 1)
        loss = cfg.MODEL.LGMS.LOSS
        self.loss_cfg = {
            "ignore_value": self.ignore_value, "bce_weight": loss.BCE_WEIGHT, "ce_weight": loss.CE_WEIGHT,
            "dice_weight": loss.DICE_WEIGHT, "smooth": loss.DICE_SMOOTH,
        }

    def layers(self, features: Dict[str, torch.Tensor]) -> torch.Tensor:
        """Raw logits at stride 1: (B, 1 or K, H, W)."""
        return self.predictor(self.decoder(features))

    @staticmethod
    def as_class_scores(logits: torch.Tensor) -> torch.Tensor:
        """One foreground logit z -> two channels [0, z]; K logits unchanged."""
        if logits.shape[1] == 1:
            return torch.cat((torch.zeros_like(logits), logits), dim=1)
        return logits

    def forward(
        self, features: Dict[str, torch.Tensor], targets: Optional[torch.Tensor] = None
    ) -> Tuple[Optional[torch.Tensor], Dict[str, torch.Tensor]]:
        logits = self.layers(features)
        if self.training:
            if targets is None:
                raise ValueError("semantic head: training needs 'sem_seg' targets in the inputs")
            return None, self.losses(logits, targets)
        return self.as_class_scores(logits), {}

    def losses(self, logits: torch.Tensor, targets: torch.Tensor) -> Dict[str, torch.Tensor]:
        return segmentation_losses(logits, targets, self.loss_cfg)

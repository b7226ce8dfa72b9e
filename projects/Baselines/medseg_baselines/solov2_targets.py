"""SOLOv2 / SOLO target assignment (Wang et al., SOLO Sec. 3.1-3.2 and SOLOv2 Sec. 3):

* an object goes to every level whose scale range contains sqrt(w * h) of its box (the ranges
  overlap, so an object can be learned on two levels);
* on a level with S x S grid, the **centre region** is the mask's centre of mass +/- sigma/2 of the
  box size (sigma = 0.2); the grid cells it touches are positive, limited to the 3 x 3 cells
  around the cell containing the centre of mass (the reference code's rule);
* a positive cell's category target is the object's class, its mask target the object's mask
  at the mask feature stride. When two objects claim one cell, the later one wins (as the
  reference code).

Grid coordinates are fractions of the padded input canvas, where the mask feature lives.
"""
from __future__ import annotations

from dataclasses import dataclass
import math
from typing import Dict, Sequence

import torch
from torch import Tensor

from .instance_masks import downsample_masks

__all__ = ["SOLOTargets", "solov2_targets"]


@dataclass
class SOLOTargets:
    """Targets of one image over all levels, cells flattened level by level (row-major)."""

    labels: Tensor      # (sum S^2,) int64 class, num_classes = background
    positives: Tensor   # (P,) flattened cell index of each positive
    masks: Tensor       # (P, H / mask_stride, W / mask_stride) float 0/1 targets


def solov2_targets(
    boxes: Tensor,
    classes: Tensor,
    masks: Tensor,
    num_classes: int,
    num_grids: Sequence[int],
    scale_ranges: Sequence[Sequence[float]],
    sigma: float,
    mask_stride: int,
    min_mask_pixels: int = 10,
) -> SOLOTargets:
    """Assign one image's objects (boxes (K, 4), classes (K,), masks (K, H, W) on the padded
    canvas) to grid cells; see the module docstring."""
    device = masks.device
    H, W = masks.shape[-2:]
    small = downsample_masks(masks, mask_stride)
    labels, positives, targets = [], [], []
    offset = 0
    wh = (boxes[:, 2:] - boxes[:, :2]).clamp(min=0)
    scales = (wh[:, 0] * wh[:, 1]).sqrt()
    areas = masks.flatten(1).sum(1)
    ys = torch.arange(H, device=device, dtype=torch.float32) + 0.5
    xs = torch.arange(W, device=device, dtype=torch.float32) + 0.5
    cy = (masks.sum(2) @ ys) / areas.clamp(min=1)
    cx = (masks.sum(1) @ xs) / areas.clamp(min=1)
    for s, (lo, hi) in zip(num_grids, scale_ranges):
        level_labels = torch.full((s * s,), num_classes, dtype=torch.long, device=device)
        owner: Dict[int, int] = {}
        hits = ((scales >= lo) & (scales <= hi) & (areas >= min_mask_pixels)).nonzero()[:, 0].tolist()
        for k in hits:
            half_w, half_h = 0.5 * sigma * float(wh[k, 0]), 0.5 * sigma * float(wh[k, 1])
            ccx, ccy = float(cx[k]), float(cy[k])
            cell_x, cell_y = math.floor(ccx / W * s), math.floor(ccy / H * s)
            top = max(0, math.floor((ccy - half_h) / H * s), cell_y - 1)
            bottom = min(s - 1, math.floor((ccy + half_h) / H * s), cell_y + 1)
            left = max(0, math.floor((ccx - half_w) / W * s), cell_x - 1)
            right = min(s - 1, math.floor((ccx + half_w) / W * s), cell_x + 1)
            for i in range(top, bottom + 1):
                for j in range(left, right + 1):
                    owner[i * s + j] = k
        for cell, k in sorted(owner.items()):
            level_labels[cell] = classes[k]
            positives.append(offset + cell)
            targets.append(k)
        labels.append(level_labels)
        offset += s * s
    pos = torch.tensor(positives, dtype=torch.long, device=device)
    gt = small[torch.tensor(targets, dtype=torch.long, device=device)] if targets else small[:0]
    return SOLOTargets(torch.cat(labels), pos, gt)


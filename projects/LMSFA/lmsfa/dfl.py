"""Distribution Focal Loss (DFL) box decoding and anchor points (YOLOv8-seg, paper §III-E).

The LMSF-A paper (§III-E, "LMSH") predicts boxes as in YOLOv8: for every anchor point (cell
centre of the stride-8/16/32 grids) the head outputs ``4 * reg_max`` logits, one discrete
distribution of ``reg_max`` bins per box side (left, top, right, bottom). The distance of a
side is the expectation ``sum_k softmax(logits)_k * k`` in stride units.
The paper does not spell the decoding out; we follow YOLOv8 exactly (reg_max 16, anchors at
cell centres with offset 0.5, ``xyxy = anchor -/+ ltrb``).

Shapes used throughout: ``N`` = total anchors over all levels (8400 at 640x640).
"""
from __future__ import annotations

from typing import List, Sequence, Tuple

import medseg_core  # noqa: F401  (NumPy-2 / Pillow shim before detectron2)
import torch
from torch import Tensor, nn
from medseg_core.errors import here

__all__ = ["DFL", "dfl_decode", "make_anchors", "dist2bbox", "bbox2dist"]


class DFL(nn.Module):
    """Integral of a discrete distribution: a fixed 1x1 conv with weights ``[0, 1, ..., reg_max-1]``.

    Not trained (``requires_grad=False``), but it is a parameter of the YOLOv8 head and is
    counted in its parameter total (16 with reg_max = 16), so it is kept as a module.
    """

    def __init__(self, reg_max: int = 16) -> None:
        super().__init__()
        if reg_max < 1:
            raise ValueError(here() + f"reg_max must be >= 1, got {reg_max}")
        self.reg_max = reg_max
        self.conv = nn.Conv2d(reg_max, 1, 1, bias=False).requires_grad_(False)
        self.conv.weight.data[:] = torch.arange(reg_max, dtype=torch.float).view(1, reg_max, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        """(B, 4*reg_max, N) logits -> (B, 4, N) expected distances (stride units)."""
        b, c, n = x.shape
        if c != 4 * self.reg_max:
            raise ValueError(
                here() + f"expected {4 * self.reg_max} box channels (4 x reg_max), got {c}"
            )
        x = x.view(b, 4, self.reg_max, n).transpose(2, 1).softmax(1)  # (B, reg_max, 4, N)
        return self.conv(x).view(b, 4, n)


def dfl_decode(box_logits: Tensor, reg_max: int = 16) -> Tensor:
    """Functional DFL: (B, 4*reg_max, N) raw logits -> (B, 4, N) ltrb distances in stride units."""
    b, c, n = box_logits.shape
    if c != 4 * reg_max:
        raise ValueError(here() + f"expected {4 * reg_max} box channels (4 x reg_max), got {c}")
    prob = box_logits.view(b, 4, reg_max, n).softmax(2)
    bins = torch.arange(reg_max, dtype=prob.dtype, device=prob.device).view(1, 1, reg_max, 1)
    return (prob * bins).sum(2)


def make_anchors(
    feats: Sequence[Tensor], strides: Sequence[int], offset: float = 0.5
) -> Tuple[Tensor, Tensor]:
    """Anchor points at cell centres of every level, in grid units of their own level.

    Args:
        feats: per-level tensors (B, C, H_i, W_i) (only their shapes, dtype and device are used).
        strides: the stride of each level, e.g. [8, 16, 32].
        offset: 0.5 puts the anchor at the cell centre (YOLOv8).

    Returns:
        anchor_points (N, 2) as (x, y) in grid units of each level, and stride_tensor (N, 1);
        multiply both to get pixel coordinates. Levels are concatenated in order, row-major.
    """
    if len(feats) != len(strides):
        raise ValueError(
            here() + f"make_anchors got {len(feats)} feature maps but {len(strides)} strides"
        )
    points: List[Tensor] = []
    stride_list: List[Tensor] = []
    dtype, device = feats[0].dtype, feats[0].device
    for f, s in zip(feats, strides):
        h, w = f.shape[-2:]
        sx = torch.arange(w, device=device, dtype=dtype) + offset
        sy = torch.arange(h, device=device, dtype=dtype) + offset
        yy, xx = torch.meshgrid(sy, sx, indexing="ij")
        points.append(torch.stack((xx, yy), -1).view(-1, 2))
        stride_list.append(torch.full((h * w, 1), float(s), dtype=dtype, device=device))
    return torch.cat(points), torch.cat(stride_list)


def dist2bbox(distance: Tensor, anchor_points: Tensor, xywh: bool = False, dim: int = -1) -> Tensor:
    """ltrb distances -> boxes around the anchor points.

    ``distance`` and ``anchor_points`` must broadcast with the 4 (resp. 2) coordinates along
    ``dim``: e.g. (B, N, 4) with (N, 2), or (B, 4, N) with (2, N) and ``dim=1``.
    Returns xyxy (default) or centre-xywh.
    """
    lt, rb = distance.chunk(2, dim)
    x1y1 = anchor_points - lt
    x2y2 = anchor_points + rb
    if xywh:
        return torch.cat(((x1y1 + x2y2) / 2, x2y2 - x1y1), dim)
    return torch.cat((x1y1, x2y2), dim)


def bbox2dist(anchor_points: Tensor, bbox_xyxy: Tensor, reg_max: int = 16) -> Tensor:
    """xyxy boxes -> ltrb distances from the anchors, clamped to [0, reg_max - 1 - 0.01].

    The upper clamp (14.99 for reg_max 16) keeps the DFL target strictly between two bins, as
    in YOLOv8's loss. Inputs are in the same (grid) units; the last dim holds the coordinates.
    """
    x1y1, x2y2 = bbox_xyxy.chunk(2, -1)
    return torch.cat((anchor_points - x1y1, x2y2 - anchor_points), -1).clamp_(0, reg_max - 1 - 0.01)

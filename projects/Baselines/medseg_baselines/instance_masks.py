"""Mask helpers shared by the one-stage baselines (YOLACT, SOLOv2).

* :func:`gt_mask_tensor`: the ground-truth masks of one image (BitMasks or polygons) as a float
  tensor on the padded input canvas;
* :func:`downsample_masks`: masks pooled to a feature stride (area average, >= 0.5);
* :func:`resample_to_original`: masks predicted on a stride-s grid of the padded input ->
  the original image size in one bilinear resampling (padding removed, image resized), without
  first building full-resolution masks of the padded input;
* :func:`crop_to_boxes`: zero everything outside each mask's box (YOLACT's crop).
"""
from __future__ import annotations

from typing import Dict, Iterator, List, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

import medseg_core  # noqa: F401  (compatibility shim before detectron2)

from detectron2.structures import BitMasks, Instances, PolygonMasks

__all__ = ["training_instances", "gt_mask_tensor", "downsample_masks", "resample_to_original", "crop_to_boxes"]


def training_instances(batched_inputs: List[Dict], device: torch.device) -> Iterator[Tuple[str, Instances]]:
    """``(where, instances on device)`` per training input; ``where`` names its file for errors."""
    for x in batched_inputs:
        where = x.get("file_name", "training input")
        if "instances" not in x:
            raise ValueError(f"{where}: training input has no 'instances' (use an instance dataset mapper)")
        yield where, x["instances"].to(device)


def gt_mask_tensor(instances: Instances, padded_hw: Tuple[int, int], device: torch.device, where: str) -> Tensor:
    """(K, H, W) float 0/1 masks of ``instances`` zero-padded to ``padded_hw``.

    ``where`` names the input (file) in the error raised when masks are missing.
    """
    H, W = int(padded_hw[0]), int(padded_hw[1])
    if len(instances) == 0:
        return torch.zeros((0, H, W), device=device)
    if not instances.has("gt_masks"):
        raise ValueError(f"{where}: training instances have no gt_masks (instance segmentation needs mask annotations)")
    gm = instances.gt_masks
    h, w = instances.image_size
    if isinstance(gm, PolygonMasks):
        gm = BitMasks.from_polygon_masks(gm, h, w)
    if isinstance(gm, BitMasks):
        t = gm.tensor
    elif isinstance(gm, Tensor):
        t = gm
    else:
        raise TypeError(f"{where}: gt_masks of type {type(gm).__name__} is not supported (BitMasks or PolygonMasks)")
    t = t.to(device=device, dtype=torch.float32)
    return F.pad(t, (0, W - t.shape[-1], 0, H - t.shape[-2]))


def downsample_masks(masks: Tensor, stride: int) -> Tensor:
    """(K, H, W) 0/1 masks -> (K, H / stride, W / stride) 0/1 masks (cell covered >= half)."""
    if stride == 1:
        return masks
    if masks.shape[0] == 0:
        return masks.new_zeros((0, masks.shape[-2] // stride, masks.shape[-1] // stride))
    return (F.avg_pool2d(masks[:, None], stride)[:, 0] >= 0.5).to(masks.dtype)


def resample_to_original(
    masks: Tensor, stride: int, image_size: Tuple[int, int], out_size: Tuple[int, int], chunk: int = 32
) -> Tensor:
    """Resample (N, hm, wm) maps on the stride-``stride`` grid of the padded input to ``out_size``.

    The image occupies input pixels [0, h) x [0, w) of the padded canvas (hm * stride, wm *
    stride); output pixel centres are mapped there ((X + 0.5) * w / W) and sampled bilinearly on
    the grid (cell j is centred at (j + 0.5) * stride), i.e. the composition "upsample to the
    input, drop the padding, resize to the original size" in one step. Works in chunks of
    ``chunk`` maps to bound memory.
    """
    n, hm, wm = masks.shape
    H, W = int(out_size[0]), int(out_size[1])
    if n == 0:
        return masks.new_zeros((0, H, W))
    h, w = float(image_size[0]), float(image_size[1])
    dev, dt = masks.device, masks.dtype
    # normalised grid_sample coordinates (align_corners=False: -1 and 1 are the canvas edges)
    gx = (torch.arange(W, device=dev, dtype=dt) + 0.5) * (w / W) * (2.0 / (wm * stride)) - 1.0
    gy = (torch.arange(H, device=dev, dtype=dt) + 0.5) * (h / H) * (2.0 / (hm * stride)) - 1.0
    grid = torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], dim=-1)[None]  # (1, H, W, 2) as (x, y)
    out = [
        F.grid_sample(masks[i:i + chunk][None], grid, mode="bilinear", padding_mode="border", align_corners=False)[0]
        for i in range(0, n, chunk)
    ]
    return torch.cat(out)


def crop_to_boxes(masks: Tensor, boxes: Tensor) -> Tensor:
    """Zero (N, H, W) masks outside their (N, 4) XYXY boxes (pixel units of the masks' grid).

    A pixel is inside when its centre (x + 0.5, y + 0.5) lies in [x1, x2) x [y1, y2).
    """
    n, H, W = masks.shape
    if n == 0:
        return masks
    xs = torch.arange(W, device=masks.device, dtype=boxes.dtype) + 0.5
    ys = torch.arange(H, device=masks.device, dtype=boxes.dtype) + 0.5
    in_x = (xs[None] >= boxes[:, 0:1]) & (xs[None] < boxes[:, 2:3])  # (N, W)
    in_y = (ys[None] >= boxes[:, 1:2]) & (ys[None] < boxes[:, 3:4])  # (N, H)
    return masks * (in_y[:, :, None] & in_x[:, None, :]).to(masks.dtype)

"""Inference post-processing of LMSF-A / YOLOv8-seg outputs (docs/lmsfa.md).

1. **Decode** (whole batch at once): sigmoid class scores; then, only for the anchors where
   some class passes the confidence threshold (in any image of the batch), DFL expectations ->
   ltrb distances -> xyxy boxes in input pixels and the mask coefficients (at the deployment
   threshold 0.25 a few dozen of the 8400 anchors of a 640 x 640 input).
2. **NMS** (whole batch at once): candidates are (anchor, class) pairs with score > conf
   (multi-label, as Ultralytics' validator does, so one box may score in several classes) or
   the best class per anchor (``multi_label=False``); at most ``max_nms`` candidates per image
   by score; one ``batched_nms`` call over every image and class (``agnostic`` merges classes);
   the ``max_det`` best survivors per image.
3. **Masks**, only for the kept detections: ``coef . protos`` logits at prototype resolution
   (1/4 of the padded input), resampled bilinearly in one step straight onto the original image
   grid (the padding removed by the coordinate mapping), cropped to the box at that resolution
   and thresholded at logit 0 (probability 0.5). This is Ultralytics' "native"/retina mask path
   (upsample, then crop), which avoids masks bleeding past their box; the paper's validator
   instead scores masks at prototype resolution (see the "ultralytics_segm" evaluator).
   Two exact implementations of that resampling: on the CPU, each kept detection is resampled
   only inside its box (cost ~ box area; at the evaluation setting of conf 0.001 and 300
   detections on 854 x 480 frames about 6x faster than the dense path); elsewhere (GPU), two
   matrix products (columns, then rows) over all kept detections at once, in chunks that bound
   memory. Both give the same masks (tested).

Nothing here loops over anchors; the Python loops are over the images of a batch (each has its
own prototypes and output size) and, on the CPU, over the kept detections of an image.
"""
from __future__ import annotations

from typing import List, NamedTuple, Optional, Sequence, Tuple

import medseg_core  # noqa: F401  (NumPy-2 / Pillow shim before detectron2)
import torch
from torch import Tensor
from torchvision.ops import batched_nms

from .dfl import dfl_decode, dist2bbox, make_anchors
from medseg_core.errors import here

__all__ = [
    "Detections", "flatten_levels", "decode_boxes", "multilabel_nms", "assemble_masks", "rank_within_groups",
    "bilinear_matrix",
]


class Detections(NamedTuple):
    """Kept detections of one image (K of them), boxes in input pixels."""

    boxes: Tensor  # (K, 4) xyxy
    scores: Tensor  # (K,)
    classes: Tensor  # (K,) long
    coef: Tensor  # (K, nm)


def flatten_levels(levels: Sequence[Tensor]) -> Tensor:
    """Per-level (B, C, H_i, W_i) maps -> (B, N, C), levels concatenated row-major (anchor order)."""
    return torch.cat([x.flatten(2) for x in levels], 2).transpose(1, 2)


def decode_boxes(box_levels: Sequence[Tensor], strides: Sequence[int], reg_max: int,
                 anchor_index: Optional[Tensor] = None) -> Tuple[Tensor, Tensor, Tensor]:
    """DFL logits per level -> (boxes (B, N, 4) xyxy in input pixels, anchor_points (N, 2) grid
    units, stride_tensor (N, 1)). With ``anchor_index`` (n,) only those anchors are decoded
    (each anchor's box depends on its own logits only: the same values), N = n."""
    anchor_points, stride_tensor = make_anchors(box_levels, strides)
    logits = torch.cat([x.flatten(2) for x in box_levels], 2)
    if anchor_index is not None:
        logits, anchor_points, stride_tensor = logits[:, :, anchor_index], anchor_points[anchor_index], stride_tensor[anchor_index]
    dist = dfl_decode(logits, reg_max)  # (B, 4, N)
    boxes = dist2bbox(dist, anchor_points.t()[None], dim=1) * stride_tensor.t()[None]
    return boxes.transpose(1, 2), anchor_points, stride_tensor


def rank_within_groups(groups: Tensor, scores: Tensor) -> Tuple[Tensor, Tensor]:
    """Order by (group, score desc); return the order and each item's rank inside its group."""
    order = torch.argsort(scores, descending=True, stable=True)
    order = order[torch.argsort(groups[order], stable=True)]
    g = groups[order]
    pos = torch.arange(g.numel(), device=g.device)
    first = torch.ones_like(g, dtype=torch.bool)
    first[1:] = g[1:] != g[:-1]
    # index of the first element of each run, carried forward
    start = torch.cummax(torch.where(first, pos, torch.zeros_like(pos)), 0).values
    return order, pos - start


def multilabel_nms(
    boxes: Tensor,
    scores: Tensor,
    coef: Tensor,
    conf_thresh: float = 0.001,
    iou_thresh: float = 0.7,
    max_det: int = 300,
    multi_label: bool = True,
    agnostic: bool = False,
    max_nms: int = 30000,
) -> List[Detections]:
    """YOLOv8-style NMS for a batch: (B, N, 4) boxes, (B, N, C) probabilities, (B, N, nm) coefs."""
    b, n, c = scores.shape
    if multi_label:
        bi, ni, ci = (scores > conf_thresh).nonzero(as_tuple=True)
        sc = scores[bi, ni, ci]
    else:
        best, cls = scores.max(-1)
        bi, ni = (best > conf_thresh).nonzero(as_tuple=True)
        sc, ci = best[bi, ni], cls[bi, ni]
    # at most max_nms candidates per image, by score
    if sc.numel() > max_nms:
        order, rank = rank_within_groups(bi, sc)
        keep = order[rank < max_nms]
        bi, ni, ci, sc = bi[keep], ni[keep], ci[keep], sc[keep]
    cand_boxes = boxes[bi, ni]
    groups = bi if agnostic else bi * c + ci
    keep = batched_nms(cand_boxes.float(), sc.float(), groups, iou_thresh)
    bi, ni, ci, sc = bi[keep], ni[keep], ci[keep], sc[keep]
    # the max_det best per image
    order, rank = rank_within_groups(bi, sc)
    order = order[rank < max_det]
    bi, ni, ci, sc = bi[order], ni[order], ci[order], sc[order]
    counts = torch.bincount(bi, minlength=b).tolist()
    out = []
    for bb, nn_, cc, ss in zip(bi.split(counts), ni.split(counts), ci.split(counts), sc.split(counts)):
        out.append(Detections(boxes[bb, nn_], ss, cc, coef[bb, nn_]))
    return out


def bilinear_matrix(n_out: int, n_in_content: float, n_grid: int, stride: float, device=None,
                    dtype=torch.float32) -> Tensor:
    """(n_out, n_grid) linear-interpolation matrix along one axis.

    Output pixel centre (i + 0.5) maps to input pixel ``(i + 0.5) * n_in_content / n_out`` and to
    the prototype coordinate ``that / stride - 0.5`` (cell centres at integers), clamped to the
    map: exactly grid_sample(align_corners=False, padding_mode="border") along that axis.
    """
    i0, i1, a = _bilinear_taps(n_out, n_in_content, n_grid, stride, device)
    rows = torch.arange(n_out, device=device)
    m = torch.zeros((n_out, n_grid), dtype=torch.float64, device=device)
    m.index_put_((rows, i0), 1 - a, accumulate=True)
    m.index_put_((rows, i1), a, accumulate=True)
    return m.to(dtype)


def assemble_masks(
    coef: Tensor,
    protos: Tensor,
    boxes_out: Tensor,
    input_hw: Tuple[int, int],
    output_hw: Tuple[int, int],
    proto_stride: int = 4,
    max_chunk_pixels: int = 1 << 24,
    method: str = "auto",
    cropped: bool = False,
) -> Tensor:
    """Binary masks of K detections at the original image size.

    Args:
        coef: (K, nm) mask coefficients.
        protos: (nm, Hp, Wp) prototypes of the image (Hp, Wp = padded input / proto_stride).
        boxes_out: (K, 4) xyxy boxes in OUTPUT (original image) pixels; masks are cropped to them.
        input_hw: (h, w) of the resized image inside the padded input (the padding is dropped).
        output_hw: (H, W) of the original image.
        method: "boxes" (resample each detection inside its box), "dense" (whole image, batched
            matrix products) or "auto" ("boxes" on the CPU, "dense" elsewhere).
        cropped: return :class:`medseg_core.cropped_masks.CroppedMasks` (each mask only inside
            its box, the "boxes" computation; memory ~ box areas instead of K x H x W).
    Returns:
        (K, H, W) bool masks (or the same masks as ``CroppedMasks``).

    The logits ``coef . protos`` are resampled bilinearly (align_corners=False) in one step from
    the prototype grid to the original pixel grid as two matrix products (columns, then rows), a
    pixel is kept when its logit is > 0 and its centre lies in the box. Detections are processed
    in chunks of at most ``max_chunk_pixels`` output pixels to bound memory.
    """
    if method not in ("auto", "boxes", "dense"):
        raise ValueError(here() + f"assemble_masks method must be auto, boxes or dense, got {method!r}")
    k = coef.shape[0]
    nm, hp, wp = protos.shape
    H, W = int(output_hw[0]), int(output_hw[1])
    dev = protos.device
    if cropped:
        from medseg_core.cropped_masks import CroppedMasks

        rles, offsets = [], []
        if k:
            logits = (coef.to(protos.dtype) @ protos.reshape(nm, hp * wp)).view(k, hp, wp)
            # each crop is run-length encoded as soon as it is computed: one at a time in memory
            for _, cy, cx, crop in _masks_in_boxes(logits, boxes_out, input_hw, (H, W), proto_stride):
                rles.append(CroppedMasks.from_crops([crop], [(cx.start, cy.start)], (H, W)).rles[0])
                offsets.append((cx.start, cy.start))
        return CroppedMasks(rles, torch.tensor(offsets, dtype=torch.long, device=dev).reshape(-1, 2), (H, W))
    out = torch.empty((k, H, W), dtype=torch.bool, device=dev)
    if k == 0:
        return out
    logits = (coef.to(protos.dtype) @ protos.reshape(nm, hp * wp)).view(k, hp, wp)
    if method == "boxes" or (method == "auto" and dev.type == "cpu"):
        return _assemble_in_boxes(logits, boxes_out, input_hw, (H, W), proto_stride, out)
    dt = logits.dtype
    ry = bilinear_matrix(H, float(input_hw[0]), hp, proto_stride, dev, dt)  # (H, Hp)
    rxt = bilinear_matrix(W, float(input_hw[1]), wp, proto_stride, dev, dt).t()  # (Wp, W)
    cx = torch.arange(W, device=dev, dtype=boxes_out.dtype) + 0.5
    cy = torch.arange(H, device=dev, dtype=boxes_out.dtype) + 0.5
    in_x = (cx >= boxes_out[:, 0:1]) & (cx <= boxes_out[:, 2:3])  # (K, W)
    in_y = (cy >= boxes_out[:, 1:2]) & (cy <= boxes_out[:, 3:4])  # (K, H)
    chunk = max(1, max_chunk_pixels // max(H * W, 1))
    for s in range(0, k, chunk):  # chunks of detections bound the float buffer, not a per-mask loop
        e = min(k, s + chunk)
        cols = logits[s:e] @ rxt  # (k, Hp, W)
        # columns outside the box: a large negative logit survives the row interpolation
        cols.masked_fill_(~in_x[s:e, None, :], -1e4)
        up = torch.matmul(ry, cols)  # (k, H, W)
        torch.logical_and(up > 0, in_y[s:e, :, None], out=out[s:e])
    return out


def _bilinear_taps(n_out: int, n_in_content: float, n_grid: int, stride: float, device=None
                   ) -> Tuple[Tensor, Tensor, Tensor]:
    """The two non-zeros of each row of :func:`bilinear_matrix`: indices i0, i1 and the (float64)
    weight a of i1 (i0 gets 1 - a)."""
    u = (torch.arange(n_out, device=device, dtype=torch.float64) + 0.5) * (n_in_content / n_out) / stride - 0.5
    u = u.clamp(0, n_grid - 1)
    i0 = u.floor().long()
    i1 = (i0 + 1).clamp(max=n_grid - 1)
    return i0, i1, u - i0.to(torch.float64)


def _masks_in_boxes(logits: Tensor, boxes_out: Tensor, input_hw: Tuple[int, int], output_hw: Tuple[int, int],
                    proto_stride: int, rows_per_block: int = 256):
    """Per detection d: (d, row slice, column slice, bool mask inside its box), resampled only over
    the pixels whose centre lies in the box (an empty box gives an empty crop)."""
    k, hp, wp = logits.shape
    H, W = output_hw
    dev, dt = logits.device, logits.dtype
    y0, y1, ay = _bilinear_taps(H, float(input_hw[0]), hp, proto_stride, dev)
    x0, x1, ax = _bilinear_taps(W, float(input_hw[1]), wp, proto_stride, dev)
    ay, ax = ay.to(dt), ax.to(dt)
    b = boxes_out.to(torch.float64)
    # pixel x is in the box when x1 <= x + 0.5 <= x2: x from ceil(x1 - 0.5) to floor(x2 - 0.5)
    xs = torch.ceil(b[:, 0] - 0.5).clamp(min=0).long().tolist()
    xe = (torch.floor(b[:, 2] - 0.5).clamp(max=W - 1).long() + 1).tolist()
    ys = torch.ceil(b[:, 1] - 0.5).clamp(min=0).long().tolist()
    ye = (torch.floor(b[:, 3] - 0.5).clamp(max=H - 1).long() + 1).tolist()
    for d in range(k):
        if xs[d] >= xe[d] or ys[d] >= ye[d]:
            yield d, slice(ys[d], ys[d]), slice(xs[d], xs[d]), torch.zeros((0, 0), dtype=torch.bool, device=dev)
            continue
        cx, cy = slice(xs[d], xe[d]), slice(ys[d], ye[d])
        a = ax[cx]
        cols = logits[d][:, x0[cx]] * (1 - a) + logits[d][:, x1[cx]] * a  # (Hp, w): columns first, as dense
        crop = torch.empty((ye[d] - ys[d], xe[d] - xs[d]), dtype=torch.bool, device=dev)
        for r in range(ys[d], ye[d], rows_per_block):  # blocks of rows bound the float temporaries
            rr = slice(r, min(r + rows_per_block, ye[d]))
            a = ay[rr, None]
            torch.gt(cols[y0[rr]] * (1 - a) + cols[y1[rr]] * a, 0, out=crop[r - ys[d]:rr.stop - ys[d]])
        yield d, cy, cx, crop


def _assemble_in_boxes(logits: Tensor, boxes_out: Tensor, input_hw: Tuple[int, int], output_hw: Tuple[int, int],
                       proto_stride: int, out: Tensor) -> Tensor:
    """:func:`assemble_masks` computed only over the pixels whose centre lies in each box."""
    out.zero_()
    for d, cy, cx, crop in _masks_in_boxes(logits, boxes_out, input_hw, output_hw, proto_stride):
        if crop.numel():
            out[d, cy, cx] = crop
    return out

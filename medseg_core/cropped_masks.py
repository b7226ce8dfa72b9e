"""Instance masks kept cropped to their boxes and run-length encoded until they are drawn.

A full ``(N, H, W)`` bool mask tensor of an 8000 x 6000 frame costs 48 MB per detection; even
cropped to their boxes, a hundred large detections need gigabytes. :class:`CroppedMasks` keeps
each mask only inside its integer box, compressed as a COCO RLE (pycocotools), so what is kept
grows with the masks' outlines, and one mask at a time is decoded when it is drawn. Instance
models return it as ``pred_masks`` when ``TEST.MASK_OUTPUT`` is ``"boxes"`` (the demo sets it);
evaluators keep the default ``"full"``. It behaves as an ``Instances`` field (``len``, indexing
with ints / slices / bool or index tensors, ``to``, ``cat``); :meth:`dense` gives the full tensor.
"""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

__all__ = ["CroppedMasks", "mask_crop"]


def _encode(crop) -> Dict:
    import pycocotools.mask as mask_util

    arr = crop.detach().cpu().numpy() if isinstance(crop, Tensor) else np.asarray(crop)
    return mask_util.encode(np.asfortranarray(arr.astype(np.uint8)))


class CroppedMasks:
    """N masks; mask i is the RLE ``rles[i]`` (size h_i x w_i) placed at ``offsets[i] = (x0, y0)``.

    Build with :meth:`from_crops` (bool arrays / tensors, encoded one by one).
    """

    def __init__(self, rles: Sequence[Dict], offsets: Tensor, image_size: Tuple[int, int]) -> None:
        self.rles: List[Dict] = list(rles)
        self.offsets = offsets.reshape(-1, 2).long()
        self.image_size = (int(image_size[0]), int(image_size[1]))
        if len(self.rles) != self.offsets.shape[0]:
            raise ValueError(f"{len(self.rles)} masks but {self.offsets.shape[0]} offsets")

    @classmethod
    def from_crops(cls, crops: Sequence, offsets: Sequence[Tuple[int, int]], image_size: Tuple[int, int],
                   device=None) -> "CroppedMasks":
        return cls([_encode(c) for c in crops],
                   torch.tensor(list(offsets), dtype=torch.long, device=device).reshape(-1, 2), image_size)

    def __len__(self) -> int:
        return len(self.rles)

    @property
    def shape(self) -> Tuple[int, int, int]:
        return (len(self), *self.image_size)

    @property
    def device(self) -> torch.device:
        return self.offsets.device

    def crop(self, i: int) -> Tuple[np.ndarray, int, int]:
        """Mask ``i`` as (bool crop, x0, y0)."""
        import pycocotools.mask as mask_util

        h, w = self.rles[i]["size"]
        x0, y0 = self.offsets[i].tolist()
        arr = mask_util.decode(self.rles[i]).astype(bool) if h and w else np.zeros((h, w), bool)
        return arr, x0, y0

    def __getitem__(self, item: Union[int, slice, Tensor, Sequence[int]]) -> "CroppedMasks":
        if isinstance(item, int):
            item = [item]
        if isinstance(item, slice):
            idx = list(range(len(self)))[item]
        else:
            t = torch.as_tensor(item)
            idx = torch.nonzero(t).flatten().tolist() if t.dtype == torch.bool else t.flatten().tolist()
        return CroppedMasks([self.rles[i] for i in idx], self.offsets[idx] if idx else self.offsets[:0],
                            self.image_size)

    def to(self, *args, **kwargs) -> "CroppedMasks":
        return CroppedMasks(self.rles, self.offsets.to(*args, **kwargs), self.image_size)

    @classmethod
    def cat(cls, items: Sequence["CroppedMasks"]) -> "CroppedMasks":
        if not items:
            raise ValueError("CroppedMasks.cat needs at least one item")
        return cls([r for m in items for r in m.rles], torch.cat([m.offsets for m in items]), items[0].image_size)

    def area(self) -> Tensor:
        import pycocotools.mask as mask_util

        return torch.tensor([int(mask_util.area(r)) for r in self.rles], dtype=torch.int64)

    def dense(self) -> Tensor:
        """The (N, H, W) bool tensor (allocates N x H x W)."""
        h, w = self.image_size
        out = torch.zeros((len(self), h, w), dtype=torch.bool, device=self.device)
        for i in range(len(self)):
            c, x0, y0 = self.crop(i)
            out[i, y0:y0 + c.shape[0], x0:x0 + c.shape[1]] = torch.from_numpy(c)
        return out

    def __repr__(self) -> str:
        return f"CroppedMasks(num={len(self)}, image_size={self.image_size})"


def _tight(c: np.ndarray, x0: int, y0: int) -> Tuple[np.ndarray, int, int]:
    rows, cols = c.any(1), c.any(0)
    if not rows.any():
        return c[:0, :0], x0, y0
    r0, r1 = int(np.argmax(rows)), len(rows) - int(np.argmax(rows[::-1]))
    c0, c1 = int(np.argmax(cols)), len(cols) - int(np.argmax(cols[::-1]))
    return c[r0:r1, c0:c1], x0 + c0, y0 + r0


def mask_crop(masks, i: int) -> Tuple[np.ndarray, int, int]:
    """Mask ``i`` of a (N, H, W) tensor / array or :class:`CroppedMasks` as (bool crop, x0, y0): the
    smallest rectangle holding all its pixels (an empty mask gives a 0 x 0 crop)."""
    if isinstance(masks, CroppedMasks):
        return _tight(*masks.crop(i))
    m = masks[i]
    m = m.detach().cpu().numpy() if isinstance(m, Tensor) else np.asarray(m)
    return _tight(m.astype(bool, copy=False), 0, 0)

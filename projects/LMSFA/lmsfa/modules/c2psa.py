"""C2PSA: the attention block YOLO11 puts after SPPF (Ultralytics YOLO11; position-sensitive
attention "PSA" from YOLOv10, Wang et al. 2024).

* :class:`PSAAttention` — multi-head self-attention over the H*W positions of a feature map,
  with 1x1 convolutions as projections: ``qkv`` (CB 1x1, C -> C + 2 * heads * key_dim, no
  activation), per head q, k of ``key_dim = head_dim * attn_ratio`` channels and v of
  ``head_dim = C / heads`` channels, softmax(q^T k / sqrt(key_dim)), plus a positional term
  ``pe`` (depthwise CB 3x3 on v), then ``proj`` (CB 1x1).
* :class:`PSABlock` — x + attention(x), then x + FFN(x) with FFN = CBS 1x1 (C -> 2C) -> CB 1x1.
* :class:`C2PSA` — CSP wrapper: cv1 (CBS 1x1, C1 -> 2c), the second half through ``n`` PSA
  blocks (heads = c / 64), concatenation, cv2 (CBS 1x1, 2c -> C1); c = C1 * e.

At n-scale (C = 256, c = 128, 2 heads of 64 channels, key_dim 32) C2PSA has 249,728 params.
FLOP conventions: the attention's matrix products are functional calls, which the legacy-thop
convention (Ultralytics' GFLOPs) does not count; fvcore counts them.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from medseg_core.errors import here

from .conv import ConvBNAct

__all__ = ["PSAAttention", "PSABlock", "C2PSA"]


class PSAAttention(nn.Module):
    """Multi-head self-attention on a (B, C, H, W) map (Ultralytics' ``Attention``)."""

    def __init__(self, dim: int, num_heads: int = 8, attn_ratio: float = 0.5) -> None:
        super().__init__()
        if num_heads < 1 or dim % num_heads:
            raise ValueError(here() + f"{dim} channels cannot be split into {num_heads} heads")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.key_dim = int(self.head_dim * attn_ratio)
        self.scale = self.key_dim ** -0.5
        h = dim + 2 * self.key_dim * num_heads
        self.qkv = ConvBNAct(dim, h, 1, act=False)
        self.proj = ConvBNAct(dim, dim, 1, act=False)
        self.pe = ConvBNAct(dim, dim, 3, 1, g=dim, act=False)

    def forward(self, x: Tensor) -> Tensor:
        b, c, hh, ww = x.shape
        n = hh * ww
        q, k, v = self.qkv(x).view(b, self.num_heads, 2 * self.key_dim + self.head_dim, n).split(
            [self.key_dim, self.key_dim, self.head_dim], dim=2
        )
        attn = ((q.transpose(-2, -1) @ k) * self.scale).softmax(dim=-1)  # (B, heads, N, N)
        y = (v @ attn.transpose(-2, -1)).view(b, c, hh, ww) + self.pe(v.reshape(b, c, hh, ww))
        return self.proj(y)


class PSABlock(nn.Module):
    """Attention and a 2x feed-forward network, each with a residual connection."""

    def __init__(self, c: int, attn_ratio: float = 0.5, num_heads: int = 4, shortcut: bool = True) -> None:
        super().__init__()
        self.attn = PSAAttention(c, num_heads=num_heads, attn_ratio=attn_ratio)
        self.ffn = nn.Sequential(ConvBNAct(c, 2 * c, 1), ConvBNAct(2 * c, c, 1, act=False))
        self.add = shortcut

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(x) if self.add else self.attn(x)
        return x + self.ffn(x) if self.add else self.ffn(x)


class C2PSA(nn.Module):
    """CSP block whose second half goes through ``n`` PSA blocks (input and output C1 channels)."""

    def __init__(self, c1: int, c2: int, n: int = 1, e: float = 0.5) -> None:
        super().__init__()
        if c1 != c2:
            raise ValueError(here() + f"C2PSA keeps its width, got {c1} -> {c2} channels")
        self.c = int(c1 * e)
        self.cv1 = ConvBNAct(c1, 2 * self.c, 1, 1)
        self.cv2 = ConvBNAct(2 * self.c, c1, 1)
        self.m = nn.Sequential(*(PSABlock(self.c, attn_ratio=0.5, num_heads=max(self.c // 64, 1))
                                 for _ in range(n)))

    def forward(self, x: Tensor) -> Tensor:
        a, b = self.cv1(x).split((self.c, self.c), dim=1)
        return self.cv2(torch.cat((a, self.m(b)), 1))

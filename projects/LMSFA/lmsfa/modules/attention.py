"""Attention comparators of the paper's Table VI (§IV-F, "Attention mechanism selection").

LMSF-A puts one attention module in the token mixer of every RepViT block of C2f-Pro (paper
§III-B); Table VI swaps it for SE [2], AFGCAttention [3], CPCA [4], SimAM [5] or EMA [6]. The
paper gives no definitions, so each follows its original publication / the stock module of the
community code base the released model comes from (docs/lmsfa.md, "Sources"):

* :class:`SqueezeExcite` — SE as used inside RepViT blocks (the attention C2f-Pro replaces):
  GAP -> 1x1 conv C -> make_divisible(C/4, 8) -> ReLU -> 1x1 conv -> sigmoid gate.
* :class:`SimAM` — parameter-free energy-based attention (lambda = 1e-4).
* :class:`CPCA` — channel-prior convolutional attention: 1x1 conv + GELU, channel attention
  (shared MLP on avg- and max-pooled vectors), multi-scale depthwise strip convolutions
  (5x5, then 1x7/7x1, 1x11/11x1, 1x21/21x1), the same 1x1 conv reused three times.
* :class:`AFGCAttention` — adaptive fine-grained channel attention: a 1-D conv (ECA kernel
  size) and a 1x1 conv give two channel descriptors whose outer products are mixed with a
  learnable sigmoid weight, then re-encoded by the same 1-D conv.
* EMA lives in :mod:`.ema_attention`.

:func:`build_attention` maps the config names of MODEL.LMSFA.ATTENTION to modules.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .ema_attention import EMA
from medseg_core.errors import ConfigError, here

__all__ = ["SqueezeExcite", "SimAM", "CPCA", "AFGCAttention", "build_attention", "ATTENTION_NAMES"]

ATTENTION_NAMES = ("none", "SE", "SimAM", "CPCA", "AFGC", "EMA")


class SqueezeExcite(nn.Module):
    """SE with reduction ratio 0.25 rounded to a multiple of 8 (RepViT's SE)."""

    def __init__(self, channels: int, rd_ratio: float = 0.25, rd_divisor: int = 8) -> None:
        super().__init__()
        # timm's rounding (nearest multiple, at least one divisor), as RepViT's SE uses
        rd = max(rd_divisor, int(channels * rd_ratio + rd_divisor / 2) // rd_divisor * rd_divisor)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, rd, 1)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(rd, channels, 1)
        self.gate = nn.Sigmoid()

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gate(self.fc2(self.act(self.fc1(self.pool(x)))))


class SimAM(nn.Module):
    """SimAM: x * sigmoid((x - mu)^2 / (4 (var + lambda)) + 0.5), statistics over H x W."""

    def __init__(self, e_lambda: float = 1e-4) -> None:
        super().__init__()
        self.e_lambda = e_lambda
        self.gate = nn.Sigmoid()

    def forward(self, x: Tensor) -> Tensor:
        n = x.shape[2] * x.shape[3] - 1
        d = (x - x.mean(dim=(2, 3), keepdim=True)).pow(2)
        y = d / (4 * (d.sum(dim=(2, 3), keepdim=True) / max(n, 1) + self.e_lambda)) + 0.5
        return x * self.gate(y)


class _CPCAChannel(nn.Module):
    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.fc2 = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        a = torch.sigmoid(self.fc2(F.relu(self.fc1(F.adaptive_avg_pool2d(x, 1)))))
        m = torch.sigmoid(self.fc2(F.relu(self.fc1(F.adaptive_max_pool2d(x, 1)))))
        return x * (a + m)


class CPCA(nn.Module):
    """Channel Prior Convolutional Attention (Huang et al., 2024), channel reduction 4."""

    def __init__(self, channels: int, reduce: int = 4) -> None:
        super().__init__()
        c = channels
        self.ca = _CPCAChannel(c, max(c // reduce, 1))
        self.dconv5_5 = nn.Conv2d(c, c, 5, padding=2, groups=c)
        self.dconv1_7 = nn.Conv2d(c, c, (1, 7), padding=(0, 3), groups=c)
        self.dconv7_1 = nn.Conv2d(c, c, (7, 1), padding=(3, 0), groups=c)
        self.dconv1_11 = nn.Conv2d(c, c, (1, 11), padding=(0, 5), groups=c)
        self.dconv11_1 = nn.Conv2d(c, c, (11, 1), padding=(5, 0), groups=c)
        self.dconv1_21 = nn.Conv2d(c, c, (1, 21), padding=(0, 10), groups=c)
        self.dconv21_1 = nn.Conv2d(c, c, (21, 1), padding=(10, 0), groups=c)
        self.conv = nn.Conv2d(c, c, 1)
        self.act = nn.GELU()

    def forward(self, x: Tensor) -> Tensor:
        x = self.ca(self.act(self.conv(x)))
        x0 = self.dconv5_5(x)
        x1 = self.dconv7_1(self.dconv1_7(x0))
        x2 = self.dconv11_1(self.dconv1_11(x0))
        x3 = self.dconv21_1(self.dconv1_21(x0))
        spatial = self.conv(x0 + x1 + x2 + x3)
        return self.conv(spatial * x)


class AFGCAttention(nn.Module):
    """Adaptive Fine-Grained Channel attention (ECA kernel k = odd(|log2 C + b| / gamma))."""

    def __init__(self, channels: int, b: int = 1, gamma: int = 2, mix_init: float = -0.8) -> None:
        super().__init__()
        t = int(abs((math.log(channels, 2) + b) / gamma))
        k = t if t % 2 else t + 1
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.conv1 = nn.Conv1d(1, 1, kernel_size=k, padding=k // 2, bias=False)
        self.fc = nn.Conv2d(channels, channels, 1)
        self.mix_w = nn.Parameter(torch.tensor([float(mix_init)]))

    def forward(self, x: Tensor) -> Tensor:
        v = self.pool(x)                                          # (B, C, 1, 1)
        d1 = self.conv1(v.flatten(2).transpose(1, 2))             # (B, 1, C): local (1-D conv)
        d2 = self.fc(v).flatten(2).transpose(1, 2)                # (B, 1, C): global (1x1 conv)
        # column / row sums of the two outer products d1^T d2 and d2^T d1
        o1 = torch.sigmoid((d1.transpose(1, 2) @ d2).sum(1))      # (B, C)
        o2 = torch.sigmoid((d2.transpose(1, 2) @ d1).sum(1))
        m = torch.sigmoid(self.mix_w)
        mixed = o1 * m + o2 * (1 - m)
        w = torch.sigmoid(self.conv1(mixed.unsqueeze(1)))         # (B, 1, C)
        return x * w.transpose(1, 2).unsqueeze(-1)


def build_attention(name: str, channels: int, ema_factor: int = 8) -> Optional[nn.Module]:
    """Attention module for the RVB token mixer, or None for "none"."""
    key = (name or "none").strip()
    if key.lower() == "none":
        return None
    table = {
        "SE": lambda: SqueezeExcite(channels),
        "SimAM": lambda: SimAM(),
        "CPCA": lambda: CPCA(channels),
        "AFGC": lambda: AFGCAttention(channels),
        "EMA": lambda: EMA(channels, ema_factor),
    }
    if key not in table:
        raise ConfigError(
            here() + f"unknown attention '{name}' (MODEL.LMSFA.ATTENTION); "
            f"choose one of {list(ATTENTION_NAMES)}"
        )
    return table[key]()

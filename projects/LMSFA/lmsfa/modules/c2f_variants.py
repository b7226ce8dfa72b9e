"""C2f comparators of the paper's Table VII (§IV-F, "Backbone variants"): C2f-Faster [21],
C2f-Star [19] and C2f-ContextGuided [20]. Each keeps the C2f skeleton and swaps the inner block,
as the community code base the released model comes from does (docs/lmsfa.md, "Sources"):

* :class:`FasterBlock` (FasterNet, CVPR 2023): partial 3x3 conv on 1/4 of the channels, then an
  MLP (1x1 CBS c -> 2c, 1x1 conv 2c -> c), residual with drop-path 0.1.
* :class:`StarBlock` (StarNet "Rewrite the stars", CVPR 2024): 7x7 depthwise Conv-BN, two 1x1
  expansions (x3), ReLU6(f1) * f2 ("star" product), 1x1 Conv-BN back, 7x7 depthwise conv, residual.
* :class:`ContextGuidedBlock` (CGNet, TIP 2020): 1x1 CBS to c/2, local 3x3 and dilated (d = 2)
  surrounding depthwise convs, concat, BN + SiLU, global SE-style refinement (reduction 16), residual.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .c2f import C2f
from .conv import ConvBNAct, autopad

__all__ = ["FasterBlock", "StarBlock", "ContextGuidedBlock", "C2fFaster", "C2fStar", "C2fContextGuided"]


class _DropPath(nn.Module):
    """Stochastic depth per sample (identity in eval mode)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p <= 0.0:
            return x
        keep = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(1 - self.p)
        return x * keep / (1 - self.p)


class FasterBlock(nn.Module):
    """FasterNet block on ``dim`` channels (partial conv ratio 1/n_div, MLP ratio 2)."""

    def __init__(self, dim: int, n_div: int = 4, mlp_ratio: int = 2, drop_path: float = 0.1) -> None:
        super().__init__()
        self.dim_conv = dim // n_div
        self.partial_conv3 = nn.Conv2d(self.dim_conv, self.dim_conv, 3, 1, 1, bias=False)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(ConvBNAct(dim, hidden, 1), nn.Conv2d(hidden, dim, 1, bias=False))
        self.drop_path = _DropPath(drop_path)

    def forward(self, x: Tensor) -> Tensor:
        x1, x2 = torch.split(x, [self.dim_conv, x.shape[1] - self.dim_conv], dim=1)
        y = torch.cat((self.partial_conv3(x1), x2), 1)
        return x + self.drop_path(self.mlp(y))


class StarBlock(nn.Module):
    """StarNet block on ``dim`` channels (expansion ``mlp_ratio`` = 3)."""

    def __init__(self, dim: int, mlp_ratio: int = 3) -> None:
        super().__init__()
        self.dwconv = ConvBNAct(dim, dim, 7, g=dim, act=False)
        self.f1 = nn.Conv2d(dim, mlp_ratio * dim, 1)
        self.f2 = nn.Conv2d(dim, mlp_ratio * dim, 1)
        self.g = ConvBNAct(mlp_ratio * dim, dim, 1, act=False)
        self.dwconv2 = nn.Conv2d(dim, dim, 7, 1, 3, groups=dim)
        self.act = nn.ReLU6()

    def forward(self, x: Tensor) -> Tensor:
        y = self.dwconv(x)
        y = self.act(self.f1(y)) * self.f2(y)
        return x + self.dwconv2(self.g(y))


class _FGlo(nn.Module):
    """CGNet's global context refinement (SE with Linear layers, biases)."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        hidden = max(channels // reduction, 1)
        self.fc = nn.Sequential(
            nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, channels), nn.Sigmoid()
        )

    def forward(self, x: Tensor) -> Tensor:
        b, c = x.shape[:2]
        return x * self.fc(self.pool(x).view(b, c)).view(b, c, 1, 1)


class ContextGuidedBlock(nn.Module):
    """CGNet context-guided block, c -> c (dilation 2, reduction 16, residual)."""

    def __init__(self, dim: int, dilation: int = 2, reduction: int = 16) -> None:
        super().__init__()
        n = dim // 2
        self.conv1x1 = ConvBNAct(dim, n, 1)
        self.f_loc = nn.Conv2d(n, n, 3, padding=1, groups=n)
        self.f_sur = nn.Conv2d(n, n, 3, padding=autopad(3, None, dilation), dilation=dilation, groups=n)
        self.bn_act = nn.Sequential(nn.BatchNorm2d(2 * n), nn.SiLU(inplace=True))
        self.f_glo = _FGlo(2 * n, reduction)

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv1x1(x)
        y = self.bn_act(torch.cat([self.f_loc(y), self.f_sur(y)], 1))
        return x + self.f_glo(y)


class C2fFaster(C2f):
    """C2f with FasterNet blocks."""

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = False, e: float = 0.5) -> None:
        super().__init__(c1, c2, n, shortcut, e=e, block_fn=FasterBlock)


class C2fStar(C2f):
    """C2f with StarNet blocks."""

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = False, e: float = 0.5) -> None:
        super().__init__(c1, c2, n, shortcut, e=e, block_fn=StarBlock)


class C2fContextGuided(C2f):
    """C2f with CGNet context-guided blocks."""

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = False, e: float = 0.5) -> None:
        super().__init__(c1, c2, n, shortcut, e=e, block_fn=ContextGuidedBlock)

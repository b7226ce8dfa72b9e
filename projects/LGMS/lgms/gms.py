"""GMS block: sparse hybrid Transformer-conv global multiscale block (LGMSNet Sec. 3.2, Eqs. 5-8).

Paper, as realised by the authors' ``MobileViTBlocktem_CT`` (the block behind the published
parameter and FLOP counts):

1. *Local*: 3x3 conv (dim -> C, no bias) -> BN -> SiLU, then 1x1 conv -> BN -> SiLU ("followed
   by channel expansion via 1x1 convolution to obtain enriched features X^E"). The code does not
   widen here (C -> C); the width change happens in the 3x3.
2. *Split* X^E along channels into X^T (transformer, C_T) and X^C (conv, C_C) (Eq. 5). The
   paper's ablation (Fig. 7) picks T:C = 3:1 (96/32, or 48/16 for the last block).
3. *Conv branch* (Eq. 7, ``DWConv(X^C)``): depthwise 3x3 -> BN -> ReLU -> depthwise 1x1 -> BN,
   plus an identity residual (code). This branch keeps BatchNorm in 3D too, as the authors' code.
4. *Transformer branch* (Eq. 6): MobileViT-style sparse unfold with patch p = 2: the map is
   rearranged into p^nd groups, one per position inside a p x p (x p) patch, each holding
   N = H*W/p^2 tokens of width C_T; one pre-LN transformer layer (MHSA with ``heads`` x
   ``dim_head`` = 4 x 8, qkv without bias, output projection; pre-LN FFN C_T -> mlp_dim -> C_T
   with SiLU) attends globally *within* each group (a dilated global attention, no positional
   encoding), then the tokens are folded back. Eq. 6 writes the reshape as
   ``R^{C2*p*p x H/p*W/p x 1}``, i.e. the same gathering of "the corresponding positions of
   each block"; its axis order is ambiguous, so the code's MobileViT layout is used.
5. *Fuse* (Eq. 8): concat(T, C) -> 1x1 conv-BN-SiLU -> concat with the block input X ->
   3x3 conv-BN-SiLU to C. No additive outer residual.

``mlp_dim`` is 2x the block's output width in the released model (256, and 128 for the last
block). In 3D (``nd=3``) the unfold is 2x2x2 (8 groups) and the convs of steps 1 and 5 use
InstanceNorm (``norm="IN"``), as ``MobileViTBlocktem_CT3D``.

Input sizes must be multiples of ``patch`` at this block's resolution; the network's
``size_divisibility`` (32 for the 2D LGMSNet) guarantees that, and a clear error is raised
otherwise.
"""
from __future__ import annotations

import contextlib
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .layers import ConvNormAct, conv_cls, make_norm

__all__ = ["Attention", "explicit_attention", "FeedForward", "TransformerLayer", "DWConvBranch", "GMSBlock", "unfold_groups", "fold_groups"]


class Attention(nn.Module):
    """Pre-LN multi-head self-attention over the last-but-one axis (tokens).

    ``softmax(q k^T / sqrt(dim_head)) v`` runs through PyTorch's fused
    ``scaled_dot_product_attention`` (less memory: the N x N maps of the stride-4 GMS block are
    16 x 1024^2 per image). With ``explicit=True`` (see :func:`explicit_attention`) it runs as
    the authors wrote it, ``matmul -> nn.Softmax -> matmul``, which hook- and trace-based FLOP
    counters can see (thop counts the ``nn.Softmax`` module, fvcore the two matmuls); both paths
    compute the same function.
    """

    def __init__(self, dim: int, heads: int = 4, dim_head: int = 8):
        super().__init__()
        inner = heads * dim_head
        self.heads, self.dim_head = heads, dim_head
        self.scale = dim_head**-0.5
        self.norm = nn.LayerNorm(dim)
        self.to_qkv = nn.Linear(dim, inner * 3, bias=False)
        self.attend = nn.Softmax(dim=-1)
        self.to_out = nn.Linear(inner, dim)
        self.explicit = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, G, N, dim) with G token groups attended independently
        b, g, n, _ = x.shape
        qkv = self.to_qkv(self.norm(x)).view(b, g, n, 3, self.heads, self.dim_head)
        q, k, v = qkv.permute(3, 0, 1, 4, 2, 5).unbind(0)  # each (B, G, heads, N, dim_head)
        if self.explicit:
            out = torch.matmul(self.attend(torch.matmul(q, k.transpose(-1, -2)) * self.scale), v)
        else:
            # 4D (B*G, heads, N, dim_head) inputs: the ONNX exporter translates only 4D attention
            out = F.scaled_dot_product_attention(q.flatten(0, 1), k.flatten(0, 1), v.flatten(0, 1),
                                                 scale=self.scale).view(b, g, self.heads, n, self.dim_head)
        out = out.permute(0, 1, 3, 2, 4).reshape(b, g, n, self.heads * self.dim_head)
        return self.to_out(out)


@contextlib.contextmanager
def explicit_attention(model: nn.Module):
    """Within the block, every :class:`Attention` of ``model`` uses the explicit path."""
    mods = [m for m in model.modules() if isinstance(m, Attention)]
    old = [m.explicit for m in mods]
    for m in mods:
        m.explicit = True
    try:
        yield model
    finally:
        for m, o in zip(mods, old):
            m.explicit = o


class FeedForward(nn.Sequential):
    """Pre-LN MLP: LayerNorm -> Linear(dim, hidden) -> SiLU -> Linear(hidden, dim)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__(nn.LayerNorm(dim), nn.Linear(dim, hidden), nn.SiLU(), nn.Linear(hidden, dim))


class TransformerLayer(nn.Module):
    """x + MHSA(LN(x)), then x + FFN(LN(x))."""

    def __init__(self, dim: int, heads: int, dim_head: int, mlp_dim: int):
        super().__init__()
        self.attn = Attention(dim, heads, dim_head)
        self.ff = FeedForward(dim, mlp_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.attn(x) + x
        return self.ff(x) + x


class DWConvBranch(nn.Module):
    """Conv branch of the GMS block: x + BN(dw1x1(ReLU(BN(dw3x3(x)))))."""

    def __init__(self, channels: int, nd: int = 2, norm: str = "BN"):
        super().__init__()
        conv = conv_cls(nd)
        self.body = nn.Sequential(
            conv(channels, channels, 3, 1, 1, groups=channels, bias=False),
            make_norm(norm, channels, nd),
            nn.ReLU(inplace=True),
            conv(channels, channels, 1, 1, 0, groups=channels, bias=False),
            make_norm(norm, channels, nd),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + x


def unfold_groups(x: torch.Tensor, p: int) -> torch.Tensor:
    """(B, C, s1*p, ..., snd*p) -> (B, p^nd, s1*...*snd, C): one token group per in-patch position.

    Same layout as MobileViT's ``rearrange('b d (h ph) (w pw) -> b (ph pw) (h w) d')``.
    """
    b, c, *size = x.shape
    nd = len(size)
    if any(s % p for s in size):
        raise ValueError(
            f"GMS block: feature map {tuple(size)} is not divisible by the patch size {p}; the "
            f"network input must be a multiple of its size_divisibility (pad or resize the image)"
        )
    grid = [s // p for s in size]
    shape = [b, c]
    for g in grid:
        shape += [g, p]
    x = x.reshape(shape)
    # axes: 0 b, 1 c, then (grid_i, patch_i) pairs at 2+2i, 3+2i
    perm = [0] + [3 + 2 * i for i in range(nd)] + [2 + 2 * i for i in range(nd)] + [1]
    n = 1
    for g in grid:
        n *= g
    return x.permute(perm).reshape(b, p**nd, n, c)


def fold_groups(x: torch.Tensor, size: Sequence[int], p: int) -> torch.Tensor:
    """Inverse of :func:`unfold_groups` for a map of spatial ``size``."""
    b, _, _, c = x.shape
    nd = len(size)
    grid = [s // p for s in size]
    x = x.reshape([b] + [p] * nd + grid + [c])
    # axes: 0 b, 1..nd patch_i, nd+1..2nd grid_i, 2nd+1 c  ->  b, c, (grid_i, patch_i)...
    perm = [0, 2 * nd + 1]
    for i in range(nd):
        perm += [nd + 1 + i, 1 + i]
    return x.permute(perm).reshape([b, c] + list(size))


class GMSBlock(nn.Module):
    """Hybrid transformer/conv block; see the module docstring (Eqs. 5-8)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        split: Sequence[int] = (96, 32),
        mlp_dim: int = 256,
        heads: int = 4,
        dim_head: int = 8,
        depth: int = 1,
        patch: int = 2,
        nd: int = 2,
        norm: str = "BN",
        branch_norm: str = "BN",
    ):
        super().__init__()
        c_t, c_c = int(split[0]), int(split[1])
        if c_t + c_c != out_channels or c_t <= 0 or c_c <= 0:
            raise ValueError(
                f"GMSBlock: split {list(split)} must be two positive widths summing to the block "
                f"width {out_channels}"
            )
        self.split = (c_t, c_c)
        self.patch = patch
        self.local = nn.Sequential(
            ConvNormAct(in_channels, out_channels, 3, nd, norm, nn.SiLU, bias=False),
            ConvNormAct(out_channels, out_channels, 1, nd, norm, nn.SiLU, bias=False),
        )
        self.conv_branch = DWConvBranch(c_c, nd, branch_norm)
        self.transformer = nn.Sequential(*[TransformerLayer(c_t, heads, dim_head, mlp_dim) for _ in range(depth)])
        self.fuse = ConvNormAct(out_channels, out_channels, 1, nd, norm, nn.SiLU, bias=False)
        self.out = ConvNormAct(in_channels + out_channels, out_channels, 3, nd, norm, nn.SiLU, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.local(x)  # X^E
        xt, xc = torch.split(y, self.split, dim=1)  # Eq. 5
        xc = self.conv_branch(xc)
        size = xt.shape[2:]
        xt = fold_groups(self.transformer(unfold_groups(xt, self.patch)), size, self.patch)  # Eq. 6
        y = self.fuse(torch.cat((xt, xc), dim=1))  # Eq. 7 + Conv_1
        return self.out(torch.cat((y, x), dim=1))  # Eq. 8

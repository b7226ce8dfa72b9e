"""Builds the CSP block of a backbone stage / neck node from its config name (paper Table III,
V and VII switch the block): "C2f" (YOLOv8), "C2f-Pro" (LMSF-A), "C2f-Faster", "C2f-Star",
"C2f-ContextGuided". The attention name only matters for C2f-Pro (Table VI)."""
from __future__ import annotations

from torch import nn

from .c2f import C2f
from .c2f_pro import C2fPro
from .c2f_variants import C2fContextGuided, C2fFaster, C2fStar
from medseg_core.errors import ConfigError, here

__all__ = ["BLOCK_NAMES", "build_csp_block"]

BLOCK_NAMES = ("C2f", "C2f-Pro", "C2f-Faster", "C2f-Star", "C2f-ContextGuided")


def build_csp_block(kind: str, c1: int, c2: int, n: int, shortcut: bool,
                    attention: str = "none", ema_factor: int = 8) -> nn.Module:
    if kind == "C2f":
        return C2f(c1, c2, n, shortcut)
    if kind == "C2f-Pro":
        return C2fPro(c1, c2, n, shortcut, attention=attention, ema_factor=ema_factor)
    if kind == "C2f-Faster":
        return C2fFaster(c1, c2, n, shortcut)
    if kind == "C2f-Star":
        return C2fStar(c1, c2, n, shortcut)
    if kind == "C2f-ContextGuided":
        return C2fContextGuided(c1, c2, n, shortcut)
    raise ConfigError(
        here() + f"unknown block '{kind}' (MODEL.LMSFA.BACKBONE_BLOCK / NECK_BLOCK); "
        f"choose one of {list(BLOCK_NAMES)}"
    )

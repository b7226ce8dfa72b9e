"""C2f-Pro: C2f whose inner blocks are RepViT blocks with EMA attention (paper §III-B, eq. 6-9).

C2f-Pro keeps the C2f skeleton (cv1 split into shortcut/transform halves, eq. 6; concatenation of
all intermediate outputs, cv2) and replaces each bottleneck by an RVB whose token mixer carries
EMA instead of SE (eq. 7-9; the community ``C2f_RVB_EMA`` the released YAML names ``C2f_Pro``,
docs/lmsfa.md, "Sources"). The ``shortcut`` flag of C2f is ignored: RVB has its own residuals.

Choices where the paper is vague:
* eq. 7 says "three RVB-EMA units"; the built n-scale model uses the depth-scaled YAML repeats
  (1/2/2/1 in the backbone, 1 in the neck; docs/lmsfa.md, choice #3) — that is ``n`` here.
* "we instantiate EMA at deeper strides" (§III-B): the attention is configurable per block
  (``attention`` = "none" gives plain C2f_RVB); the backbone/neck decide where it goes
  (MODEL.LMSFA.ATTENTION_STAGES; default backbone strides 16/32, docs/lmsfa.md, choice #2).

Params = 2c*c1 + 4c + (2+n)c*c2 + 2*c2 + n*(4c^2 + 21c + attention), c = c2/2;
EMA adds 10(c/8)^2 + 4(c/8) per block.
"""
from __future__ import annotations

from torch import nn

from .attention import build_attention
from .c2f import C2f
from .repvit import RepViTBlock

__all__ = ["C2fPro"]


class C2fPro(C2f):
    """C2f with ``n`` RVB blocks carrying ``attention`` ("EMA", "SE", "SimAM", "CPCA", "AFGC", "none")."""

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = False, e: float = 0.5,
                 attention: str = "EMA", ema_factor: int = 8) -> None:
        def block(c: int) -> nn.Module:
            return RepViTBlock(c, build_attention(attention, c, ema_factor))

        super().__init__(c1, c2, n, shortcut, e=e, block_fn=block)
        self.attention = attention

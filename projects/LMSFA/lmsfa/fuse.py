"""Deployment re-parameterisation (paper §III-B: "structural re-parameterization collapses the
multi-branch design into a single path at inference"; docs/lmsfa.md, "Modules").

:func:`fuse_model` walks a module tree and calls ``switch_to_deploy()`` on every module that
defines it, without descending further into that module (it fuses its own children):

* ``ConvBNAct`` / ``Conv2dBN``: BatchNorm folded into the conv (which gains a bias);
* ``RepVGGDW``: BN(DW3x3) + DW1x1 + identity + outer BN -> one biased 3x3 depthwise conv;
* ``ScaleSequenceFusion``: BatchNorm3d folded into its 1x1x1 Conv3d.

It also folds any remaining ``Conv2d`` directly followed by ``BatchNorm2d`` inside an
``nn.Sequential``. GroupNorm (LMSH, EMA) depends on the input and is kept. Folding uses the
BatchNorm running statistics, so the fused model equals the unfused one in eval mode.
"""
from __future__ import annotations

import torch
from torch import nn

from .modules.conv import fold_bn

__all__ = ["fuse_model"]


@torch.no_grad()
def _fuse_sequential(seq: nn.Sequential) -> None:
    keys = list(seq._modules.keys())
    for a, b in zip(keys, keys[1:]):
        conv, bn = seq._modules[a], seq._modules[b]
        if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats:
            fold_bn(conv, bn)
            seq._modules[b] = nn.Identity()


@torch.no_grad()
def fuse_model(module: nn.Module) -> nn.Module:
    """Fuse ``module`` in place for deployment and return it (call on an eval-mode model)."""
    if hasattr(module, "switch_to_deploy"):
        module.switch_to_deploy()
        return module
    if isinstance(module, nn.Sequential):
        _fuse_sequential(module)
    for child in list(module.children()):
        fuse_model(child)
    return module

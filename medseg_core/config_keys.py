"""Dotted-key lookup in a config tree (a ``CfgNode`` or the plain mapping read from YAML).

Kept free of heavy imports: the lazy project loader and the config rules use it before any
project or Detectron2 config exists.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["config_value"]


def config_value(cfg: Mapping, key: str, default: Any = None) -> Any:
    """The value of a dotted key (``"SOLVER.WARMUP_ITERS"``) of ``cfg``, or ``default`` where the
    tree lacks it (a key of a project whose keys were not added, or a path through a leaf)."""
    node: Any = cfg
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return default
        node = node[part]
    return node

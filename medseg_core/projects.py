"""Discovery of the installed model projects.

Each project declares itself in ``setup.py`` under the entry-point group
``medseg_core.projects`` as ``name = package.config:add_<package>_config``. Loading the entry
point imports the package, which registers its models, mappers and evaluators in the
Detectron2 / medseg_core registries; the function adds its config keys. Shared code therefore
never imports a model project by name, and a user's own plugin joins by declaring the same
entry point.
"""
from __future__ import annotations

from importlib.metadata import entry_points
from typing import Callable, List

ENTRY_POINT_GROUP = "medseg_core.projects"
_LOADED: List[Callable] = []


def project_config_functions() -> List[Callable]:
    """Import every installed project once and return their ``add_*_config`` functions."""
    if not _LOADED:
        eps = sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name)
        if not eps:
            raise RuntimeError(
                f"no model project is installed (entry-point group '{ENTRY_POINT_GROUP}' is "
                "empty): run `pip install -e .` in the repository root (or `make setup`)"
            )
        _LOADED.extend(ep.load() for ep in eps)
    return list(_LOADED)


def load_projects() -> None:
    """Import (and so register) every installed project."""
    project_config_functions()

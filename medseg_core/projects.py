"""Discovery and lazy loading of the installed model projects.

Each project declares itself in ``setup.py`` under the entry-point group
``medseg_core.projects`` as ``name = package.config:add_<package>_config``. Loading the entry
point imports the package, which registers its models, mappers and evaluators in the
Detectron2 / medseg_core registries; the function adds its config keys. Shared code therefore
never imports a model project by name, and a user's own plugin joins by declaring the same
entry point.

Projects are loaded **lazily**: a config imports only the projects it needs, so a broken or
missing optional package of one project cannot stop another from training. Each project ships a
``manifest.py`` beside its ``__init__.py``, read here *without importing the project* (it must
import nothing), with

* ``PROVIDES``: ``{config key: [registry names]}``, e.g. ``{"MODEL.META_ARCHITECTURE": ["LMSFA"]}``;
* ``CONFIG_NODES``: the config nodes its ``add_*_config`` creates, e.g. ``["MODEL.LMSFA"]``;
* ``REQUIRES_EXTRA``: the ``setup.py`` extra the whole project needs ("" for the core install);
* ``NAME_EXTRAS``: ``{config key: {name: extra}}`` for single models that need one.

A config needs a project when one of its registry keys (:data:`REGISTRY_KEYS`) names something
the project provides, or when it sets a key under one of the project's config nodes. A name that
no manifest provides and no core registry holds loads every project (a plugin without a
manifest is always loaded), so an incomplete manifest costs speed, never correctness. A needed
extra that is missing stops loading with one line naming the config, the name and the extra.
"""
from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from .config_keys import config_value
from .extras import MissingExtraError, extra_message, missing_modules

__all__ = [
    "ENTRY_POINT_GROUP", "REGISTRY_KEYS", "Project", "installed_projects", "project_config_functions",
    "config_functions_for", "load_projects", "projects_needed",
]

ENTRY_POINT_GROUP = "medseg_core.projects"

# Config keys whose values are names in a registry: (key, module of the registry, its name).
REGISTRY_KEYS: Tuple[Tuple[str, str, str], ...] = (
    ("MODEL.META_ARCHITECTURE", "detectron2.modeling", "META_ARCH_REGISTRY"),
    ("MODEL.BACKBONE.NAME", "detectron2.modeling", "BACKBONE_REGISTRY"),
    ("MODEL.SEM_SEG_HEAD.NAME", "detectron2.modeling", "SEM_SEG_HEADS_REGISTRY"),
    ("MODEL.PROPOSAL_GENERATOR.NAME", "detectron2.modeling", "PROPOSAL_GENERATOR_REGISTRY"),
    ("MODEL.ROI_HEADS.NAME", "detectron2.modeling", "ROI_HEADS_REGISTRY"),
    ("MODEL.ROI_BOX_HEAD.NAME", "detectron2.modeling.roi_heads", "ROI_BOX_HEAD_REGISTRY"),
    ("MODEL.ROI_MASK_HEAD.NAME", "detectron2.modeling.roi_heads", "ROI_MASK_HEAD_REGISTRY"),
    ("MODEL.VOLUMETRIC.NETWORK", "medseg_core.modeling", "VOLUME_NETWORK_REGISTRY"),
    ("INPUT.DATASET_MAPPER_NAME", "medseg_core.data", "DATASET_MAPPER_REGISTRY"),
    ("TEST.EVALUATORS", "medseg_core.evaluation", "EVALUATOR_REGISTRY"),
)

# Names registered by medseg_core itself that need an extra.
CORE_NAME_EXTRAS: Dict[str, Dict[str, str]] = {
    "MODEL.META_ARCHITECTURE": {"VolumetricSegmentor": "volumetric"},
    "INPUT.DATASET_MAPPER_NAME": {"volume": "volumetric"},
    "TEST.EVALUATORS": {"volume": "volumetric"},
}


@dataclass
class Project:
    """One installed project: its entry point and (when it ships one) its manifest."""

    name: str
    entry_point: EntryPoint
    manifest: Optional[Dict[str, Any]] = None
    _config_fn: Optional[Callable] = field(default=None, repr=False)

    @property
    def requires_extra(self) -> str:
        return (self.manifest or {}).get("REQUIRES_EXTRA", "")

    def load(self) -> Callable:
        """Import the project (registering its models) once; return its ``add_*_config``."""
        if self._config_fn is None:
            if self.requires_extra and missing_modules(self.requires_extra):
                raise MissingExtraError(extra_message(
                    self.requires_extra, f"the {self.name} project",
                    missing_modules(self.requires_extra)))
            self._config_fn = self.entry_point.load()
        return self._config_fn


def _read_manifest(ep: EntryPoint) -> Optional[Dict[str, Any]]:
    """Execute ``<package>/manifest.py`` of ``ep``'s top-level package on its own (the package
    itself is not imported); None when the package has none."""
    top = ep.value.split(":")[0].split(".")[0]
    spec = importlib.util.find_spec(top)  # top-level name: found, not executed
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(list(spec.submodule_search_locations)[0], "manifest.py")
    if not os.path.isfile(path):
        return None
    namespace: Dict[str, Any] = {"__file__": path, "__name__": f"{top}.manifest"}
    with open(path, encoding="utf-8") as f:
        exec(compile(f.read(), path, "exec"), namespace)  # noqa: S102  (our own file, no imports)
    return {k: namespace[k] for k in ("PROVIDES", "CONFIG_NODES", "REQUIRES_EXTRA", "NAME_EXTRAS")
            if k in namespace}


_PROJECTS: Optional[List[Project]] = None


def installed_projects() -> List[Project]:
    """Every installed project (sorted by name), manifests read, none imported."""
    global _PROJECTS
    if _PROJECTS is None:
        eps = sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name)
        if not eps:
            raise RuntimeError(
                f"no model project is installed (entry-point group '{ENTRY_POINT_GROUP}' is "
                "empty): run `pip install -e .` in the repository root (or `make setup`)"
            )
        _PROJECTS = [Project(ep.name, ep, _read_manifest(ep)) for ep in eps]
    return _PROJECTS


def project_config_functions() -> List[Callable]:
    """Import every installed project once and return their ``add_*_config`` functions."""
    return [p.load() for p in installed_projects()]


# --- which projects a config needs -------------------------------------------------------------


def _names(value: Any) -> List[str]:
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, (list, tuple)):
        return [v for v in value if isinstance(v, str) and v]
    return []


_CORE_REGISTERING_MODULES = ("detectron2.modeling", "medseg_core.modeling", "medseg_core.data",
                             "medseg_core.evaluation")


def _core_registered(key: str, name: str) -> bool:
    for module in _CORE_REGISTERING_MODULES:
        importlib.import_module(module)
    for k, module, attr in REGISTRY_KEYS:
        if k == key:
            registry = getattr(importlib.import_module(module), attr)
            return name in registry
    return False


def projects_needed(tree: Mapping, source: str = "config") -> List[Project]:
    """The projects whose names or config nodes appear in ``tree`` (the nested dict of a
    config file and its overrides), in name order; every project when a name is unknown.

    Raises :class:`MissingExtraError` (one line, naming ``source``) when a needed project or name
    needs an extra that is not installed, before anything is imported."""
    projects = installed_projects()
    needed: Dict[str, Tuple[Project, str]] = {}
    for p in projects:
        if p.manifest is None:
            needed[p.name] = (p, "it has no manifest")
            continue
        for key, provided in p.manifest.get("PROVIDES", {}).items():
            for name in _names(config_value(tree, key)):
                if name in provided and p.name not in needed:
                    needed[p.name] = (p, f"{key} {name!r}")
        for node in p.manifest.get("CONFIG_NODES", []):
            if config_value(tree, node) is not None and p.name not in needed:
                needed[p.name] = (p, f"config node {node}")
    for key, _, _ in REGISTRY_KEYS:
        for name in _names(config_value(tree, key)):
            claimed = any(name in (p.manifest or {}).get("PROVIDES", {}).get(key, ()) for p in projects)
            if not claimed and not _core_registered(key, name):
                for p in projects:  # unknown name: maybe a project without a complete manifest
                    needed.setdefault(p.name, (p, f"{key} {name!r} is provided by no manifest"))
    _check_extras(tree, source, [needed[n] for n in sorted(needed)])
    return [needed[n][0] for n in sorted(needed)]


def _check_extras(tree: Mapping, source: str, needed: Iterable[Tuple[Project, str]]) -> None:
    name_extras: List[Tuple[str, Dict[str, str], str]] = [
        (key, names, "") for key, names in CORE_NAME_EXTRAS.items()]
    _check_name_extras(tree, source, name_extras)  # the shared package's own names first
    name_extras = []
    for p, why in needed:
        if p.requires_extra:
            missing = missing_modules(p.requires_extra)
            if missing:
                raise MissingExtraError(extra_message(
                    p.requires_extra, f"{source}: {why} (project {p.name})", missing))
        for key, names in (p.manifest or {}).get("NAME_EXTRAS", {}).items():
            name_extras.append((key, names, f" (project {p.name})"))
    _check_name_extras(tree, source, name_extras)


def _check_name_extras(tree: Mapping, source: str, name_extras) -> None:
    for key, names, owner in name_extras:
        for name in _names(config_value(tree, key)):
            extra = names.get(name)
            if extra and missing_modules(extra):
                raise MissingExtraError(extra_message(
                    extra, f"{source}: {key} {name!r}{owner}", missing_modules(extra)))


def config_functions_for(config_file: Optional[str], opts: Sequence[str] = ()) -> List[Callable]:
    """Import the projects that ``config_file`` + ``opts`` need; return their config functions.

    A file that cannot be read here needs no project: merging it then raises the proper
    :class:`~medseg_core.errors.ConfigError`."""
    from .config import read_config_tree

    tree = read_config_tree(config_file, opts)
    if tree is None:
        return []
    return [p.load() for p in projects_needed(tree, source=config_file or "command-line options")]


def load_projects(cfg=None) -> None:
    """Import (and so register) the projects ``cfg`` needs, or every installed one."""
    if cfg is None:
        project_config_functions()
        return
    for p in projects_needed(_cfg_to_dict(cfg)):
        p.load()


def _cfg_to_dict(cfg) -> Dict[str, Any]:
    return {k: (_cfg_to_dict(v) if isinstance(v, Mapping) else v) for k, v in cfg.items()}

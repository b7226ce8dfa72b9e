"""Shared core of the medical segmentation toolkit: what every model project uses.

Data set registration and converters, dataset mappers, evaluators, the Detectron2
compatibility shim, safe config and checkpoint loading, complexity counting and the one
trainer. The model projects (``lmsfa``, ``lgms``, ``lightmedseg``, ``medseg_baselines``)
depend on this package and never on each other.
"""
from . import compat  # noqa: F401  (must run before any detectron2 import)

__version__ = "0.1.0"

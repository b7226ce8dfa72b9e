"""Training engine: the shared trainer, solver pieces, hooks and CLI."""
from .. import compat  # noqa: F401

from .trainer import MedSegTrainer, StepTrainer, load_weights_for_eval
from .cli import default_argument_parser, setup, main, launch_from_args

__all__ = [
    "MedSegTrainer", "StepTrainer", "load_weights_for_eval", "default_argument_parser", "setup",
    "main", "launch_from_args",
]

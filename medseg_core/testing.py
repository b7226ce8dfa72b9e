"""Helpers for tests and smoke checks: build configs and run a few real train/eval steps.

Used by the test suites of every project, so that "one training step on real images" means
the same thing everywhere: the project's registered mapper, model, optimizer and loss, driven
by the shared trainer's step loop.
"""
from __future__ import annotations

import importlib.util
import itertools
import json
import os
import sys
import tempfile
from types import ModuleType
from typing import Dict, List, Optional

import torch

from . import compat  # noqa: F401

from detectron2.data import DatasetCatalog
from detectron2.utils.events import EventStorage

from .config import load_config

__all__ = ["load_test_cfg", "load_script", "train_steps", "inference_outputs", "shared_data_or_skip", "train_recorded"]


def load_script(path: str, name: str) -> ModuleType:
    """Import a command-line script (``tools/*.py``, ``demo/*.py``: not a package module) as the
    module ``name``; it is entered in ``sys.modules`` because dataclasses look their module up."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def load_test_cfg(config_file: Optional[str], *opts, output_dir: Optional[str] = None):
    """Config on the CPU with no workers, written into a temporary OUTPUT_DIR."""
    output_dir = output_dir or tempfile.mkdtemp(prefix="medseg-test-")
    base = ["MODEL.DEVICE", "cpu", "DATALOADER.NUM_WORKERS", "0", "OUTPUT_DIR", output_dir]
    return load_config(config_file, base + [str(o) for o in opts])


def train_steps(cfg, num_steps: int = 1) -> List[Dict[str, float]]:
    """Run ``num_steps`` optimizer steps of the shared trainer; returns the loss dicts."""
    from .engine.trainer import MedSegTrainer

    cfg = cfg.clone()
    cfg.defrost()
    cfg.DATASETS.VALIDATE = False
    cfg.freeze()
    model = MedSegTrainer.build_model(cfg)
    optimizer = MedSegTrainer.build_optimizer(cfg, model)
    loader = MedSegTrainer.build_train_loader(cfg)
    model.train()
    history = []
    with EventStorage(0) as storage:
        for it, batch in zip(range(num_steps), loader):
            storage.iter = it
            loss_dict = model(batch)
            loss = sum(loss_dict.values())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            history.append({k: float(v.detach()) for k, v in loss_dict.items()})
    return history


@torch.no_grad()
def inference_outputs(cfg, model, dataset_name: str, num_images: int = 2) -> List[Dict]:
    """Model outputs for the first ``num_images`` of a registered data set (test mapper)."""
    from .engine.trainer import MedSegTrainer

    loader = MedSegTrainer.build_test_loader(cfg, dataset_name)
    model.eval()
    out = []
    for batch in itertools.islice(loader, num_images):
        out += [(b, o) for b, o in zip(batch, model(batch))]
    return out


def shared_data_or_skip(pytest_module) -> str:
    """The shared data root; skip (or, under CI=true, fail) when it is absent."""
    from .data.builtin import datasets_root, missing_builtin_reason

    reason = missing_builtin_reason()
    if reason:
        if os.environ.get("CI", "").lower() == "true":
            pytest_module.fail(f"CI=true but {reason}")
        pytest_module.skip(reason)
    return datasets_root()


def registered(name: str) -> bool:
    return name in DatasetCatalog.list()


def train_recorded(jobs: List[Dict]) -> None:
    """Train each job ``{"config_file", "opts", "record"}`` as ``tools/train_net.py`` does, in this
    process or on every rank of a :func:`medseg_core.engine.launch.launch` job, and write on rank 0
    the per-iteration total loss as logged (the mean over ranks) to the JSON file ``record``.

    Several jobs share one set of processes (process start-up dominates short test runs)."""
    from detectron2.utils import comm

    from .checkpoint import atomic_torch_save
    from .engine.cli import default_argument_parser, setup
    from .engine.hooks import unwrap_model
    from .engine.trainer import MedSegTrainer

    for job in jobs:
        args = default_argument_parser().parse_args(["--config-file", job["config_file"], *job["opts"]])
        cfg = setup(args)
        trainer = MedSegTrainer(cfg)
        trainer.resume_or_load(resume=False)
        if comm.is_main_process():  # the start point, to compare updates rather than weights
            atomic_torch_save(unwrap_model(trainer.model).state_dict(), job["record"] + ".init.pth")
        trainer.train()
        if comm.is_main_process():
            history = trainer.storage.history("total_loss").values()
            with open(job["record"], "w") as f:
                losses = [[float(v), int(i)] for v, i in history]
                json.dump({"world_size": comm.get_world_size(), "total_loss": losses}, f)
        comm.synchronize()


def _train_recorded_main(argv: Optional[List[str]] = None) -> None:
    """``python -m medseg_core.testing JOBS.json NUM_PROCESSES``: :func:`train_recorded` on that
    many processes (spawned by the toolkit's launcher)."""
    import sys

    from .engine.launch import launch

    argv = sys.argv[1:] if argv is None else argv
    with open(argv[0]) as f:
        jobs = json.load(f)
    launch(train_recorded, int(argv[1]), dist_url="auto", args=(jobs,))


if __name__ == "__main__":
    _train_recorded_main()

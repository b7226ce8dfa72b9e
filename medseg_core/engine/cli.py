"""Command-line entry of ``tools/train_net.py``: arguments, setup, main and the launch.

One process, ``--num-gpus N`` (N workers spawned here: GPUs with NCCL, CPU processes with gloo
on a machine without CUDA), ``--num-machines M --machine-rank R --dist-url tcp://HOST:PORT``,
or ``torchrun`` (env:// rendezvous; this process is one worker): see :mod:`.launch`.
"""
from __future__ import annotations

import argparse
import logging
from datetime import timedelta
from typing import Optional

import torch

from .. import compat  # noqa: F401

from detectron2.engine import default_argument_parser as d2_argument_parser
from detectron2.engine import default_setup
from detectron2.modeling import build_model
from detectron2.utils import comm

from ..config import load_config
from ..errors import ConfigError
from .launch import DEFAULT_TIMEOUT, WorkerFailedError, distributed_backend, launch
from .trainer import MedSegTrainer, load_weights_for_eval

__all__ = ["default_argument_parser", "setup", "main", "launch_from_args"]

logger = logging.getLogger("medseg_core")

_EPILOG = """
Multi-process training (SOLVER.IMS_PER_BATCH is the global batch, split over the processes):
  %(prog)s --config-file CFG --num-gpus 4                       # 4 GPUs (NCCL), or 4 CPU processes (gloo) without CUDA
  (machine 0)$ %(prog)s --config-file CFG --num-gpus 8 --num-machines 2 --machine-rank 0 --dist-url tcp://HOST0:29500
  (machine 1)$ %(prog)s --config-file CFG --num-gpus 8 --num-machines 2 --machine-rank 1 --dist-url tcp://HOST0:29500
  torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint HOST0:29500 %(prog)s --config-file CFG
A run that dies (any rank) continues from its last checkpoint with --resume.
"""


def default_argument_parser(epilog: Optional[str] = None) -> argparse.ArgumentParser:
    """Detectron2's arguments plus ``--dist-timeout``."""
    parser = d2_argument_parser(epilog or _EPILOG)
    parser.add_argument(
        "--dist-timeout", type=float, default=DEFAULT_TIMEOUT.total_seconds() / 60, metavar="MINUTES",
        help="a process waiting longer than this for the others (a dead or hung rank on another machine) "
        "stops with an error (default: %(default)s)",
    )
    return parser


def setup(args):
    """Full config (all installed projects' keys), Detectron2's default setup, frozen."""
    cfg = load_config(args.config_file, args.opts, freeze=False)
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        logging.getLogger(__name__).warning("MODEL.DEVICE=%s but no GPU is visible: using cpu", cfg.MODEL.DEVICE)
        cfg.MODEL.DEVICE = "cpu"
    nccl = comm.get_world_size() > 1 and torch.distributed.get_backend() == "nccl"
    if nccl and not cfg.MODEL.DEVICE.startswith("cuda"):
        raise ConfigError(
            f"MODEL.DEVICE={cfg.MODEL.DEVICE}: this multi-process run uses the GPUs (NCCL); to train on CPU "
            "processes on a GPU machine, hide the GPUs with CUDA_VISIBLE_DEVICES=\"\""
        )
    cfg.freeze()
    default_setup(cfg, args)
    return cfg


def main(args, trainer_cls=MedSegTrainer):
    cfg = setup(args)
    if args.eval_only:
        model = build_model(cfg)
        load_weights_for_eval(cfg, model, cfg.MODEL.WEIGHTS, resume=args.resume)
        return trainer_cls.test(cfg, model)
    trainer = trainer_cls(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def launch_from_args(args, main_fn=main) -> Optional[dict]:
    """Run ``main_fn(args)`` in this process, on ``--num-gpus`` x ``--num-machines`` workers,
    or as one worker of a torchrun job (see :mod:`.launch`)."""
    print("Command Line Args:", args)
    if args.num_gpus * args.num_machines > 1:
        print(f"Distributed backend: {distributed_backend()}")
    try:
        return launch(
            main_fn, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
            dist_url=args.dist_url, args=(args,), timeout=timedelta(minutes=getattr(args, "dist_timeout", 30.0)),
        )
    except WorkerFailedError as e:  # the ranks' own output says the rest; no launcher traceback
        raise SystemExit(f"error: {e}") from None


def is_main_process() -> bool:
    return comm.is_main_process()

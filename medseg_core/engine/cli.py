"""Command-line entry of ``tools/train_net.py``: setup, main and multi-GPU launch."""
from __future__ import annotations

import logging
from typing import Optional

import torch

from .. import compat  # noqa: F401

from detectron2.engine import default_argument_parser, default_setup, launch
from detectron2.modeling import build_model
from detectron2.utils import comm

from ..config import load_config
from .trainer import MedSegTrainer, load_weights_for_eval

__all__ = ["default_argument_parser", "setup", "main", "launch_from_args"]

logger = logging.getLogger("medseg_core")


def setup(args):
    """Full config (all installed projects' keys), Detectron2's default setup, frozen."""
    cfg = load_config(args.config_file, args.opts, freeze=False)
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        logging.getLogger(__name__).warning("MODEL.DEVICE=%s but no GPU is visible: using cpu", cfg.MODEL.DEVICE)
        cfg.MODEL.DEVICE = "cpu"
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
    """Run ``main_fn(args)`` on ``--num-gpus`` processes (DDP) or in this process."""
    print("Command Line Args:", args)
    return launch(
        main_fn, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
        dist_url=args.dist_url, args=(args,),
    )


def is_main_process() -> bool:
    return comm.is_main_process()

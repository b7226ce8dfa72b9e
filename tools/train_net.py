#!/usr/bin/env python
"""Train or evaluate any model of the toolkit with one Detectron2 trainer.

    python tools/train_net.py --config-file configs/<...>.yaml [--eval-only] [--resume] [KEY VALUE ...]

Every installed project (LMSF-A, LGMSNet, LightMedSeg, baselines) adds its config keys and
registers its models; the evaluator follows the test set's type (COCO AP for instances,
IoU/Dice for semantic masks, Dice/HD95 for volumes). ``--num-gpus N`` launches DDP.
"""
import medseg_core  # noqa: F401  (compatibility shim before detectron2)
from medseg_core.cli_errors import run_cli
from medseg_core.engine import default_argument_parser, launch_from_args

if __name__ == "__main__":
    run_cli(lambda: launch_from_args(default_argument_parser().parse_args()))

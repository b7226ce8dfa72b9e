"""Config keys of the medseg_baselines project."""
from detectron2.config import CfgNode as CN


def add_baselines_config(cfg) -> None:
    """Add the medseg_baselines keys to a Detectron2 config (in place)."""
    cfg.MODEL.BASELINES = CN()

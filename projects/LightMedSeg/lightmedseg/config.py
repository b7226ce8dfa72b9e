"""Config keys of the lightmedseg project."""
from detectron2.config import CfgNode as CN


def add_lightmedseg_config(cfg) -> None:
    """Add the lightmedseg keys to a Detectron2 config (in place)."""
    cfg.MODEL.LIGHTMEDSEG = CN()

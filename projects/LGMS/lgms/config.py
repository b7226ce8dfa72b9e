"""Config keys of the lgms project."""
from detectron2.config import CfgNode as CN


def add_lgms_config(cfg) -> None:
    """Add the lgms keys to a Detectron2 config (in place)."""
    cfg.MODEL.LGMS = CN()

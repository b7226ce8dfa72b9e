"""Config keys of the lmsfa project."""
from detectron2.config import CfgNode as CN


def add_lmsfa_config(cfg) -> None:
    """Add the lmsfa keys to a Detectron2 config (in place)."""
    cfg.MODEL.LMSFA = CN()

"""What the medseg_baselines project provides. Read by ``medseg_core.projects`` WITHOUT importing
the project (this file must import nothing), so that a config imports only the projects it names."""

# Config key -> the names this project registers for it.
PROVIDES = {
    "MODEL.META_ARCHITECTURE": ["HFMask2Former"],
    "MODEL.BACKBONE.NAME": ["build_timm_backbone", "build_timm_fpn_backbone"],
    "MODEL.VOLUMETRIC.NETWORK": ["DynUNet", "SegResNet", "UNETR", "SwinUNETR"],
}
# Config nodes that add_baselines_config creates.
CONFIG_NODES = ["MODEL.TIMM", "MODEL.MASK2FORMER", "MODEL.VOLUMETRIC_BASELINES"]
# setup.py extra the whole project needs (timm backbones, transformers' Mask2Former).
REQUIRES_EXTRA = "baselines"
# Single names that need an extra: {config key: {name: extra}}.
NAME_EXTRAS = {"MODEL.VOLUMETRIC.NETWORK": {n: "volumetric" for n in ("DynUNet", "SegResNet", "UNETR", "SwinUNETR")}}

"""What the lgms project provides. Read by ``medseg_core.projects`` WITHOUT importing the project
(this file must import nothing), so that a config imports only the projects it names."""

# Config key -> the names this project registers for it.
PROVIDES = {
    "MODEL.META_ARCHITECTURE": ["LGMSSemanticSegmentor"],
    "MODEL.BACKBONE.NAME": ["LGMSNetBackbone", "UNetBackbone", "CMUNeXtBackbone", "TinyUNetBackbone",
                            "UNeXtBackbone", "AttentionUNetBackbone", "UNetPlusPlusBackbone",
                            "SwinUNETR2DBackbone"],
    "MODEL.SEM_SEG_HEAD.NAME": ["LGMSNetHead", "UNetHead", "CMUNeXtHead", "TinyUNetHead", "UNeXtHead",
                                "WholeNetworkHead"],
    "MODEL.VOLUMETRIC.NETWORK": ["LGMSNet3D"],
}
# Config nodes that add_lgms_config creates: a config setting a key below one needs this project.
CONFIG_NODES = ["MODEL.LGMS", "MODEL.UNET", "MODEL.CMUNEXT", "MODEL.TINYUNET", "MODEL.UNEXT",
                "MODEL.ATTENTION_UNET", "MODEL.UNETPLUSPLUS", "MODEL.SWIN_UNETR_2D"]
# setup.py extra the whole project needs ("" = the core install is enough: the 2D models).
REQUIRES_EXTRA = ""
# Single names that need an extra: {config key: {name: extra}}.
# (the MONAI 2D comparison networks build from MONAI, so they need the volumetric extra too)
NAME_EXTRAS = {
    "MODEL.VOLUMETRIC.NETWORK": {"LGMSNet3D": "volumetric"},
    "MODEL.BACKBONE.NAME": {"AttentionUNetBackbone": "volumetric", "UNetPlusPlusBackbone": "volumetric",
                            "SwinUNETR2DBackbone": "volumetric"},
}

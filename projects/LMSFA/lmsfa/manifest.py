"""What the lmsfa project provides. Read by ``medseg_core.projects`` WITHOUT importing the project
(this file must import nothing), so that a config imports only the projects it names."""

# Config key -> the names this project registers for it.
PROVIDES = {
    "MODEL.META_ARCHITECTURE": ["LMSFA"],
    "MODEL.BACKBONE.NAME": ["build_lmsfa_backbone"],
    "INPUT.DATASET_MAPPER_NAME": ["yolo"],
}
# Config nodes that add_lmsfa_config creates: a config setting a key below one needs this project.
CONFIG_NODES = ["MODEL.LMSFA", "INPUT.YOLO"]
# setup.py extra the whole project needs ("" = the core install is enough).
REQUIRES_EXTRA = ""
# Single names that need an extra: {config key: {name: extra}}.
NAME_EXTRAS = {}

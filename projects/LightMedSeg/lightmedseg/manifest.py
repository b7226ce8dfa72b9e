"""What the lightmedseg project provides. Read by ``medseg_core.projects`` WITHOUT importing the
project (this file must import nothing), so that a config imports only the projects it names."""

# Config key -> the names this project registers for it.
PROVIDES = {
    "MODEL.VOLUMETRIC.NETWORK": ["LightMedSeg"],
}
# Config nodes that add_lightmedseg_config creates.
CONFIG_NODES = ["MODEL.LIGHTMEDSEG"]
# setup.py extra the whole project needs: 3D data, sliding-window inference and metrics (MONAI).
REQUIRES_EXTRA = "volumetric"
# Single names that need an extra: {config key: {name: extra}}.
NAME_EXTRAS = {}

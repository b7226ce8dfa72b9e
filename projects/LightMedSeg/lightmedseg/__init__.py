"""LightMedSeg (3D): a lightweight UNet-style network with learned spatial anchors.

Registers the network "LightMedSeg" in medseg_core's VOLUME_NETWORK_REGISTRY; it is trained and
evaluated through the shared ``VolumetricSegmentor`` meta-architecture, "volume" mapper and
"volume" evaluator.
"""
import medseg_core  # noqa: F401  (compatibility shim before detectron2)
from medseg_core.extras import require_extra

require_extra("volumetric", "the lightmedseg project (3D)")
import medseg_core.modeling  # noqa: F401  (VolumetricSegmentor, VOLUME_NETWORK_REGISTRY)

from .config import add_lightmedseg_config
from .lightmedseg import LightMedSeg  # noqa: F401  (registers "LightMedSeg")

__all__ = [
    "add_lightmedseg_config", "LightMedSeg",
]

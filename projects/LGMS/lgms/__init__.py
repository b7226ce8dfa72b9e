"""lgms project: LGMSNet (Dong et al., ECAI 2025) 2D/3D and its U-Net / CMUNeXt baselines.

Importing the package registers the models: meta-architecture ``LGMSSemanticSegmentor``;
backbones ``LGMSNetBackbone``, ``UNetBackbone``, ``CMUNeXtBackbone``; semantic heads
``LGMSNetHead``, ``UNetHead``, ``CMUNeXtHead``.
"""
import medseg_core  # noqa: F401  (compatibility shim before detectron2)

from .config import add_lgms_config
from . import meta_arch, lgmsnet_d2, unet, cmunext  # noqa: F401  (registrations)

"""lgms project: LGMSNet (Dong et al., ECAI 2025) 2D/3D and the 2D baselines of its Table 1.

Importing the package registers the models: meta-architecture ``LGMSSemanticSegmentor``;
backbones ``LGMSNetBackbone``, ``UNetBackbone``, ``CMUNeXtBackbone``, ``TinyUNetBackbone``,
``UNeXtBackbone`` and the MONAI whole networks ``AttentionUNetBackbone``,
``UNetPlusPlusBackbone``, ``SwinUNETR2DBackbone``; semantic heads ``LGMSNetHead``, ``UNetHead``,
``CMUNeXtHead``, ``TinyUNetHead``, ``UNeXtHead``, ``WholeNetworkHead``; volume network
``LGMSNet3D``.
"""
import medseg_core  # noqa: F401  (compatibility shim before detectron2)

from .config import add_lgms_config
import medseg_core.modeling  # noqa: F401  (VolumetricSegmentor, VOLUME_NETWORK_REGISTRY)

from . import meta_arch, lgmsnet_d2, unet, cmunext, tinyunet  # noqa: F401  (registrations)
from . import unext, whole_network, attention_unet, unetplusplus, swin_unetr  # noqa: F401  (2D baselines)
from . import lgmsnet3d  # noqa: F401  (registers "LGMSNet3D" for the VolumetricSegmentor)

__all__ = [
    "add_lgms_config",
]

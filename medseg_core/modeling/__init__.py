"""Model pieces shared by several projects."""
from .. import compat  # noqa: F401

from .volumetric import VOLUME_NETWORK_REGISTRY, VolumetricSegmentor, build_volume_network  # noqa: F401

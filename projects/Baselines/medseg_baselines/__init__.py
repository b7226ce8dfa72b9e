"""medseg_baselines: the comparison baselines of the LMSF-A paper as Detectron2 components.

* Mask R-CNN R50-FPN: Detectron2's own ``GeneralizedRCNN`` (configs only, from-scratch variants);
* Swin-T Mask R-CNN: timm's Swin Transformer as a registered backbone under FPN
  (:mod:`.timm_backbone`);
* Mask2Former: the ``transformers`` implementation as the ``HFMask2Former`` meta-architecture
  (:mod:`.mask2former`);
* YOLOv8-seg is the LMSF-A meta-architecture with its modules switched off (``lmsfa`` project);
* MONAI's 3D UNETR, SwinUNETR, SegResNet and DynUNet in ``VOLUME_NETWORK_REGISTRY``
  (:mod:`.volumetric`).
"""
import medseg_core  # noqa: F401  (compatibility shim before detectron2)
from medseg_core.extras import require_extra

require_extra("baselines", "the medseg_baselines project (Swin, Mask2Former, ...)")


from .config import add_baselines_config
from . import mask2former, timm_backbone  # noqa: F401  (register the models)
from . import volumetric  # noqa: F401  (registers the MONAI 3D baselines)

__all__ = [
    "add_baselines_config",
]

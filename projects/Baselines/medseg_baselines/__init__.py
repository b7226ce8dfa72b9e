"""medseg_baselines: the comparison baselines of the LMSF-A paper as Detectron2 components.

* Mask R-CNN R50-FPN: Detectron2's own ``GeneralizedRCNN`` (configs only, from-scratch variants);
* Swin-T Mask R-CNN: timm's Swin Transformer as a registered backbone under FPN
  (:mod:`.timm_backbone`);
* Mask2Former: the ``transformers`` implementation as the ``HFMask2Former`` meta-architecture
  (:mod:`.mask2former`);
* YOLOv8-seg is the LMSF-A meta-architecture with its modules switched off (``lmsfa`` project).
"""
import medseg_core  # noqa: F401  (compatibility shim before detectron2)

from .config import add_baselines_config
from . import mask2former, timm_backbone  # noqa: F401  (register the models)

__all__ = [
    "add_baselines_config",
]

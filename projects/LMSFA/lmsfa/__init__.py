"""lmsfa project: LMSF-A (and the YOLOv8-seg baseline) as a Detectron2 plugin."""
import medseg_core  # noqa: F401  (compatibility shim before detectron2)

from .config import add_lmsfa_config
from . import neck  # noqa: F401  (registers build_lmsfa_backbone in BACKBONE_REGISTRY)
from . import heads  # noqa: F401  (registers the heads in LMSFA_HEAD_REGISTRY)
from . import meta_arch  # noqa: F401  (registers LMSFA in META_ARCH_REGISTRY)
from . import yolo_mapper  # noqa: F401  (registers the "yolo" mapper in DATASET_MAPPER_REGISTRY)

__all__ = [
    "add_lmsfa_config",
]

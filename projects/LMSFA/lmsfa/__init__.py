"""lmsfa project."""
import medseg_core  # noqa: F401  (compatibility shim before detectron2)

from .config import add_lmsfa_config

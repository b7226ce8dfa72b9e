"""Paper modules of LMSF-A, one file each (see each file's docstring for the paper section)."""
from .attention import AFGCAttention, CPCA, SimAM, SqueezeExcite, build_attention
from .c2f import Bottleneck, C2f
from .c2f_pro import C2fPro
from .c2psa import C2PSA, PSAAttention, PSABlock
from .c3k2 import C3k, C3k2
from .c2f_variants import C2fContextGuided, C2fFaster, C2fStar, ContextGuidedBlock, FasterBlock, StarBlock
from .conv import ConvBNAct, ConvGNAct, DSConv, DWConv, Scale, autopad, fold_bn, make_divisible
from .ema_attention import EMA
from .factory import BLOCK_NAMES, build_csp_block
from .proto import Proto
from .repvit import Conv2dBN, RepVGGDW, RepViTBlock
from .sppf import SPPF
from .ssff import Add, ScaleSequenceFusion
from .tfe import ZoomCat

__all__ = [
    "AFGCAttention", "CPCA", "SimAM", "SqueezeExcite", "build_attention", "Bottleneck", "C2f",
    "C2fPro", "C2PSA", "PSAAttention", "PSABlock", "C3k", "C3k2", "C2fContextGuided", "C2fFaster", "C2fStar", "ContextGuidedBlock", "FasterBlock",
    "StarBlock", "ConvBNAct", "ConvGNAct", "DSConv", "DWConv", "Scale", "autopad", "fold_bn",
    "make_divisible", "EMA", "BLOCK_NAMES", "build_csp_block", "Proto", "Conv2dBN", "RepVGGDW",
    "RepViTBlock", "SPPF", "Add", "ScaleSequenceFusion", "ZoomCat",
]

"""Config keys of the lgms project (LGMSNet 2D/3D and its 2D baselines).

Models are chosen with Detectron2's own keys: ``MODEL.META_ARCHITECTURE
"LGMSSemanticSegmentor"``, ``MODEL.BACKBONE.NAME`` ("LGMSNetBackbone", "UNetBackbone",
"CMUNeXtBackbone", "TinyUNetBackbone", "UNeXtBackbone", and the whole-network MONAI models
"AttentionUNetBackbone", "UNetPlusPlusBackbone", "SwinUNETR2DBackbone"),
``MODEL.SEM_SEG_HEAD.NAME`` ("LGMSNetHead", "UNetHead", "CMUNeXtHead", "TinyUNetHead",
"UNeXtHead", "WholeNetworkHead" for the MONAI models),
``MODEL.SEM_SEG_HEAD.NUM_CLASSES`` (classes incl. background: 2 for binary) and
``MODEL.SEM_SEG_HEAD.IGNORE_VALUE``.
"""
from detectron2.config import CfgNode as CN


def add_lgms_config(cfg) -> None:
    """Add the lgms keys to a Detectron2 config (in place)."""
    cfg.MODEL.LGMS = CN()
    # With NUM_CLASSES == 2, emit one foreground logit trained with 0.5*BCE + Dice (LGMSNet
    # Eq. 9), as the authors' models do; inference exposes it as two channels [0, z] so that
    # argmax == (sigmoid(z) > 0.5). False: two softmax logits with CE + Dice.
    cfg.MODEL.LGMS.BINARY_ONE_LOGIT = True
    # Channel widths of the five stages (strides 1, 2, 4, 8, 16); the released SegmsNet.
    cfg.MODEL.LGMS.DIMS = [16, 32, 64, 128, 128]
    # Number of LMS blocks in encoders 1-3 (the authors ignore entries beyond the third).
    cfg.MODEL.LGMS.DEPTHS = [1, 1, 1]
    # Depthwise kernel per LMS channel group (Eq. 2; the paper's ablation picks 3, 5, 7, 9).
    cfg.MODEL.LGMS.LMS_KERNELS = [3, 5, 7, 9]
    # "code": the released block (residual before GroupNorm, GELU, second residual; gives the
    # published counts); "paper": Eq. 4 as written (SiLU(GN(.)) + X, no second residual).
    cfg.MODEL.LGMS.LMS_VARIANT = "code"
    # [transformer, conv] channel split of the GMS blocks encoder4, encoder5, up5, up4 (T:C = 3:1).
    cfg.MODEL.LGMS.GMS_SPLITS = [[96, 32], [96, 32], [96, 32], [48, 16]]
    # Attention heads of the GMS transformer.
    cfg.MODEL.LGMS.GMS_HEADS = 4
    # Width of each attention head (inner width = heads * dim_head = 32).
    cfg.MODEL.LGMS.GMS_DIM_HEAD = 8
    # Transformer layers per GMS block.
    cfg.MODEL.LGMS.GMS_DEPTH = 1
    # FFN hidden width as a multiple of the GMS block's output width (2 -> 256 / 128).
    cfg.MODEL.LGMS.GMS_MLP_RATIO = 2.0
    # Side of the MobileViT unfold patch (p = 2 -> 4 token groups in 2D, 8 in 3D).
    cfg.MODEL.LGMS.GMS_PATCH = 2
    # Norm of the conv layers of the 2D models: "BN" (the authors' 2D code).
    cfg.MODEL.LGMS.NORM = "BN"
    # Norm of those conv layers in LGMSNet-3D: "IN" (non-affine InstanceNorm, the authors' 3D code).
    cfg.MODEL.LGMS.NORM_3D = "IN"
    # Norm of the GMS depthwise conv branch (BatchNorm in both of the authors' 2D and 3D code).
    cfg.MODEL.LGMS.GMS_BRANCH_NORM = "BN"

    # Loss weights (LGMSNet Eq. 9 for one-logit heads, CE + Dice for multi-class heads).
    cfg.MODEL.LGMS.LOSS = CN()
    # Weight of the binary cross-entropy term (Eq. 9: 0.5).
    cfg.MODEL.LGMS.LOSS.BCE_WEIGHT = 0.5
    # Weight of the softmax cross-entropy term of multi-class heads.
    cfg.MODEL.LGMS.LOSS.CE_WEIGHT = 1.0
    # Weight of the soft Dice term (Eq. 9: 1).
    cfg.MODEL.LGMS.LOSS.DICE_WEIGHT = 1.0
    # Smoothing of the soft Dice (the authors' BCEDiceLoss: 1e-5).
    cfg.MODEL.LGMS.LOSS.DICE_SMOOTH = 1e-5

    cfg.MODEL.UNET = CN()
    # U-Net widths of the five levels (Ronneberger et al.; 34.5 M parameters with 64..1024).
    cfg.MODEL.UNET.DIMS = [64, 128, 256, 512, 1024]

    cfg.MODEL.CMUNEXT = CN()
    # CMUNeXt stage widths (CMUNeXt paper, default model: 16, 32, 128, 160, 256).
    cfg.MODEL.CMUNEXT.DIMS = [16, 32, 128, 160, 256]
    # CMUNeXt blocks per encoder stage.
    cfg.MODEL.CMUNEXT.DEPTHS = [1, 1, 1, 3, 1]
    # Depthwise kernel size per encoder stage.
    cfg.MODEL.CMUNEXT.KERNELS = [3, 3, 7, 7, 7]

    cfg.MODEL.TINYUNET = CN()
    # TinyU-Net encoder widths (TinyU-Net paper: 64, 128, 256, 512; 0.48 M parameters).
    cfg.MODEL.TINYUNET.DIMS = [64, 128, 256, 512]

    cfg.MODEL.UNEXT = CN()
    # UNeXt widths: three conv levels, then two tokenized-MLP levels (UNeXt paper: 1.47 M).
    cfg.MODEL.UNEXT.DIMS = [16, 32, 128, 160, 256]

    cfg.MODEL.ATTENTION_UNET = CN()
    # MONAI AttentionUnet widths per level (Oktay et al.: 64..1024; one 2x down-sampling between levels).
    cfg.MODEL.ATTENTION_UNET.CHANNELS = [64, 128, 256, 512, 1024]

    cfg.MODEL.UNETPLUSPLUS = CN()
    # MONAI BasicUNetPlusPlus widths: five levels + the up-sampling width (32-512: the FLOPs of
    # LGMSNet's U-Net++ row, see unetplusplus.py).
    cfg.MODEL.UNETPLUSPLUS.FEATURES = [32, 64, 128, 256, 512, 32]

    cfg.MODEL.SWIN_UNETR_2D = CN()
    # Embedding width of the first Swin stage (48: Swin-T widths, 25.1 M parameters).
    cfg.MODEL.SWIN_UNETR_2D.FEATURE_SIZE = 48
    # Swin blocks per stage.
    cfg.MODEL.SWIN_UNETR_2D.DEPTHS = [2, 2, 2, 2]
    # Attention heads per stage.
    cfg.MODEL.SWIN_UNETR_2D.NUM_HEADS = [3, 6, 12, 24]
    # Attention window edge in tokens.
    cfg.MODEL.SWIN_UNETR_2D.WINDOW_SIZE = 7


# Valid ranges of the keys above, checked when a config is loaded (medseg_core.config_rules).
def _rules():
    from medseg_core.config_rules import Rule, integer, matches, number, one_of, register_config_rules, sequence
    from medseg_core.config_rules import multiple_of, odd_integer

    pos_int, nonneg = integer(1), number(0)
    norm = matches(r"BN|IN|GN\d+", "'BN', 'IN' or 'GN<groups>'")
    split = sequence(pos_int, length=2)
    m = "MODEL.LGMS."
    register_config_rules({
        m + "DIMS": sequence(pos_int, length=5), m + "DEPTHS": sequence(pos_int, min_len=3),
        m + "LMS_KERNELS": sequence(odd_integer(1), min_len=1), m + "LMS_VARIANT": one_of("code", "paper"),
        m + "GMS_SPLITS": Rule(lambda v: isinstance(v, (list, tuple)) and len(v) == 4 and all(split.ok(x) for x in v),
                               "4 [transformer, conv] pairs of integers >= 1"),
        m + "GMS_HEADS": pos_int, m + "GMS_DIM_HEAD": pos_int, m + "GMS_DEPTH": pos_int,
        m + "GMS_MLP_RATIO": number(0, lo_open=True), m + "GMS_PATCH": pos_int,
        m + "NORM": norm, m + "NORM_3D": norm, m + "GMS_BRANCH_NORM": norm,
        m + "LOSS.BCE_WEIGHT": nonneg, m + "LOSS.CE_WEIGHT": nonneg, m + "LOSS.DICE_WEIGHT": nonneg,
        m + "LOSS.DICE_SMOOTH": nonneg,
        "MODEL.UNET.DIMS": sequence(pos_int, length=5),
        "MODEL.CMUNEXT.DIMS": sequence(pos_int, length=5), "MODEL.CMUNEXT.DEPTHS": sequence(pos_int, length=5),
        "MODEL.CMUNEXT.KERNELS": sequence(odd_integer(1), length=5),
        "MODEL.TINYUNET.DIMS": sequence(pos_int, length=4),
        "MODEL.UNEXT.DIMS": sequence(pos_int, length=5),
        "MODEL.ATTENTION_UNET.CHANNELS": sequence(pos_int, min_len=2),
        "MODEL.UNETPLUSPLUS.FEATURES": sequence(pos_int, length=6),  # 5 levels + the up-sampling width
        # MONAI's SwinUNETR splits the embedding width into 12 parts
        "MODEL.SWIN_UNETR_2D.FEATURE_SIZE": multiple_of(12, 12),
        "MODEL.SWIN_UNETR_2D.DEPTHS": sequence(pos_int, length=4),
        "MODEL.SWIN_UNETR_2D.NUM_HEADS": sequence(pos_int, length=4),
        "MODEL.SWIN_UNETR_2D.WINDOW_SIZE": pos_int,
    })


_rules()

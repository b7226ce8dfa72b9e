"""Config keys of the lmsfa project (LMSF-A and the YOLOv8-seg baseline with modules switched off).

Defaults are the LMSF-A model of the paper (docs/lmsfa.md): n-scale (depth 0.33,
width 0.25), C2f-Pro with EMA at backbone strides 16/32, TFE + SSFF neck, LMSH head, nc = 4.
"""
from detectron2.config import CfgNode as CN


def add_lmsfa_config(cfg) -> None:
    """Add the lmsfa keys to a Detectron2 config (in place)."""
    cfg.MODEL.LMSFA = CN()
    a = cfg.MODEL.LMSFA
    # --- architecture (backbone, neck, head) ---
    # Number of object classes (PELD: 4; endoscapes-seg50: 6; teeth: 32).
    a.NUM_CLASSES = 4
    # Network layout: "YOLOv8" (YOLOv8 CSP-Darknet; BACKBONE_BLOCK, NECK_BLOCK, ATTENTION and
    # NECK below choose LMSF-A's modules) or "YOLO11" (C3k2 stages, SPPF, C2PSA and the C3k2
    # PAN neck of YOLO11; needs BACKBONE_BLOCK "C3k2", ATTENTION "none", NECK "PAN").
    a.ARCH = "YOLOv8"
    # YOLOv8 depth multiple: block repeats r become max(round(r * DEPTH_MULTIPLE), 1) (n-scale 0.33).
    a.DEPTH_MULTIPLE = 0.33
    # YOLOv8 width multiple: channels c become ceil8(min(c, MAX_CHANNELS) * WIDTH_MULTIPLE) (n: 0.25).
    a.WIDTH_MULTIPLE = 0.25
    # Channel cap applied before the width multiple (YOLOv8 n/s: 1024, m: 768, l/x: 512).
    a.MAX_CHANNELS = 1024
    # CSP block of the backbone: "C2f" (YOLOv8), "C2f-Pro" (LMSF-A), "C2f-Faster", "C2f-Star",
    # "C2f-ContextGuided" (Table VII comparators); "C3k2" with ARCH "YOLO11" only.
    a.BACKBONE_BLOCK = "C2f-Pro"
    # CSP block of the neck; "" uses BACKBONE_BLOCK (the paper swaps both together).
    a.NECK_BLOCK = ""
    # Attention inside the C2f-Pro RepViT blocks: "EMA" (LMSF-A), "SE", "SimAM", "CPCA", "AFGC"
    # (Table VI comparators) or "none" (plain RVB).
    a.ATTENTION = "EMA"
    # C2f-Pro blocks that carry the attention (the others use plain RVB). Names: backbone_s4,
    # backbone_s8, backbone_s16, backbone_s32, neck_p4_td, neck_p3, neck_p4, neck_p5.
    # Default: the deep backbone stages, as the paper's text says (docs/lmsfa.md, choice #2).
    a.ATTENTION_STAGES = ["backbone_s16", "backbone_s32"]
    # EMA group factor G (channels split into G groups; the community/LMSF-A value is 8).
    a.EMA_FACTOR = 8
    # Neck: "ASF" (TFE Zoom_cat + SSFF ScalSeq + Add, LMSF-A) or "PAN" (YOLOv8).
    a.NECK = "ASF"
    # SSFF output channels before the width multiple (256 -> 64 at n-scale; must equal P3's width).
    a.SSFF_CHANNELS = 256
    # Head, by name in LMSFA_HEAD_REGISTRY: "LMSH" (LMSF-A), "Segment" (YOLOv8), "LADH", "LQE",
    # "LMSH_LQE", "EfficientHead" (Table VIII comparators), "YOLO11Segment" (YOLO11: depthwise class branch),
    # "LMSH_BNCoef" (diagnostic: LMSH with YOLOv8's BatchNorm coefficient branch),
    # "LMSH_BNCoefSameShape" (diagnostic: LMSH's coefficient branch with BatchNorm for GroupNorm).
    a.HEAD = "LMSH"
    # DFL bins per box side (YOLOv8: 16).
    a.REG_MAX = 16
    # Number of mask prototypes / coefficients.
    a.NUM_PROTOS = 32
    # Prototype branch width before the width multiple (256 -> 64 at n-scale).
    a.PROTO_CHANNELS = 256
    # LMSH hidden width before the width multiple (256 -> 64; only 64 reproduces the paper).
    a.HEAD_CHANNELS = 256
    # GroupNorm groups of the LMSH convolutions.
    a.HEAD_GN_GROUPS = 16

    # --- training, loss and inference (meta-architecture) ---
    # YOLOv8-seg loss gains (Ultralytics defaults): CIoU box loss.
    a.LOSS_BOX_WEIGHT = 7.5
    # Gain of the prototype mask BCE (Ultralytics reuses the box gain).
    a.LOSS_SEG_WEIGHT = 7.5
    # Gain of the BCE classification loss.
    a.LOSS_CLS_WEIGHT = 0.5
    # Gain of the distribution focal loss.
    a.LOSS_DFL_WEIGHT = 1.5
    # Multiply the losses by the images per batch, as Ultralytics does (its lr 0.01 assumes it).
    a.LOSS_SCALE_BY_BATCH = True
    # Task-aligned assigner: candidates kept per GT.
    a.TAL_TOPK = 10
    # Task-aligned assigner: exponent of the class score in t = s^alpha * u^beta.
    a.TAL_ALPHA = 0.5
    # Task-aligned assigner: exponent of the CIoU in t = s^alpha * u^beta.
    a.TAL_BETA = 6.0
    # Raw pixel value of the padding added to reach a multiple of 32 (YOLO's gray 114).
    a.PAD_VALUE = 114.0
    # Inference: minimum class score of a candidate (0.001 for mAP evaluation, 0.25 for demos).
    a.TEST_CONF_THRESH = 0.001
    # Inference: IoU threshold of the NMS.
    a.TEST_NMS_IOU = 0.7
    # Inference: maximum detections kept per image.
    a.TEST_MAX_DET = 300
    # Inference: a box may be kept in several classes (Ultralytics validator); False keeps its best class.
    a.TEST_MULTI_LABEL = True
    # Inference: class-agnostic NMS.
    a.TEST_AGNOSTIC_NMS = False
    # Inference: at most this many candidates per image enter the NMS (highest scores first).
    a.TEST_MAX_NMS = 30000

    # YOLO data augmentation and letterbox resizing (mapper "yolo"; Ultralytics defaults).
    cfg.INPUT.YOLO = CN()
    y = cfg.INPUT.YOLO
    # Square training size and longest side at test time (pixels, a multiple of 32).
    y.IMAGE_SIZE = 640
    # Probability of a 4-image mosaic per training sample (Ultralytics 1.0, never closed).
    y.MOSAIC_PROB = 1.0
    # HSV jitter gains (hue fraction, saturation and value factors), as Ultralytics hsv_h/s/v.
    y.HSV_H = 0.015
    # Saturation gain of the HSV jitter.
    y.HSV_S = 0.7
    # Value (brightness) gain of the HSV jitter.
    y.HSV_V = 0.4
    # Random affine: rotation range in degrees (+/-).
    y.DEGREES = 0.0
    # Random affine: translation as a fraction of the image size (+/-).
    y.TRANSLATE = 0.1
    # Random affine: scale gain, the scale is drawn from [1 - SCALE, 1 + SCALE].
    y.SCALE = 0.5
    # Random affine: shear range in degrees (+/-).
    y.SHEAR = 0.0
    # Probability of a horizontal flip.
    y.FLIP_LR = 0.5
    # Probability of a vertical flip.
    y.FLIP_UD = 0.0
    # Instances whose box is narrower or lower than this (pixels) after augmentation are dropped.
    y.MIN_BOX_SIZE = 2.0
    # ... or whose box keeps less than this fraction of its (scaled) area (Ultralytics: 0.01
    # for segment labels, 0.1 for boxes only).
    y.MIN_AREA_RATIO = 0.01
    # ... or whose box aspect ratio exceeds this.
    y.MAX_ASPECT_RATIO = 100.0


# Valid ranges of the keys above, checked when a config is loaded (medseg_core.config_rules).
def _rules():
    from medseg_core.config_rules import integer, multiple_of, number, one_of, probability, register_config_rules, sequence

    from .backbone import ATTENTION_STAGE_NAMES

    pos_int, nonneg, prob = integer(1), number(0), probability()
    m, y = "MODEL.LMSFA.", "INPUT.YOLO."
    register_config_rules({
        m + "NUM_CLASSES": pos_int, m + "DEPTH_MULTIPLE": number(0, lo_open=True),
        m + "WIDTH_MULTIPLE": number(0, lo_open=True), m + "MAX_CHANNELS": integer(8),
        m + "ATTENTION_STAGES": sequence(one_of(*ATTENTION_STAGE_NAMES), min_len=0, distinct=True),
        m + "EMA_FACTOR": pos_int, m + "NECK": one_of("ASF", "PAN"), m + "SSFF_CHANNELS": pos_int,
        m + "REG_MAX": pos_int, m + "NUM_PROTOS": pos_int, m + "PROTO_CHANNELS": pos_int,
        m + "HEAD_CHANNELS": pos_int, m + "HEAD_GN_GROUPS": pos_int,
        m + "LOSS_BOX_WEIGHT": nonneg, m + "LOSS_SEG_WEIGHT": nonneg, m + "LOSS_CLS_WEIGHT": nonneg,
        m + "LOSS_DFL_WEIGHT": nonneg, m + "TAL_TOPK": pos_int, m + "TAL_ALPHA": nonneg, m + "TAL_BETA": nonneg,
        m + "PAD_VALUE": number(0, 255), m + "TEST_CONF_THRESH": prob, m + "TEST_NMS_IOU": prob,
        m + "TEST_MAX_DET": pos_int, m + "TEST_MAX_NMS": pos_int,
        y + "IMAGE_SIZE": multiple_of(32, 32), y + "MOSAIC_PROB": prob, y + "HSV_H": prob, y + "HSV_S": prob,
        y + "HSV_V": prob, y + "DEGREES": number(0, 180), y + "TRANSLATE": number(0, 1),
        y + "SCALE": number(0, 1, hi_open=True), y + "SHEAR": number(0, 90, hi_open=True), y + "FLIP_LR": prob,
        y + "FLIP_UD": prob, y + "MIN_BOX_SIZE": nonneg, y + "MIN_AREA_RATIO": prob,
        y + "MAX_ASPECT_RATIO": number(1),
    })


_rules()

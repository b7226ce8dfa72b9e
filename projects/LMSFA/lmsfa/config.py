"""Config keys of the lmsfa project (LMSF-A and the YOLOv8-seg baseline with modules switched off).

Defaults are the LMSF-A model of the paper (design notes §1.1, §3.1): n-scale (depth 0.33,
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
    # YOLOv8 depth multiple: block repeats r become max(round(r * DEPTH_MULTIPLE), 1) (n-scale 0.33).
    a.DEPTH_MULTIPLE = 0.33
    # YOLOv8 width multiple: channels c become ceil8(min(c, MAX_CHANNELS) * WIDTH_MULTIPLE) (n: 0.25).
    a.WIDTH_MULTIPLE = 0.25
    # Channel cap applied before the width multiple (YOLOv8 n/s: 1024, m: 768, l/x: 512).
    a.MAX_CHANNELS = 1024
    # CSP block of the backbone: "C2f" (YOLOv8), "C2f-Pro" (LMSF-A), "C2f-Faster", "C2f-Star",
    # "C2f-ContextGuided" (Table VII comparators).
    a.BACKBONE_BLOCK = "C2f-Pro"
    # CSP block of the neck; "" uses BACKBONE_BLOCK (the paper swaps both together).
    a.NECK_BLOCK = ""
    # Attention inside the C2f-Pro RepViT blocks: "EMA" (LMSF-A), "SE", "SimAM", "CPCA", "AFGC"
    # (Table VI comparators) or "none" (plain RVB).
    a.ATTENTION = "EMA"
    # C2f-Pro blocks that carry the attention (the others use plain RVB). Names: backbone_s4,
    # backbone_s8, backbone_s16, backbone_s32, neck_p4_td, neck_p3, neck_p4, neck_p5.
    # Default: the deep backbone stages, as the paper's text says (notes §5.2 #2).
    a.ATTENTION_STAGES = ["backbone_s16", "backbone_s32"]
    # EMA group factor G (channels split into G groups; the community/LMSF-A value is 8).
    a.EMA_FACTOR = 8
    # Neck: "ASF" (TFE Zoom_cat + SSFF ScalSeq + Add, LMSF-A) or "PAN" (YOLOv8).
    a.NECK = "ASF"
    # SSFF output channels before the width multiple (256 -> 64 at n-scale; must equal P3's width).
    a.SSFF_CHANNELS = 256
    # Head, by name in LMSFA_HEAD_REGISTRY: "LMSH" (LMSF-A), "Segment" (YOLOv8), "LADH", "LQE",
    # "LMSH_LQE", "EfficientHead" (Table VIII comparators).
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

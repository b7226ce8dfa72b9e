"""Config keys of the medseg_baselines project (timm backbones, Mask2Former wrapper).

Mask R-CNN itself needs no keys: it is Detectron2's ``GeneralizedRCNN`` configured with the
standard ``MODEL.RESNETS`` / ``MODEL.FPN`` / ``MODEL.ROI_*`` keys.
"""
from detectron2.config import CfgNode as CN


def add_baselines_config(cfg) -> None:
    """Add the medseg_baselines keys to a Detectron2 config (in place)."""
    from .volumetric import add_volumetric_baselines_config

    # --- MONAI 3D baselines (MODEL.VOLUMETRIC_BASELINES.*, see volumetric.py) ---
    add_volumetric_baselines_config(cfg)
    # --- timm backbone wrapper (build_timm_backbone / build_timm_fpn_backbone) ---
    cfg.MODEL.TIMM = CN()
    # timm model name, created with pretrained=False and features_only=True (no download).
    cfg.MODEL.TIMM.NAME = "swin_tiny_patch4_window7_224"
    # Names given to timm's feature levels, shallowest first (stride 4, 8, 16, 32 for Swin);
    # "res2".."res5" keep the FPN/ROI keys of Base-RCNN-FPN.yaml unchanged.
    cfg.MODEL.TIMM.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    # timm feature indices matching OUT_FEATURES (Swin-T has stages 0..3).
    cfg.MODEL.TIMM.OUT_INDICES = [0, 1, 2, 3]
    # Stochastic depth rate (Swin-T Mask R-CNN uses 0.2, Mask2Former Swin-T 0.3).
    cfg.MODEL.TIMM.DROP_PATH_RATE = 0.2
    # Extra keyword arguments for timm.create_model as [key, value] pairs (YAML literals), e.g.
    # [["window_size", 8]]; strict_img_size=False is always passed for models that take it.
    cfg.MODEL.TIMM.EXTRA_KWARGS = []
    # Pad the input to a multiple of this (32 = the deepest stride, as FPN needs).
    cfg.MODEL.TIMM.SIZE_DIVISIBILITY = 32

    # --- Mask2Former (Hugging Face transformers implementation, META_ARCHITECTURE "HFMask2Former") ---
    cfg.MODEL.MASK2FORMER = CN()
    # Backbone built offline from a transformers config: "resnet50" (44 M params, the paper's
    # Mask2Former row) or "swin_tiny" (47 M).
    cfg.MODEL.MASK2FORMER.BACKBONE = "resnet50"
    # Number of object classes (no "no-object" class included).
    cfg.MODEL.MASK2FORMER.NUM_CLASSES = 80
    # Object queries (upstream instance segmentation: 100).
    cfg.MODEL.MASK2FORMER.NUM_QUERIES = 100
    # Transformer width of pixel decoder and mask decoder.
    cfg.MODEL.MASK2FORMER.HIDDEN_DIM = 256
    # Masked-attention decoder layers (upstream DEC_LAYERS 10 = 9 layers + query-init loss).
    cfg.MODEL.MASK2FORMER.DEC_LAYERS = 10
    # Deformable-attention layers of the pixel decoder.
    cfg.MODEL.MASK2FORMER.ENC_LAYERS = 6
    # Feed-forward width of the decoder layers.
    cfg.MODEL.MASK2FORMER.DIM_FEEDFORWARD = 2048
    # Loss weights (upstream: class 2, mask BCE 5, dice 5, no-object class weight 0.1).
    cfg.MODEL.MASK2FORMER.CLASS_WEIGHT = 2.0
    # Weight of the point-sampled binary cross-entropy mask loss.
    cfg.MODEL.MASK2FORMER.MASK_WEIGHT = 5.0
    # Weight of the point-sampled dice loss.
    cfg.MODEL.MASK2FORMER.DICE_WEIGHT = 5.0
    # Classification weight of the "no object" class.
    cfg.MODEL.MASK2FORMER.NO_OBJECT_WEIGHT = 0.1
    # Loss on every intermediate decoder layer (deep supervision).
    cfg.MODEL.MASK2FORMER.DEEP_SUPERVISION = True
    # Points sampled per mask for matching and loss (upstream 112 * 112).
    cfg.MODEL.MASK2FORMER.TRAIN_NUM_POINTS = 12544
    # Oversampling ratio of the uncertainty-based point sampling.
    cfg.MODEL.MASK2FORMER.OVERSAMPLE_RATIO = 3.0
    # Fraction of the sampled points chosen by uncertainty (rest uniform).
    cfg.MODEL.MASK2FORMER.IMPORTANCE_SAMPLE_RATIO = 0.75
    # Stochastic depth of the Swin backbone (upstream Swin-T: 0.3).
    cfg.MODEL.MASK2FORMER.DROP_PATH_RATE = 0.3
    # Detections kept per image at test time, top-k over (query, class) scores (upstream 100).
    cfg.MODEL.MASK2FORMER.TEST_TOPK_PER_IMAGE = 100
    # Pad the input to a multiple of this (32 = the backbone's deepest stride).
    cfg.MODEL.MASK2FORMER.SIZE_DIVISIBILITY = 32


# Valid ranges of the keys above, checked when a config is loaded (medseg_core.config_rules).
def _timm_levels_agree(cfg):
    t = cfg.MODEL.get("TIMM")
    if t is not None and len(t.OUT_FEATURES) != len(t.OUT_INDICES):
        return [("MODEL.TIMM.OUT_INDICES", f"must have one index per MODEL.TIMM.OUT_FEATURES entry "
                                           f"({len(t.OUT_FEATURES)}), got {len(t.OUT_INDICES)}")]
    return []


def _volumetric_baselines_agree(cfg):
    b = cfg.MODEL.get("VOLUMETRIC_BASELINES")
    if b is None:
        return []
    out = []
    u = b.UNETR
    if isinstance(u.HIDDEN_SIZE, int) and isinstance(u.NUM_HEADS, int) and u.NUM_HEADS > 0 and u.HIDDEN_SIZE % u.NUM_HEADS:
        out.append(("MODEL.VOLUMETRIC_BASELINES.UNETR.NUM_HEADS",
                    f"must divide MODEL.VOLUMETRIC_BASELINES.UNETR.HIDDEN_SIZE ({u.HIDDEN_SIZE}), got {u.NUM_HEADS}"))
    d = b.DYNUNET
    if not len(d.KERNEL_SIZES) == len(d.STRIDES) == len(d.FILTERS):
        out.append(("MODEL.VOLUMETRIC_BASELINES.DYNUNET.FILTERS",
                    f"KERNEL_SIZES, STRIDES and FILTERS need one entry per level, got {len(d.KERNEL_SIZES)}, "
                    f"{len(d.STRIDES)} and {len(d.FILTERS)}"))
    return out


def _rules():
    from medseg_core.config_rules import Rule, integer, multiple_of, number, one_of, register_config_rules, sequence

    pos_int, nonneg = integer(1), number(0)
    drop = number(0, 1, hi_open=True)
    q = "MODEL.MASK2FORMER."
    register_config_rules({
        "MODEL.TIMM.OUT_INDICES": sequence(integer(0), min_len=1), "MODEL.TIMM.DROP_PATH_RATE": drop,
        "MODEL.TIMM.SIZE_DIVISIBILITY": pos_int,
        q + "BACKBONE": one_of("resnet50", "swin_tiny"), q + "NUM_CLASSES": pos_int, q + "NUM_QUERIES": pos_int,
        q + "HIDDEN_DIM": pos_int, q + "DEC_LAYERS": pos_int, q + "ENC_LAYERS": pos_int,
        q + "DIM_FEEDFORWARD": pos_int, q + "CLASS_WEIGHT": nonneg, q + "MASK_WEIGHT": nonneg,
        q + "DICE_WEIGHT": nonneg, q + "NO_OBJECT_WEIGHT": nonneg, q + "TRAIN_NUM_POINTS": pos_int,
        q + "OVERSAMPLE_RATIO": number(1), q + "IMPORTANCE_SAMPLE_RATIO": number(0, 1), q + "DROP_PATH_RATE": drop,
        q + "TEST_TOPK_PER_IMAGE": pos_int, q + "SIZE_DIVISIBILITY": pos_int,
    }, [_timm_levels_agree])
    v = "MODEL.VOLUMETRIC_BASELINES."
    triple = sequence(pos_int, length=3)
    register_config_rules({
        v + "UNETR.IMG_SIZE": sequence(multiple_of(16, 16), length=3),  # UNETR's ViT patch is 16
        v + "UNETR.FEATURE_SIZE": pos_int, v + "UNETR.HIDDEN_SIZE": pos_int, v + "UNETR.MLP_DIM": pos_int,
        v + "UNETR.NUM_HEADS": pos_int,
        # MONAI's SwinUNETR splits the embedding width into 12 parts
        v + "SWIN_UNETR.FEATURE_SIZE": multiple_of(12, 12),
        v + "SWIN_UNETR.DEPTHS": sequence(pos_int, length=4), v + "SWIN_UNETR.NUM_HEADS": sequence(pos_int, length=4),
        v + "SWIN_UNETR.WINDOW_SIZE": pos_int, v + "SWIN_UNETR.DROP_PATH_RATE": drop,
        v + "SEGRESNET.INIT_FILTERS": pos_int, v + "SEGRESNET.BLOCKS_DOWN": sequence(pos_int, min_len=1),
        v + "DYNUNET.KERNEL_SIZES": Rule(lambda k: isinstance(k, (list, tuple)) and len(k) >= 2
                                         and all(triple.ok(x) for x in k), "a list of >= 2 (d, h, w) kernel sizes"),
        v + "DYNUNET.STRIDES": Rule(lambda k: isinstance(k, (list, tuple)) and len(k) >= 2
                                    and all(triple.ok(x) for x in k), "a list of >= 2 (d, h, w) strides"),
        v + "DYNUNET.FILTERS": sequence(pos_int, min_len=2),
    }, [_volumetric_baselines_agree])


_rules()

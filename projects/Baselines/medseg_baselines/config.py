"""Config keys of the medseg_baselines project (timm backbones, Mask2Former wrapper, P3-P7
ResNet-FPN, YOLACT, SOLOv2).

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

    # --- ResNet-FPN with P3-P7 (build_resnet_fpn_p3p7_backbone, YOLACT / RetinaNet style) ---
    # Input of the two extra stride-2 3x3 convs giving P6 and P7: "p5" (the YOLACT paper: P6 from
    # P5, 256 channels in) or "res5" (C5, 2048 channels in: RetinaNet and mmdetection's YOLACT,
    # +4.1 M parameters).
    # (Its own node, not a key under Detectron2's MODEL.FPN, so that a config naming it is seen
    # to need this project.)
    cfg.MODEL.FPN_P6P7 = CN()
    cfg.MODEL.FPN_P6P7.IN_FEATURE = "p5"

    # --- YOLACT (Bolya et al., ICCV 2019; META_ARCHITECTURE "YOLACT") ---
    # Anchors come from MODEL.ANCHOR_GENERATOR (SIZES per level, ASPECT_RATIOS, OFFSET 0.5).
    cfg.MODEL.YOLACT = CN()
    # Number of object classes (the softmax classifier adds one background class).
    cfg.MODEL.YOLACT.NUM_CLASSES = 80
    # Pyramid levels of the prediction head, shallowest first (the paper: P3-P7).
    cfg.MODEL.YOLACT.IN_FEATURES = ["p3", "p4", "p5", "p6", "p7"]
    # Level the protonet (and the semantic segmentation loss) runs on (the paper: P3).
    cfg.MODEL.YOLACT.PROTO_IN_FEATURE = "p3"
    # Number of prototypes k (the paper: 32).
    cfg.MODEL.YOLACT.NUM_PROTOTYPES = 32
    # Width of the protonet's 3x3 convs (the paper: 256).
    cfg.MODEL.YOLACT.PROTO_CHANNELS = 256
    # Width of the prediction head's shared 3x3 conv (the paper: 256).
    cfg.MODEL.YOLACT.HEAD_CHANNELS = 256
    # Anchor matching (SSD, as the paper): IoU >= 0.5 positive, < 0.4 background, else ignored;
    # every ground truth also keeps its best anchor.
    cfg.MODEL.YOLACT.IOU_THRESHOLDS = [0.4, 0.5]
    # Box regression weights of the (dx, dy, dw, dh) encoding (SSD variances 0.1 / 0.2).
    cfg.MODEL.YOLACT.BBOX_REG_WEIGHTS = (10.0, 10.0, 5.0, 5.0)
    # Online hard example mining: background anchors kept per positive (SSD: 3).
    cfg.MODEL.YOLACT.NEG_POS_RATIO = 3
    # Loss weights (the paper: classification 1, box 1.5, mask 6.125, semantic segmentation 1).
    cfg.MODEL.YOLACT.LOSS_CLS_WEIGHT = 1.0
    # Weight of the smooth-L1 box loss.
    cfg.MODEL.YOLACT.LOSS_BOX_WEIGHT = 1.5
    # Weight of the assembled-mask BCE (cropped to the ground-truth box, per box area).
    cfg.MODEL.YOLACT.LOSS_MASK_WEIGHT = 6.125
    # Weight of the auxiliary semantic segmentation loss (1x1 conv on P3, sigmoid per class).
    cfg.MODEL.YOLACT.LOSS_SEM_WEIGHT = 1.0
    # At most this many positive anchors per image get a mask loss, sampled at random (the
    # reference implementation's memory cap; the paper does not say).
    cfg.MODEL.YOLACT.MASKS_TO_TRAIN = 100
    # Test: class-score threshold before Fast NMS (reference implementation: 0.05).
    cfg.MODEL.YOLACT.SCORE_THRESH_TEST = 0.05
    # Test: Fast NMS IoU threshold t (the paper: 0.5).
    cfg.MODEL.YOLACT.NMS_THRESH_TEST = 0.5
    # Test: Fast NMS candidates per class n (the paper: 200).
    cfg.MODEL.YOLACT.TOPK_PER_CLASS = 200
    # Test: detections kept per image after Fast NMS (the paper: 100).
    cfg.MODEL.YOLACT.DETECTIONS_PER_IMAGE = 100
    # Test: mask probability threshold of the assembled, box-cropped masks.
    cfg.MODEL.YOLACT.MASK_THRESH = 0.5
    # Pad the input to a multiple of this (32 = the deepest ResNet stride, as FPN needs).
    cfg.MODEL.YOLACT.SIZE_DIVISIBILITY = 32

    # --- SOLOv2 (Wang et al., NeurIPS 2020; META_ARCHITECTURE "SOLOv2") ---
    cfg.MODEL.SOLOV2 = CN()
    # Number of object classes (sigmoid classifier, no background class).
    cfg.MODEL.SOLOV2.NUM_CLASSES = 80
    # FPN levels of the category and kernel branches, shallowest first (P2-P6).
    cfg.MODEL.SOLOV2.IN_FEATURES = ["p2", "p3", "p4", "p5", "p6"]
    # Grid number S per level (the paper: 40, 36, 24, 16, 12).
    cfg.MODEL.SOLOV2.NUM_GRIDS = [40, 36, 24, 16, 12]
    # Object scale sqrt(w * h) range (input pixels) assigned to each level (the paper's
    # overlapping ranges).
    cfg.MODEL.SOLOV2.SCALE_RANGES = [[1, 96], [48, 192], [96, 384], [192, 768], [384, 2048]]
    # Stride of each level's objects: predicted masks with no more pixels than this are dropped
    # at test time (reference implementation: 8, 8, 16, 32, 32).
    cfg.MODEL.SOLOV2.LEVEL_STRIDES = [8, 8, 16, 32, 32]
    # Centre region: grid cells inside the mass centre +/- SIGMA * box size / 2 are positive,
    # at most the 3 x 3 cells around the centre cell (the paper: epsilon = 0.2).
    cfg.MODEL.SOLOV2.SIGMA = 0.2
    # Width of the category / kernel branches' convs (SOLOv2 R50: 512).
    cfg.MODEL.SOLOV2.HEAD_CHANNELS = 512
    # 3x3 conv + norm + ReLU layers in each of the two branches (the paper: 4).
    cfg.MODEL.SOLOV2.NUM_HEAD_CONVS = 4
    # Normalisation in the heads and the mask feature branch ("GN": 32 groups, as SOLOv2).
    cfg.MODEL.SOLOV2.NORM = "GN"
    # Inner width of the unified mask feature branch (SOLOv2 R50: 128).
    cfg.MODEL.SOLOV2.MASK_FEATURE_CHANNELS = 128
    # FPN levels fused by the mask feature branch (P2-P5, output at the P2 stride).
    cfg.MODEL.SOLOV2.MASK_IN_FEATURES = ["p2", "p3", "p4", "p5"]
    # Channels E of the mask feature = input channels of the dynamic kernels (SOLOv2: 256).
    cfg.MODEL.SOLOV2.MASK_DIM = 256
    # Spatial size of the predicted dynamic kernels (the paper's best: 1 -> 1x1 convs, E weights).
    cfg.MODEL.SOLOV2.KERNEL_SIZE = 1
    # Focal loss of the category branch (alpha, gamma: 0.25, 2) and its weight (1).
    cfg.MODEL.SOLOV2.FOCAL_ALPHA = 0.25
    # Focusing parameter gamma of the focal loss.
    cfg.MODEL.SOLOV2.FOCAL_GAMMA = 2.0
    # Weight of the category (focal) loss.
    cfg.MODEL.SOLOV2.LOSS_CATE_WEIGHT = 1.0
    # Weight lambda of the Dice mask loss (the paper: 3).
    cfg.MODEL.SOLOV2.LOSS_MASK_WEIGHT = 3.0
    # Initial foreground probability of the category classifier's bias (focal-loss prior).
    cfg.MODEL.SOLOV2.PRIOR_PROB = 0.01
    # Test: category-score threshold for a grid cell to produce a mask (the paper: 0.1).
    cfg.MODEL.SOLOV2.SCORE_THRESH_TEST = 0.1
    # Test: mask probability threshold (0.5).
    cfg.MODEL.SOLOV2.MASK_THRESH = 0.5
    # Test: candidates (best category scores) kept before Matrix NMS (reference: 500).
    cfg.MODEL.SOLOV2.PRE_NMS_TOPK = 500
    # Test: Matrix NMS decay "gaussian" f(iou) = exp(-iou^2 / sigma) or "linear" f = 1 - iou.
    cfg.MODEL.SOLOV2.MATRIX_NMS_KERNEL = "gaussian"
    # Test: sigma of the Gaussian decay (the paper's listing: 0.5, i.e. the reference code's 2).
    cfg.MODEL.SOLOV2.MATRIX_NMS_SIGMA = 0.5
    # Test: decayed scores below this are dropped after Matrix NMS (reference: 0.05).
    cfg.MODEL.SOLOV2.UPDATE_THRESH = 0.05
    # Test: detections kept per image (100).
    cfg.MODEL.SOLOV2.DETECTIONS_PER_IMAGE = 100
    # Pad the input to a multiple of this (32 = the deepest ResNet stride, as FPN needs).
    cfg.MODEL.SOLOV2.SIZE_DIVISIBILITY = 32


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


def _solov2_levels_agree(cfg):
    s = cfg.MODEL.get("SOLOV2")
    if s is None:
        return []
    n = len(s.IN_FEATURES)
    return [(f"MODEL.SOLOV2.{k}", f"must have one entry per MODEL.SOLOV2.IN_FEATURES level ({n}), got {len(s[k])}")
            for k in ("NUM_GRIDS", "SCALE_RANGES", "LEVEL_STRIDES") if len(s[k]) != n]


def _yolact_solov2_rules(Rule, integer, number, one_of, sequence):
    pos_int, nonneg, prob = integer(1), number(0), number(0, 1)
    y, s = "MODEL.YOLACT.", "MODEL.SOLOV2."
    return {
        "MODEL.FPN_P6P7.IN_FEATURE": Rule(lambda v: isinstance(v, str) and v != "", "'p5' or a backbone feature name"),
        y + "NUM_CLASSES": pos_int, y + "NUM_PROTOTYPES": pos_int, y + "PROTO_CHANNELS": pos_int,
        y + "HEAD_CHANNELS": pos_int, y + "IOU_THRESHOLDS": sequence(prob, length=2),
        y + "BBOX_REG_WEIGHTS": sequence(number(0, lo_open=True), length=4), y + "NEG_POS_RATIO": number(0, lo_open=True),
        y + "LOSS_CLS_WEIGHT": nonneg, y + "LOSS_BOX_WEIGHT": nonneg, y + "LOSS_MASK_WEIGHT": nonneg,
        y + "LOSS_SEM_WEIGHT": nonneg, y + "MASKS_TO_TRAIN": pos_int, y + "SCORE_THRESH_TEST": prob,
        y + "NMS_THRESH_TEST": prob, y + "TOPK_PER_CLASS": pos_int, y + "DETECTIONS_PER_IMAGE": pos_int,
        y + "MASK_THRESH": prob, y + "SIZE_DIVISIBILITY": pos_int,
        s + "NUM_CLASSES": pos_int, s + "NUM_GRIDS": sequence(pos_int), s + "LEVEL_STRIDES": sequence(pos_int),
        s + "SCALE_RANGES": sequence(sequence(nonneg, length=2, increasing=True)), s + "SIGMA": number(0, 1, lo_open=True),
        s + "HEAD_CHANNELS": pos_int, s + "NUM_HEAD_CONVS": pos_int, s + "MASK_FEATURE_CHANNELS": pos_int,
        s + "MASK_DIM": pos_int, s + "KERNEL_SIZE": integer(1), s + "FOCAL_ALPHA": prob, s + "FOCAL_GAMMA": nonneg,
        s + "LOSS_CATE_WEIGHT": nonneg, s + "LOSS_MASK_WEIGHT": nonneg, s + "PRIOR_PROB": number(0, 1, True, True),
        s + "SCORE_THRESH_TEST": prob, s + "MASK_THRESH": prob, s + "PRE_NMS_TOPK": pos_int,
        s + "MATRIX_NMS_KERNEL": one_of("gaussian", "linear"), s + "MATRIX_NMS_SIGMA": number(0, lo_open=True),
        s + "UPDATE_THRESH": prob, s + "DETECTIONS_PER_IMAGE": pos_int, s + "SIZE_DIVISIBILITY": pos_int,
    }


def _rules():
    from medseg_core.config_rules import Rule, integer, multiple_of, number, one_of, register_config_rules, sequence

    register_config_rules(_yolact_solov2_rules(Rule, integer, number, one_of, sequence), [_solov2_levels_agree])

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

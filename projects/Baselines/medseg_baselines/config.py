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

"""Config keys of the LightMedSeg project (``MODEL.LIGHTMEDSEG``).

Input channels and classes come from the shared ``MODEL.VOLUMETRIC`` keys; the defaults below
are the calibrated design (0.49 M parameters at 4 channels in / 3 classes out).
"""
from detectron2.config import CfgNode as CN


def add_lightmedseg_config(cfg) -> None:
    """Add the LightMedSeg keys to a Detectron2 config (in place)."""
    cfg.MODEL.LIGHTMEDSEG = CN()
    # Output width of the stride-2 GhostConv3D stem (half primary conv, half cheap depthwise).
    cfg.MODEL.LIGHTMEDSEG.STEM_CHANNELS = 32
    # Widths of the four encoder stages at D/2, D/4, D/8, D/16 (decoder levels reuse the
    # first three, in reverse).
    cfg.MODEL.LIGHTMEDSEG.ENCODER_CHANNELS = (24, 48, 72, 112)
    # Number K of spatial anchors predicted by the Global Anchor Detector.
    cfg.MODEL.LIGHTMEDSEG.NUM_ANCHORS = 8
    # Temperature of the spatial softmax before the soft-argmax (lower = sharper anchors).
    cfg.MODEL.LIGHTMEDSEG.ANCHOR_TEMPERATURE = 1.0
    # Kernel of the LSPM's depthwise smoothing filter (its high-pass is f - smooth(f)).
    cfg.MODEL.LIGHTMEDSEG.LSPM_KERNEL = 5
    # Common width the skip router projects every encoder output to.
    cfg.MODEL.LIGHTMEDSEG.ROUTER_CHANNELS = 32
    # Expansion of the pointwise MLP in each encoder stage.
    cfg.MODEL.LIGHTMEDSEG.MLP_RATIO = 2.0
    # Squeeze-and-excitation reduction in encoder and decoder stages.
    cfg.MODEL.LIGHTMEDSEG.SE_REDUCTION = 4
    # Dilation of the "context" depthwise path of texture routing ("detail" is undilated).
    cfg.MODEL.LIGHTMEDSEG.CONTEXT_DILATION = 2
    # Feed anchor distances |p - s_k| besides offsets to the position bias (offsets alone
    # collapse to an absolute-position ramp under a 1x1 conv; see position_bias.py).
    cfg.MODEL.LIGHTMEDSEG.POSITION_BIAS_DISTANCE = True
    # Normalisation after every convolution: "GN", "IN" or "BN" (not named by the paper).
    cfg.MODEL.LIGHTMEDSEG.NORM = "GN"
    # GroupNorm groups (gcd with the channel count is used).
    cfg.MODEL.LIGHTMEDSEG.NORM_GROUPS = 4


# Valid ranges of the keys above, checked when a config is loaded (medseg_core.config_rules).
def _rules():
    from medseg_core.config_rules import integer, number, odd_integer, one_of, register_config_rules, sequence

    pos_int = integer(1)
    m = "MODEL.LIGHTMEDSEG."
    register_config_rules({
        m + "STEM_CHANNELS": pos_int, m + "ENCODER_CHANNELS": sequence(pos_int, length=4),
        m + "NUM_ANCHORS": pos_int, m + "ANCHOR_TEMPERATURE": number(0, lo_open=True),
        m + "LSPM_KERNEL": odd_integer(1), m + "ROUTER_CHANNELS": pos_int, m + "MLP_RATIO": number(0, lo_open=True),
        m + "SE_REDUCTION": pos_int, m + "CONTEXT_DILATION": pos_int, m + "NORM": one_of("GN", "IN", "BN"),
        m + "NORM_GROUPS": pos_int,
    })


_rules()

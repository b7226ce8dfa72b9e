"""LMSF-A parameter / FLOP targets (docs/lmsfa.md, "Counts") and deploy-fusion equivalence.

Counts are taken from the configs under configs/Endoscapes-InstanceSegmentation at nc = 4 (the
PELD class count the paper's numbers are for). FLOPs of the table rows are counted with the
legacy-thop rules on the meta device (shapes only, no arithmetic), so all rows stay cheap; the
model_card test runs the real tool end to end once per model.
"""
import copy
import importlib.util
import json
import os

import pytest
import torch
from torch import nn

from detectron2.layers import ShapeSpec
from detectron2.modeling import build_backbone
from medseg_core.complexity import count_parameters, thop_legacy_ops
from medseg_core.testing import load_test_cfg

from lmsfa.heads import IN_FEATURES, build_lmsfa_head

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CFG_DIR = os.path.join(REPO, "configs", "Endoscapes-InstanceSegmentation")
ABL = os.path.join(CFG_DIR, "ablations")

# (config, exact params at nc = 4, GFLOPs 2 x thop at 640, paper params M, paper GFLOPs) — Table V
TABLE_V = [
    ("tab3_1_c2f_pan_segment.yaml", 3_264_396, 12.111, 3.2, 12.1),
    ("tab3_2_c2fpro_pan_segment.yaml", 2_544_252, 10.391, 2.5, 10.3),
    ("tab3_3_c2f_asf_segment.yaml", 3_304_524, 12.547, 3.2, 12.4),
    ("tab3_4_c2f_pan_lmsh.yaml", 2_505_095, 10.163, 2.5, 10.0),
    ("tab3_5_c2fpro_asf_segment.yaml", 2_584_380, 10.826, 2.5, 10.7),
    ("tab3_6_c2fpro_pan_lmsh.yaml", 1_784_951, 8.442, 1.9, 8.4),
    ("tab3_7_c2f_asf_lmsh.yaml", 2_545_223, 10.599, 2.5, 10.6),
    ("tab3_8_c2fpro_asf_lmsh.yaml", 1_825_079, 8.878, 1.8, 8.8),
]
# Side studies (Tables VI-VIII) and EMA placement: regression values measured with this code.
OTHERS = [
    ("tab6_attention_se.yaml", 2_552_892, 10.345),
    ("tab6_attention_afgc.yaml", 2_565_130, 10.345),
    ("tab6_attention_cpca.yaml", 2_605_884, 10.515),
    ("tab6_attention_simam.yaml", 2_540_284, 10.344),
    ("tab6_attention_ema.yaml", 2_544_252, 10.391),
    ("tab7_backbone_c2f_contextguided.yaml", 2_358_835, 9.842),
    ("tab7_backbone_c2f_faster.yaml", 2_559_196, 10.350),
    ("tab7_backbone_c2f_star.yaml", 2_857_596, 11.233),
    ("tab7_backbone_c2f_pro.yaml", 2_544_252, 10.391),
    ("tab8_head_ladh.yaml", 2_513_516, 9.276),
    ("tab8_head_lqe.yaml", 3_268_623, 12.134),
    ("tab8_head_efficienthead.yaml", 4_093_068, 12.071),
    ("tab8_head_lmsh.yaml", 2_505_095, 10.163),
    ("lmsfa_lmsh_lqe.yaml", 1_829_306, None),
    ("ema_placement_all.yaml", 1_829_623, 8.992),
    ("ema_placement_none.yaml", 1_821_111, 8.831),
    ("diag_c2f_pan_lmsh_bncoef.yaml", 2_619_783, 10.535),
    ("diag_c2f_pan_lmsh_bncoef_sameshape.yaml", 2_505_095, 10.168),
    ("diag_lmsfa_bncoef_sameshape.yaml", 1_825_079, 8.882),
]


class Network(nn.Module):
    """backbone + head on an image tensor (what the meta-architecture's complexity_forward runs)."""

    def __init__(self, cfg):
        super().__init__()
        self.backbone = build_backbone(cfg)
        self.head = build_lmsfa_head(cfg, self.backbone.output_shape())

    def forward(self, x):
        f = self.backbone(x)
        return self.head([f[k] for k in IN_FEATURES])


def cfg_for(path, *opts):
    return load_test_cfg(path, "MODEL.LMSFA.NUM_CLASSES", 4, *opts)


def counts_on_meta(cfg, size=640):
    with torch.device("meta"):
        net = Network(cfg).eval()
        x = torch.empty(1, 3, size, size)
    ops, _ = thop_legacy_ops(net, lambda: net(x))
    return count_parameters(net), 2 * ops / 1e9


@pytest.mark.parametrize("name,params,gflops,paper_m,paper_g", TABLE_V, ids=[r[0][:-5] for r in TABLE_V])
def test_table_v_rows(name, params, gflops, paper_m, paper_g):
    p, g = counts_on_meta(cfg_for(os.path.join(ABL, name)))
    assert p == params
    assert g == pytest.approx(gflops, abs=1e-3)
    # within 0.1 M params (at the paper's one-decimal precision) and 0.3 GFLOPs of Table V
    assert abs(round(p / 1e6, 1) - paper_m) <= 0.1 + 1e-9
    assert abs(g - paper_g) <= 0.3


@pytest.mark.parametrize("name,params,gflops", OTHERS, ids=[r[0][:-5] for r in OTHERS])
def test_side_study_configs(name, params, gflops):
    p, g = counts_on_meta(cfg_for(os.path.join(ABL, name)))
    assert p == params
    if gflops is not None:
        assert g == pytest.approx(gflops, abs=1e-3)


def test_leaf_configs_hit_the_targets():
    p, g = counts_on_meta(cfg_for(os.path.join(CFG_DIR, "lmsfa_n_640.yaml")))
    assert 1_820_000 <= p <= 1_840_000 and 8.6 <= g <= 9.1
    p, g = counts_on_meta(cfg_for(os.path.join(CFG_DIR, "yolov8seg_n_640.yaml")))
    assert p == 3_264_396 and round(g, 1) == 12.1
    # nc = 80 sanity value of Ultralytics yolov8n-seg
    p, _ = counts_on_meta(cfg_for(os.path.join(CFG_DIR, "yolov8seg_n_640.yaml"), "MODEL.LMSFA.NUM_CLASSES", 80))
    assert p == 3_409_968


def test_backbone_output_shapes_and_registry():
    cfg = cfg_for(os.path.join(CFG_DIR, "lmsfa_n_640.yaml"))
    bb = build_backbone(cfg)
    assert bb.size_divisibility == 32
    assert {k: (v.channels, v.stride) for k, v in bb.output_shape().items()} == {
        "p3": (64, 8), "p4": (128, 16), "p5": (256, 32)
    }
    out = bb.eval()(torch.zeros(1, 3, 96, 64))
    assert out["p3"].shape == (1, 64, 12, 8) and out["p5"].shape == (1, 256, 3, 2)
    with pytest.raises(ValueError, match="divisible by 32"):
        bb(torch.zeros(1, 3, 100, 64))


def test_head_outputs_contract():
    cfg = cfg_for(os.path.join(CFG_DIR, "lmsfa_n_640.yaml"), "MODEL.LMSFA.NUM_CLASSES", 6)
    net = Network(cfg).eval()
    o = net(torch.zeros(2, 3, 128, 96))
    assert o.strides == [8, 16, 32]
    assert [t.shape for t in o.box] == [(2, 64, 16, 12), (2, 64, 8, 6), (2, 64, 4, 3)]
    assert [t.shape[1] for t in o.cls] == [6, 6, 6] and [t.shape[1] for t in o.coef] == [32, 32, 32]
    assert o.protos.shape == (2, 32, 32, 24)
    # YOLOv8 bias priors: box 1.0, cls log(5 / nc / (640 / 16)^2) for the shared LMSH predictor
    assert torch.all(net.head.cv2.bias == 1.0)
    assert net.head.cv3.bias[0].item() == pytest.approx(float(torch.log(torch.tensor(5 / 6 / 40 ** 2))))


def _randomize_bn(m):
    g = torch.Generator().manual_seed(0)
    for mod in m.modules():
        if isinstance(mod, (nn.BatchNorm2d, nn.BatchNorm3d)):
            c = mod.num_features
            mod.running_mean.copy_(torch.rand(c, generator=g) - 0.5)
            mod.running_var.copy_(torch.rand(c, generator=g) + 0.5)
            mod.weight.data.copy_(torch.rand(c, generator=g) + 0.5)
            mod.bias.data.copy_(torch.rand(c, generator=g) - 0.5)


def _assert_fused_equal(net, x):
    _randomize_bn(net)
    net.eval()
    with torch.no_grad():
        ref = net(x)
        fused = copy.deepcopy(net)
        for m in fused.children():
            m.fuse()
        out = fused(x)
    assert count_parameters(fused) < count_parameters(net)
    assert not any(isinstance(m, (nn.BatchNorm2d, nn.BatchNorm3d)) for m in fused.modules())
    for a, b in zip(ref.box + ref.cls + ref.coef + [ref.protos], out.box + out.cls + out.coef + [out.protos]):
        assert (a - b).abs().max().item() < 1e-4


@pytest.mark.parametrize("name", ["tab3_8_c2fpro_asf_lmsh.yaml", "tab3_1_c2f_pan_segment.yaml"])
def test_fused_equals_unfused(name):
    torch.manual_seed(0)
    _assert_fused_equal(Network(cfg_for(os.path.join(ABL, name))), torch.rand(1, 3, 96, 64))


class _HeadOnly(nn.Module):
    def __init__(self, head):
        super().__init__()
        self.head = head

    def forward(self, feats):
        return self.head(feats)


# P3-P5 feature shapes at the n scale (what the heads see from the backbone / neck).
N_SCALE_SHAPES = {k: ShapeSpec(channels=c, stride=s) for k, c, s in zip(IN_FEATURES, (64, 128, 256), (8, 16, 32))}


def row4_head(name):
    """Table III row 4's head (C2f, PAN) built under the given head name."""
    cfg = cfg_for(os.path.join(ABL, "tab3_4_c2f_pan_lmsh.yaml"), "MODEL.LMSFA.HEAD", name)
    return build_lmsfa_head(cfg, N_SCALE_SHAPES)


@pytest.mark.parametrize(
    "head", ["LADH", "LQE", "LMSH_LQE", "EfficientHead", "LMSH_BNCoef", "LMSH_BNCoefSameShape"]
)
def test_comparator_heads_fuse_and_shapes(head):
    torch.manual_seed(0)
    cfg = cfg_for(os.path.join(CFG_DIR, "yolov8seg_n_640.yaml"), "MODEL.LMSFA.HEAD", head)
    net = _HeadOnly(build_lmsfa_head(cfg, N_SCALE_SHAPES))
    feats = [torch.randn(1, c, 8 // i, 8 // i) for c, i in zip((64, 128, 256), (1, 2, 4))]
    out = net(feats)
    assert [t.shape[1] for t in out.box] == [64] * 3 and [t.shape[1] for t in out.cls] == [4] * 3
    _assert_fused_equal(net, feats)


def test_lmsh_bncoef_is_lmsh_with_yolov8_coefficient_branch():
    """The diagnostic head differs from LMSH only in cv4, which is YOLOv8 Segment's, shape for shape."""

    def head_shapes(name):
        return {k: tuple(v.shape) for k, v in row4_head(name).state_dict().items()}

    lmsh, diag, segment = head_shapes("LMSH"), head_shapes("LMSH_BNCoef"), head_shapes("Segment")
    coef = lambda d: {k: v for k, v in d.items() if k.startswith("cv4.")}  # noqa: E731
    rest = lambda d: {k: v for k, v in d.items() if not k.startswith("cv4.")}  # noqa: E731
    assert rest(diag) == rest(lmsh)
    assert coef(diag) == coef(segment) != coef(lmsh)


def test_lmsh_bncoef_same_shape_swaps_only_the_coefficient_norm():
    """Same tensors as LMSH except that cv4's GroupNorms are BatchNorms (running statistics added)."""
    lmsh, diag = row4_head("LMSH"), row4_head("LMSH_BNCoefSameShape")
    params = lambda m: [(k, tuple(v.shape)) for k, v in m.named_parameters()]  # noqa: E731
    assert params(diag) == [(k.replace(".gn.", ".bn.") if k.startswith("cv4.") else k, s) for k, s in params(lmsh)]
    norms = lambda m: {type(x) for x in m.cv4.modules() if isinstance(x, (nn.GroupNorm, nn.BatchNorm2d))}  # noqa: E731
    assert norms(lmsh) == {nn.GroupNorm} and norms(diag) == {nn.BatchNorm2d}
    assert {type(x) for x in diag.share_conv.modules() if isinstance(x, nn.GroupNorm)} == {nn.GroupNorm}


def _model_card():
    spec = importlib.util.spec_from_file_location("model_card", os.path.join(REPO, "tools", "model_card.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_model_card_json_lmsfa(capsys):
    rc = _model_card().main([
        "--config-file", os.path.join(CFG_DIR, "lmsfa_n_640.yaml"), "--json", "MODEL.LMSFA.NUM_CLASSES", "4",
    ])
    assert rc == 0
    card = json.loads(capsys.readouterr().out)
    assert card["meta_architecture"] == "LMSFA"
    assert card["params"] == 1_825_079
    assert card["params_fused"] == 1_816_103
    assert card["convention"] == "thop2x" and card["input_shape"] == [3, 640, 640]
    assert 8.6 <= card["gflops_paper"] <= 9.1
    assert card["gflops_paper"] == pytest.approx(8.878, abs=1e-3)
    assert card["gflops_fvcore"] == pytest.approx(4.095, abs=0.01)


def test_model_card_json_yolov8seg_fused(capsys):
    rc = _model_card().main([
        "--config-file", os.path.join(CFG_DIR, "yolov8seg_n_640.yaml"), "--json", "--fused", "--no-fvcore",
        "MODEL.LMSFA.NUM_CLASSES", "4",
    ])
    assert rc == 0
    card = json.loads(capsys.readouterr().out)
    assert card["params"] == 3_264_396 and card["params_fused"] < card["params"]
    assert card["fused"] is True and card["gflops_fvcore"] is None
    # folded BatchNorms are no longer counted: the fused model is cheaper than the paper's 12.1
    assert 11.0 < card["gflops_paper"] < 12.1

"""YOLO11n-seg in the lmsfa family (MODEL.LMSFA.ARCH "YOLO11"): exact Ultralytics sizes, module
structure, fuse() equivalence, training and inference on the smoke set."""
import os

import pytest
import torch
from torch import nn

import medseg_core  # noqa: F401

from detectron2.layers import ShapeSpec
from detectron2.modeling import build_backbone, build_model
from medseg_core.complexity import count_parameters, thop_legacy_ops
from medseg_core.testing import inference_outputs, load_test_cfg, train_steps

from lmsfa.heads import IN_FEATURES, YOLO11Segment, build_lmsfa_head
from lmsfa.modules import C2PSA, C3k2, DWConv, PSAAttention

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENDO = os.path.join(REPO, "configs", "Endoscapes-InstanceSegmentation", "yolo11seg_n_640.yaml")
INSTANT = os.path.join(REPO, "configs", "quick_schedules", "yolo11seg_instant_test.yaml")


class Network(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.backbone = build_backbone(cfg)
        self.head = build_lmsfa_head(cfg, self.backbone.output_shape())

    def forward(self, x):
        f = self.backbone(x)
        return self.head([f[k] for k in IN_FEATURES])


def _counts(*opts, size=640):
    cfg = load_test_cfg(ENDO, *opts)
    with torch.device("meta"):
        net = Network(cfg).eval()
        x = torch.empty(1, 3, size, size)
    ops, _ = thop_legacy_ops(net, lambda: net(x))
    return count_parameters(net), 2 * ops / 1e9


def test_yolo11n_seg_has_ultralytics_parameter_count_at_nc4():
    params, gflops = _counts("MODEL.LMSFA.NUM_CLASSES", "4")
    assert params == 2_843_388
    # Ultralytics' convention (2 x legacy-thop, attention products not counted), measured here
    assert gflops == pytest.approx(10.358, abs=2e-3)


@pytest.mark.parametrize("width,depth,max_ch,expected", [
    (0.25, 0.50, 1024, 2_876_848),   # n
    (0.50, 0.50, 1024, 10_113_248),  # s
    (1.00, 0.50, 512, 22_420_896),   # m: C3k in every C3k2
    (1.00, 1.00, 512, 27_678_368),   # l
], ids=["n", "s", "m", "l"])
def test_yolo11_seg_scales_match_ultralytics_yaml_at_nc80(width, depth, max_ch, expected):
    params, _ = _counts("MODEL.LMSFA.NUM_CLASSES", "80", "MODEL.LMSFA.WIDTH_MULTIPLE", width,
                        "MODEL.LMSFA.DEPTH_MULTIPLE", depth, "MODEL.LMSFA.MAX_CHANNELS", max_ch)
    assert params == expected


def test_module_structure():
    # C2PSA at n-scale: 256 channels, half (128) through one PSA block of 2 heads x 64 channels
    psa = C2PSA(256, 256, 1)
    att = psa.m[0].attn
    assert isinstance(att, PSAAttention) and (att.num_heads, att.head_dim, att.key_dim) == (2, 64, 32)
    assert count_parameters(psa) == 249_728
    x = torch.randn(2, 256, 5, 7)
    assert psa.eval()(x).shape == x.shape
    # C3k2 without C3k: bottleneck of ratio 0.5 inside (3x3 c -> c/2 -> c)
    blk = C3k2(32, 64, 1, c3k=False, e=0.25)
    assert blk.c == 16 and blk.m[0].cv1.conv.out_channels == 8 and count_parameters(blk) == 6_640
    assert count_parameters(C3k2(128, 128, 1, c3k=True)) == 87_040
    # YOLO11 Segment head: depthwise 3x3 -> 1x1, twice, then the 1x1 predictor in the class branch
    head = YOLO11Segment([64, 128, 256], [8, 16, 32], 4)
    cls = head.cv3[1]
    assert isinstance(cls[0][0], DWConv) and cls[0][0].conv.groups == 128 and cls[0][1].conv.kernel_size == (1, 1)
    assert isinstance(cls[1][0], DWConv) and cls[1][0].conv.groups == 64
    assert isinstance(cls[2], nn.Conv2d) and cls[2].out_channels == 4
    assert count_parameters(head) == 684_220


def test_backbone_outputs_and_wrong_switches_are_refused():
    cfg = load_test_cfg(ENDO, "MODEL.LMSFA.NUM_CLASSES", "4")
    bb = build_backbone(cfg)
    bottom = bb.bottom_up.output_shape()
    assert {k: (v.channels, v.stride) for k, v in bottom.items()} == {
        "s4": (64, 4), "s8": (128, 8), "s16": (128, 16), "s32": (256, 32), "sppf": (256, 32), "psa": (256, 32)}
    assert {k: (v.channels, v.stride) for k, v in bb.output_shape().items()} == {
        "p3": (64, 8), "p4": (128, 16), "p5": (256, 32)}
    out = bb.eval()(torch.zeros(1, 3, 96, 64))
    assert out["p3"].shape == (1, 64, 12, 8) and out["p5"].shape == (1, 256, 3, 2)
    with pytest.raises(ValueError, match="NECK = 'ASF'"):
        build_backbone(load_test_cfg(ENDO, "MODEL.LMSFA.NECK", "ASF"), ShapeSpec(channels=3))
    with pytest.raises(ValueError, match="unknown MODEL.LMSFA.ARCH"):
        build_backbone(load_test_cfg(ENDO, "MODEL.LMSFA.ARCH", "YOLOv9"), ShapeSpec(channels=3))


def _randomise_bn(model):
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)


def test_fuse_equals_unfused(one_thread):
    cfg = load_test_cfg(INSTANT)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    _randomise_bn(model)
    x = torch.rand(1, 3, 128, 96)
    with torch.no_grad():
        ref = model.complexity_forward(x)
        n_before = count_parameters(model)
        fused = model.fuse().complexity_forward(x)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert count_parameters(model) < n_before
    assert len(ref) == 10 and ref[-1].shape == (1, 32, 32, 24)
    assert max(float((a - b).abs().max()) for a, b in zip(ref, fused)) < 1e-4


def test_instant_config_trains_and_predicts_at_original_size(one_thread):
    cfg = load_test_cfg(INSTANT, "INPUT.YOLO.MOSAIC_PROB", "0.0", "INPUT.YOLO.SCALE", "0.0",
                        "INPUT.YOLO.TRANSLATE", "0.0", "INPUT.YOLO.FLIP_LR", "0.0", "INPUT.YOLO.HSV_H", "0.0",
                        "INPUT.YOLO.HSV_S", "0.0", "INPUT.YOLO.HSV_V", "0.0", "SOLVER.IMS_PER_BATCH", "2",
                        "DATALOADER.ASPECT_RATIO_GROUPING", "False")
    torch.manual_seed(0)
    hist = [sum(h.values()) for h in train_steps(cfg, 10)]
    assert all(torch.isfinite(torch.tensor(hist)))
    assert sum(hist[-3:]) / 3 < sum(hist[:3]) / 3, hist
    torch.manual_seed(0)
    cfg = load_test_cfg(INSTANT, "MODEL.LMSFA.TEST_CONF_THRESH", "0.0", "MODEL.LMSFA.TEST_MAX_DET", "5")
    model = build_model(cfg)
    for inp, out in inference_outputs(cfg, model, "smoke_peld_val", 1):
        inst = out["instances"]
        assert inst.image_size == (inp["height"], inp["width"])
        assert inst.pred_masks.shape[1:] == (inp["height"], inp["width"]) and 0 < len(inst) <= 5

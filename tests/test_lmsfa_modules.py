"""LMSF-A paper modules: output shapes, parameter formulas (docs/lmsfa.md), re-parameterisation
equivalence (RepVGGDW, RVB, Conv-BN, SSFF), EMA against hand-computed cases, DFL decoding."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lmsfa.dfl import DFL, bbox2dist, dfl_decode, dist2bbox, make_anchors
from lmsfa.fuse import fuse_model
from lmsfa.heads.lqe import LocationQualityEstimator
from lmsfa.modules.sppf import separable_max_pool
from lmsfa.modules import (
    CPCA, EMA, SPPF, AFGCAttention, Add, C2f, C2fContextGuided, C2fFaster, C2fPro, C2fStar, ConvBNAct,
    ConvGNAct, Proto, RepVGGDW, RepViTBlock, ScaleSequenceFusion, SimAM, SqueezeExcite, ZoomCat,
    build_attention, build_csp_block,
)


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def randomize_bn(m: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    for mod in m.modules():
        if isinstance(mod, (nn.BatchNorm2d, nn.BatchNorm3d)):
            c = mod.num_features
            mod.running_mean.copy_(torch.rand(c, generator=g) - 0.5)
            mod.running_var.copy_(torch.rand(c, generator=g) + 0.5)
            mod.weight.data.copy_(torch.rand(c, generator=g) + 0.5)
            mod.bias.data.copy_(torch.rand(c, generator=g) - 0.5)
    return m


# ------------------------------------------------------------------ parameter formulas, shapes
def test_conv_bn_act_params_and_shape():
    m = ConvBNAct(16, 32, 3, 2)
    assert n_params(m) == 16 * 32 * 9 + 2 * 32
    assert m(torch.zeros(2, 16, 20, 14)).shape == (2, 32, 10, 7)


@pytest.mark.parametrize("c1,c2,n", [(32, 32, 1), (64, 64, 2), (384, 128, 1)])
def test_c2f_param_formula(c1, c2, n):
    c = c2 // 2
    m = C2f(c1, c2, n, shortcut=True)
    assert n_params(m) == 2 * c * c1 + 4 * c + (2 + n) * c * c2 + 2 * c2 + n * (18 * c * c + 4 * c)
    assert m(torch.zeros(1, c1, 8, 8)).shape == (1, c2, 8, 8)


def test_repvggdw_and_rvb_param_formulas():
    c = 24
    assert n_params(RepVGGDW(c)) == 15 * c
    rvb = RepViTBlock(c, None)
    assert n_params(rvb) == 15 * c + 4 * c * c + 6 * c
    # zero-initialised last BN weight: the channel mixer starts as the identity residual
    assert torch.all(rvb.channel_mixer.m[2].bn.weight == 0)


@pytest.mark.parametrize("c", [16, 64, 128])
def test_ema_param_formula(c):
    cg = c // 8
    assert n_params(EMA(c, 8)) == 10 * cg * cg + 4 * cg
    assert EMA(c, 8)(torch.randn(2, c, 5, 7)).shape == (2, c, 5, 7)


def test_ema_rejects_indivisible_channels():
    with pytest.raises(ValueError, match="EMA_FACTOR"):
        EMA(12, 8)


@pytest.mark.parametrize("c1,c2,n", [(32, 32, 1), (64, 64, 2), (384, 128, 1)])
def test_c2f_pro_param_formula(c1, c2, n):
    c = c2 // 2
    cg = c // 8
    skeleton = 2 * c * c1 + 4 * c + (2 + n) * c * c2 + 2 * c2
    rvb = 4 * c * c + 21 * c
    assert n_params(C2fPro(c1, c2, n, attention="none")) == skeleton + n * rvb
    assert n_params(C2fPro(c1, c2, n, attention="EMA")) == skeleton + n * (rvb + 10 * cg * cg + 4 * cg)
    # backbone layer 2 of the n-scale model (docs/lmsfa.md, C2f-Pro)
    assert n_params(C2fPro(32, 32, 1, attention="EMA")) == 4096


def test_sppf_ssff_proto_param_formulas():
    c1, c2 = 256, 256
    assert n_params(SPPF(c1, c2)) == c1 * (c1 // 2) + c1 + 2 * c1 * c2 + 2 * c2 == 164608
    C, c4, c5 = 64, 128, 256
    assert n_params(ScaleSequenceFusion([64, c4, c5], C)) == (C * c4 + 2 * C) + (C * c5 + 2 * C) + C * C + C + 2 * C
    assert n_params(ScaleSequenceFusion([64, 128, 256], 64)) == 29120
    c1, c_, nm = 64, 64, 32
    assert n_params(Proto(c1, c_, nm)) == (
        9 * c1 * c_ + 2 * c_ + 4 * c_ * c_ + c_ + 9 * c_ * c_ + 2 * c_ + nm * c_ + 2 * nm
    )
    assert Proto(64, 64, 32)(torch.zeros(1, 64, 10, 12)).shape == (1, 32, 20, 24)


def test_ssff_shape_and_scale_max():
    m = ScaleSequenceFusion([16, 32, 64], 16).eval()
    y = m([torch.randn(2, 16, 16, 12), torch.randn(2, 32, 8, 6), torch.randn(2, 64, 4, 3)])
    assert y.shape == (2, 16, 16, 12)
    assert isinstance(m.conv0, nn.Identity)  # P3 already has the SSFF width: no projection


def test_zoomcat_pools_large_and_upsamples_small():
    large = torch.arange(16.0).view(1, 1, 4, 4)
    medium = torch.full((1, 1, 2, 2), -1.0)
    small = torch.tensor([[[[7.0]]]])
    y = ZoomCat()([large, medium, small])
    assert y.shape == (1, 3, 2, 2)
    # top-left 2x2 window of `large` is [0, 1, 4, 5]: max 5 + mean 2.5
    assert y[0, 0, 0, 0] == 7.5
    assert torch.all(y[0, 1] == -1.0) and torch.all(y[0, 2] == 7.0)


def test_zoomcat_fast_path_equals_adaptive_pools():
    torch.manual_seed(0)
    large, medium, small = torch.randn(2, 8, 20, 24), torch.randn(2, 8, 10, 12), torch.randn(2, 8, 5, 6)
    ref = torch.cat([
        F.adaptive_max_pool2d(large, (10, 12)) + F.adaptive_avg_pool2d(large, (10, 12)),
        medium, F.interpolate(small, size=(10, 12), mode="nearest")], dim=1)
    assert torch.equal(ZoomCat()([large, medium, small]), ref)
    # not exactly 2x: the adaptive pools are used
    odd = torch.randn(1, 8, 21, 24)
    ref = F.adaptive_max_pool2d(odd, (10, 12)) + F.adaptive_avg_pool2d(odd, (10, 12))
    assert torch.equal(ZoomCat()([odd, medium[:1], small[:1]])[:, :8], ref)
    # the module's reference switch takes the adaptive pools even at exactly 2x (same values)
    m = ZoomCat()
    m.use_reference_path = True
    ref2 = F.adaptive_max_pool2d(large, (10, 12)) + F.adaptive_avg_pool2d(large, (10, 12))
    assert torch.allclose(m([large, medium, small])[:, :8], ref2, atol=1e-6)


@pytest.mark.parametrize("k", [3, 5, 7])
def test_separable_max_pool_equals_max_pool2d(k):
    torch.manual_seed(k)
    x = torch.randn(2, 4, 9, 13) - 3.0  # all-negative borders matter: padding must be -inf, not 0
    assert torch.equal(separable_max_pool(x, k), F.max_pool2d(x, k, 1, k // 2))
    with pytest.raises(ValueError, match="odd kernel"):
        separable_max_pool(x, 4)


def test_sppf_eval_path_equals_training_path():
    torch.manual_seed(1)
    m = randomize_bn(SPPF(16, 24)).eval()
    x = torch.randn(1, 16, 20, 20)
    with torch.no_grad():
        fast = m(x)
        m.use_reference_path = True
        assert torch.equal(fast, m(x))
        m.use_reference_path = False
        m.train()
        m.cv1.bn.eval(), m.cv2.bn.eval()  # keep running statistics: only the pooling path changes
        assert torch.equal(fast, m(x))


def ssff_with_random_statistics(seed: int) -> ScaleSequenceFusion:
    """An eval-mode SSFF whose BatchNorm2d/3d carry non-trivial running statistics."""
    torch.manual_seed(seed)
    m = randomize_bn(ScaleSequenceFusion([16, 32, 64], 24)).eval()
    with torch.no_grad():
        m.bn.running_mean.uniform_(-1, 1)
        m.bn.running_var.uniform_(0.5, 2)
    return m


def test_ssff_inference_path_equals_stacked_scale_max():
    m = ssff_with_random_statistics(3)
    with torch.no_grad():
        xs = [torch.randn(2, 16, 8, 10), torch.randn(2, 32, 4, 5), torch.randn(2, 64, 2, 3)]
        p3, p4, p5 = m.conv0(xs[0]), m.conv1(xs[1]), m.conv2(xs[2])
        p4, p5 = (F.interpolate(p, size=(8, 10), mode="nearest") for p in (p4, p5))
        ref = m.pool_3d(m.act(m.bn(m.conv3d(torch.stack([p3, p4, p5], 2))))).squeeze(2)
        assert (m(xs) - ref).abs().max() < 1e-6
        m.use_reference_path = True  # the module's own switch: the stacked form in eval mode
        assert (m(xs) - ref).abs().max() == 0


def _calls(module: nn.Module) -> list:
    calls = []
    module.register_forward_hook(lambda *a: calls.append(1))
    return calls


def test_reference_path_switches_are_per_module_and_restored_after_counting():
    from medseg_core.complexity import reference_paths, set_reference_paths, thop_legacy_ops

    torch.manual_seed(4)
    a, b = SPPF(8, 8).eval(), SPPF(8, 8).eval()
    pools_a, pools_b = _calls(a.m), _calls(b.m)
    x = torch.randn(1, 8, 10, 10)
    with torch.no_grad():
        fast = a(x)
        assert not pools_a  # eval mode: the separable pools, nn.MaxPool2d not called
        assert set_reference_paths(a, True) == 1
        assert torch.equal(a(x), fast) and len(pools_a) == 3  # reference path, same values
        b(x)
        assert not pools_b  # the other model is untouched: no process-wide state
        set_reference_paths(a, False)
        with reference_paths(b):
            b(x)
        assert len(pools_b) == 3 and b.use_reference_path is False  # restored
        thop_legacy_ops(b, lambda: b(x))
        assert len(pools_b) == 6 and b.use_reference_path is False  # counting takes the reference path


def test_add():
    a, b = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    assert torch.equal(Add()([a, b]), a + b)


@pytest.mark.parametrize("name", ["SE", "SimAM", "CPCA", "AFGC", "EMA"])
def test_attention_modules_keep_shape(name):
    m = build_attention(name, 32)
    x = torch.randn(2, 32, 6, 5)
    assert m(x).shape == x.shape
    assert build_attention("none", 32) is None


def test_attention_param_formulas():
    c = 32
    assert n_params(SqueezeExcite(c)) == c * 8 + 8 + 8 * c + c  # rd = 8
    assert n_params(SimAM()) == 0
    assert n_params(CPCA(c)) == (
        (c * (c // 4) + c // 4) + ((c // 4) * c + c) + (25 * c + c) + 2 * (7 * c + c)
        + 2 * (11 * c + c) + 2 * (21 * c + c) + (c * c + c)
    )
    k = 3  # odd(|log2(32) + 1| / 2) = odd(3)
    assert n_params(AFGCAttention(c)) == k + c * c + c + 1
    with pytest.raises(ValueError, match="unknown attention"):
        build_attention("CBAM", 32)


def test_simam_hand_computed():
    x = torch.tensor([[[[1.0, 2.0], [3.0, 6.0]]]])
    mu, n = 3.0, 3
    d = (x - mu) ** 2
    expected = x * torch.sigmoid(d / (4 * (d.sum() / n + 1e-4)) + 0.5)
    assert torch.allclose(SimAM()(x), expected)


@pytest.mark.parametrize("cls", [C2fFaster, C2fStar, C2fContextGuided])
def test_c2f_variants_shapes(cls):
    m = cls(32, 32, 2).eval()
    assert m(torch.randn(1, 32, 8, 10)).shape == (1, 32, 8, 10)
    with pytest.raises(ValueError, match="unknown block"):
        build_csp_block("C3", 32, 32, 1, True)


def test_conv_gn_rejects_bad_groups():
    with pytest.raises(ValueError, match="HEAD_GN_GROUPS"):
        ConvGNAct(16, 24, 3, gn_groups=16)


# ------------------------------------------------------------------ re-parameterisation
def test_repvggdw_fuses_to_single_depthwise_conv():
    torch.manual_seed(0)
    m = randomize_bn(RepVGGDW(16)).eval()
    with torch.no_grad():
        m.conv1.weight.normal_()
        m.conv1.bias.normal_()
    x = torch.randn(2, 16, 9, 7)
    y0 = m(x)
    fuse_model(m)
    assert isinstance(m.fused, nn.Conv2d) and m.fused.groups == 16 and m.fused.kernel_size == (3, 3)
    assert n_params(m) == 10 * 16  # 9c weights + c biases
    assert (m(x) - y0).abs().max() < 1e-5


@pytest.mark.parametrize("attention", ["none", "EMA"])
def test_rvb_and_c2f_pro_fuse_equivalence(attention):
    torch.manual_seed(1)
    m = randomize_bn(C2fPro(32, 32, 2, attention=attention), seed=3).eval()
    for mod in m.modules():  # non-zero residual branch
        if isinstance(mod, nn.BatchNorm2d):
            mod.weight.data.abs_().add_(0.1)
    x = torch.randn(2, 32, 10, 8)
    y0 = m(x)
    before = n_params(m)
    fuse_model(m)
    assert not any(isinstance(mod, nn.BatchNorm2d) for mod in m.modules())
    assert n_params(m) < before
    assert (m(x) - y0).abs().max() < 1e-4


def test_ssff_fuse_folds_batchnorm3d():
    m = ssff_with_random_statistics(2)
    xs = [torch.randn(1, 16, 8, 8), torch.randn(1, 32, 4, 4), torch.randn(1, 64, 2, 2)]
    y0 = m(xs)
    fuse_model(m)
    assert not any(isinstance(mod, (nn.BatchNorm2d, nn.BatchNorm3d)) for mod in m.modules())
    assert (m(xs) - y0).abs().max() < 1e-5


# ------------------------------------------------------------------ EMA, hand-computed
def _sig(v):
    return 1.0 / (1.0 + np.exp(-v))


def test_ema_single_group_hand_computed():
    """C = G = 1 (cg = 1): softmax over one channel is 1, so out = x * sigmoid(x1 + x2)."""
    m = EMA(1, factor=1)
    with torch.no_grad():
        m.conv1x1.weight.fill_(1.0)
        m.conv1x1.bias.zero_()
        m.conv3x3.weight.zero_()
        m.conv3x3.bias.fill_(0.5)
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    xv = x[0, 0].numpy().astype(np.float64)
    row = xv.mean(1)   # average along W: [1.5, 3.5]
    col = xv.mean(0)   # average along H: [2.0, 3.0]
    pre = xv * _sig(row)[:, None] * _sig(col)[None, :]
    x1 = (pre - pre.mean()) / np.sqrt(pre.var() + 1e-5)   # GroupNorm(1, 1), gamma 1, beta 0
    x2 = np.full_like(xv, 0.5)                             # 3x3 conv: zero weights, bias 0.5
    expected = xv * _sig(x1 + x2)
    assert np.allclose(m(x)[0, 0].detach().numpy(), expected, atol=1e-6)


def test_ema_two_groups_against_loop_reference():
    """cg = 2: cross-spatial softmax weights, checked against an explicit per-pixel loop."""
    torch.manual_seed(0)
    m = EMA(4, factor=2)
    with torch.no_grad():
        m.gn.weight.uniform_(0.5, 1.5)
        m.gn.bias.uniform_(-0.5, 0.5)
    x = torch.randn(1, 4, 3, 2)
    got = m(x).detach().numpy()
    X = x.numpy().astype(np.float64)
    W1 = m.conv1x1.weight.detach().numpy()[:, :, 0, 0]
    b1 = m.conv1x1.bias.detach().numpy()
    W3 = m.conv3x3.weight.detach().numpy()
    b3 = m.conv3x3.bias.detach().numpy()
    gam, bet = m.gn.weight.detach().numpy(), m.gn.bias.detach().numpy()
    H, Wd = 3, 2
    for g in range(2):
        gx = X[0, 2 * g:2 * g + 2]                           # (cg=2, H, W)
        ph, pw = gx.mean(2), gx.mean(1)                      # (2, H), (2, W)
        ah = np.einsum("oc,ch->oh", W1, ph) + b1[:, None]
        aw = np.einsum("oc,cw->ow", W1, pw) + b1[:, None]
        pre = gx * _sig(ah)[:, :, None] * _sig(aw)[:, None, :]
        x1 = np.stack([(pre[c] - pre[c].mean()) / np.sqrt(pre[c].var() + 1e-5) * gam[c] + bet[c]
                       for c in range(2)])
        pad = np.pad(gx, ((0, 0), (1, 1), (1, 1)))
        x2 = np.zeros_like(gx)
        for o in range(2):
            for i in range(H):
                for j in range(Wd):
                    x2[o, i, j] = b3[o] + (W3[o] * pad[:, i:i + 3, j:j + 3]).sum()
        s1 = np.exp(x1.mean((1, 2))) / np.exp(x1.mean((1, 2))).sum()
        s2 = np.exp(x2.mean((1, 2))) / np.exp(x2.mean((1, 2))).sum()
        weights = np.einsum("c,chw->hw", s1, x2) + np.einsum("c,chw->hw", s2, x1)
        expected = gx * _sig(weights)[None]
        assert np.allclose(got[0, 2 * g:2 * g + 2], expected, atol=1e-5)


# ------------------------------------------------------------------ DFL
def test_dfl_decode_expectation_and_module_agree():
    reg_max = 16
    logits = torch.full((1, 4 * reg_max, 1), -1e4)
    for side, k in enumerate([0, 3, 7, 15]):
        logits[0, side * reg_max + k, 0] = 0.0
    assert torch.allclose(dfl_decode(logits, reg_max)[0, :, 0], torch.tensor([0.0, 3.0, 7.0, 15.0]))
    # two equal bins -> their mean
    logits = torch.full((1, 64, 1), -1e4)
    logits[0, [2, 3, 16 + 5, 16 + 9, 32, 33, 48 + 14, 48 + 15], 0] = 0.0
    assert torch.allclose(dfl_decode(logits)[0, :, 0], torch.tensor([2.5, 7.0, 0.5, 14.5]))
    x = torch.randn(2, 64, 7)
    assert torch.allclose(DFL(16)(x), dfl_decode(x, 16), atol=1e-5)
    assert sum(p.numel() for p in DFL(16).parameters()) == 16


def test_make_anchors_counts_and_centres():
    feats = [torch.zeros(1, 1, 640 // s, 640 // s) for s in (8, 16, 32)]
    pts, strides = make_anchors(feats, [8, 16, 32])
    assert pts.shape == (8400, 2) and strides.shape == (8400, 1)
    assert torch.equal(pts[0], torch.tensor([0.5, 0.5])) and torch.equal(pts[1], torch.tensor([1.5, 0.5]))
    assert torch.equal(pts[80], torch.tensor([0.5, 1.5]))
    assert strides[6400, 0] == 16 and strides[-1, 0] == 32


def test_dist2bbox_bbox2dist_roundtrip():
    anchors = torch.tensor([[5.5, 5.5], [2.5, 7.5]])
    dist = torch.tensor([[1.0, 2.0, 3.0, 4.0], [0.5, 0.0, 2.0, 6.0]])
    boxes = dist2bbox(dist, anchors)
    assert torch.allclose(boxes[0], torch.tensor([4.5, 3.5, 8.5, 9.5]))
    assert torch.allclose(dist2bbox(dist, anchors, xywh=True)[0], torch.tensor([6.5, 6.5, 4.0, 6.0]))
    assert torch.allclose(bbox2dist(anchors, boxes, 16), dist)
    far = bbox2dist(anchors[:1], torch.tensor([[-50.0, 5.0, 60.0, 6.0]]), 16)
    assert far.max() <= 14.99 + 1e-6
    with pytest.raises(ValueError, match="4 x reg_max"):
        dfl_decode(torch.zeros(1, 60, 3), 16)


def test_lqe_starts_as_identity_and_uses_side_statistics():
    lqe = LocationQualityEstimator(16)
    scores, box = torch.randn(2, 3, 4, 5), torch.randn(2, 64, 4, 5)
    assert torch.equal(lqe(scores, box), scores)
    with torch.no_grad():
        lqe.mlp[-1].weight.fill_(1.0)
    assert lqe(scores, box).shape == scores.shape
    assert not torch.equal(lqe(scores, box), scores)

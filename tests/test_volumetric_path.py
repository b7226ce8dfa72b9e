"""Shared volumetric path: Dice+CE loss, stride padding, sliding-window inference, meta-arch."""
import math

import pytest
import torch
from torch import nn

import medseg_core  # noqa: F401
from medseg_core.config import load_config
from medseg_core.errors import ConfigError
from medseg_core.modeling.volumetric import (
    VOLUME_NETWORK_REGISTRY,
    VolumetricSegmentor,
    build_volume_network,
    dice_ce_loss,
    pad_to_divisible,
)


pytestmark = pytest.mark.usefixtures("one_thread")


class _Pointwise(nn.Module):
    """1x1x1 conv: sliding-window blending must reproduce the whole-volume result exactly."""

    size_divisibility = 8

    def __init__(self, cfg=None, cin=1, k=3):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv3d(cin, k, 1)
        self.seen = []

    def forward(self, x):
        self.seen.append(tuple(x.shape[2:]))
        if any(s % self.size_divisibility for s in x.shape[2:]):
            raise AssertionError(f"network received a size not divisible by 8: {tuple(x.shape)}")
        return self.conv(x)


class _Strided(nn.Module):
    """Down x8 / up x8: only works on sizes divisible by 8."""

    size_divisibility = 8

    def __init__(self, cfg=None):
        super().__init__()
        self.down = nn.Conv3d(1, 3, 8, stride=8)
        self.up = nn.ConvTranspose3d(3, 3, 8, stride=8)

    def forward(self, x):
        return self.up(self.down(x))


for _cls in (_Pointwise, _Strided):
    if _cls.__name__ not in VOLUME_NETWORK_REGISTRY:
        VOLUME_NETWORK_REGISTRY.register(_cls)


def _segmentor(net, roi=(0, 0, 0), **kw):
    return VolumetricSegmentor(network=net, num_classes=3, roi_size=roi, **kw).eval()


# ------------------------------------------------------------------------ loss
def test_dice_ce_loss_hand_computed_uniform_prediction():
    # 2 classes, equal logits -> p = 0.5 everywhere; 4 of 8 voxels are class 1.
    logits = torch.zeros(1, 2, 2, 2, 2)
    target = torch.zeros(1, 2, 2, 2, dtype=torch.long)
    target[0, 0] = 1
    out = dice_ce_loss(logits, target, include_background=False, batch_dice=True, smooth=0.0)
    assert math.isclose(float(out["loss_ce"]), math.log(2), rel_tol=1e-6)
    # Dice_1 = 2 * (0.5 * 4) / (0.5 * 8 + 4) = 0.5
    assert math.isclose(float(out["loss_dice"]), 0.5, rel_tol=1e-6)
    # with background: Dice_0 = 0.5 too; squared_pred: 2*2 / (0.25*8 + 4) = 2/3
    out = dice_ce_loss(logits, target, include_background=True, squared_pred=True, smooth=0.0)
    assert math.isclose(float(out["loss_dice"]), 1 - 2 / 3, rel_tol=1e-6)


def test_dice_ce_loss_perfect_prediction_is_zero_and_weights_apply():
    target = torch.randint(0, 3, (2, 4, 4, 4))
    logits = 50.0 * nn.functional.one_hot(target, 3).movedim(-1, 1).float()
    out = dice_ce_loss(logits, target, dice_weight=2.0, ce_weight=0.5)
    assert float(out["loss_ce"]) < 1e-6 and float(out["loss_dice"]) < 1e-5
    assert set(dice_ce_loss(logits, target, ce_weight=0.0)) == {"loss_dice"}


def test_dice_ce_loss_ignores_ignore_label_voxels():
    torch.manual_seed(0)
    logits = torch.randn(1, 3, 4, 4, 4)
    target = torch.randint(0, 3, (1, 4, 4, 4))
    target[0, 0] = 255
    base = dice_ce_loss(logits, target)
    changed = logits.clone()
    changed[:, :, 0] = torch.randn(1, 3, 4, 4) * 10  # only ignored voxels differ
    other = dice_ce_loss(changed, target)
    for k in base:
        assert torch.allclose(base[k], other[k]), k
    bad = target.clone()
    bad[0, 1, 1, 1] = 7
    with pytest.raises(ValueError, match="outside"):
        dice_ce_loss(logits, bad)


# ------------------------------------------------------------------------ padding
def test_pad_to_divisible():
    x = torch.ones(1, 1, 5, 8, 9)
    y, size = pad_to_divisible(x, 4, value=7)
    assert size == (5, 8, 9) and y.shape[-3:] == (8, 8, 12)
    assert float(y[0, 0, 5:].unique()) == 7 and float(y[0, 0, :5, :, :9].unique()) == 1
    assert pad_to_divisible(x, 1)[0] is x


# ------------------------------------------------------------------------ inference
@pytest.mark.parametrize("roi", [(0, 0, 0), (8, 16, 8), (16, 16, 16)])
@pytest.mark.parametrize("mode", ["gaussian", "constant"])
def test_sliding_window_matches_whole_volume_for_pointwise_net(roi, mode):
    net = _Pointwise()
    seg = _segmentor(net, roi, blend_mode=mode, overlap=0.5)
    x = torch.randn(1, 19, 23, 29)  # not a multiple of 8 anywhere
    out = seg([{"image": x}])[0]
    assert out["pred_label"].shape == (19, 23, 29)
    assert out["pred_label"].dtype == torch.int64
    with torch.no_grad():
        ref = net.conv(x[None])[0]
    assert torch.allclose(seg.predict_logits(x[None])[0], ref, atol=1e-5)
    assert torch.equal(out["pred_label"], ref.argmax(0))
    assert all(s % 8 == 0 for shape in net.seen for s in shape)


def test_strided_network_is_padded_not_crashing_and_probs_returned():
    seg = _segmentor(_Strided(), (0, 0, 0), return_probs=True)
    x = torch.randn(1, 13, 17, 9)
    with torch.no_grad():
        raw = seg.network(x[None])  # the raw network silently loses the odd remainder
    assert raw.shape[2:] == (8, 16, 8)
    out = seg([{"image": x}])[0]
    assert out["pred_label"].shape == (13, 17, 9)
    assert out["sem_seg"].shape == (3, 13, 17, 9)
    assert torch.allclose(out["sem_seg"].sum(0), torch.ones(13, 17, 9), atol=1e-5)
    seg_sw = _segmentor(_Strided(), (8, 8, 8))
    assert seg_sw([{"image": torch.randn(1, 5, 6, 7)}])[0]["pred_label"].shape == (5, 6, 7)


def test_mirror_tta_averages_flips():
    net = _Pointwise()
    seg = _segmentor(net, (0, 0, 0), mirror_tta=True)
    x = torch.randn(1, 1, 8, 8, 8)
    # a pointwise net is flip-equivariant, so TTA must give the same logits after 8 passes
    assert torch.allclose(seg.predict_logits(x), net.conv(x), atol=1e-5)
    assert len(net.seen) == 8


# ------------------------------------------------------------------------ training
def test_training_forward_returns_losses_and_pads_crops():
    seg = VolumetricSegmentor(network=_Pointwise(), num_classes=3).train()
    batch = [{"image": torch.randn(1, 9, 10, 11), "label": torch.randint(0, 3, (9, 10, 11))} for _ in range(2)]
    losses = seg(batch)
    assert set(losses) == {"loss_ce", "loss_dice"}
    sum(losses.values()).backward()
    assert seg.network.conv.weight.grad is not None
    assert seg.network.seen[-1] == (16, 16, 16)
    with pytest.raises(ValueError, match="share one shape"):
        seg([batch[0], {"image": torch.randn(1, 8, 8, 8), "label": torch.zeros(8, 8, 8, dtype=torch.long)}])


def test_config_builds_registered_network_and_rejects_unknown():
    cfg = load_config(None, ["MODEL.META_ARCHITECTURE", "VolumetricSegmentor", "MODEL.VOLUMETRIC.NETWORK", "_Pointwise",
                             "MODEL.DEVICE", "cpu"])
    from detectron2.modeling import build_model

    model = build_model(cfg)
    assert isinstance(model, VolumetricSegmentor) and isinstance(model.network, _Pointwise)
    assert model.size_divisibility == 8
    assert hasattr(model, "complexity_forward")
    cfg2 = load_config(None, ["MODEL.VOLUMETRIC.NETWORK", "NoSuchNet"])
    with pytest.raises(ConfigError, match="NoSuchNet"):
        build_volume_network(cfg2)
    with pytest.raises(ConfigError, match="ROI_SIZE"):
        _segmentor(_Pointwise(), (8, 0, 8))


@pytest.mark.parametrize("roi, expected", [((16, 32, 24), (16, 32, 24)), ((0, 0, 0), (24, 24, 32))])
def test_network_latency_runs_on_one_window(roi, expected):
    """Network-only latency uses what the network really sees: one ROI window (zero-padded where
    the volume is smaller, as the sliding window pads it), or the stride-padded whole volume."""
    from medseg_core.profiling import profile_model

    net = _Pointwise()
    seg = _segmentor(net, roi)
    x = torch.randn(1, 19, 23, 29)
    window = seg.network_example(x)
    assert tuple(window.shape) == (1, 1, *expected)
    if any(roi):
        assert torch.equal(window[0, 0, :, :23], x[0, :16, :, :24])
        assert not window[0, 0, :, 23:].any()
    res = profile_model(seg, {"image": x}, warmup=1, runs=20, mode="network", copy_model=False, fuse=False)
    assert res.mode == "network"
    assert set(net.seen) == {expected}

"""LGMSNet blocks and networks: shapes, exact parameter counts, paper/code variants."""
import pytest
import torch

from lgms.gms import GMSBlock, fold_groups, unfold_groups
from lgms.layers import FusionConv
from lgms.lgmsnet import LGMSNet, LGMSNetEncoder
from lgms.lms import LMSBlock


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_lms_block_shape_and_params():
    blk = LMSBlock(16)
    x = torch.randn(2, 16, 20, 24)
    assert blk(x).shape == x.shape
    # dw convs (k^2 + 1 bias) * 4 channels for k = 3, 5, 7, 9; GN affine 2*16;
    # 1x1 16->4 (64) + BN 8; 3x3 4->16 (576) + BN 32
    expected = 4 * sum(k * k + 1 for k in (3, 5, 7, 9)) + 32 + 64 + 8 + 576 + 32
    assert n_params(blk) == expected == 1384


def test_lms_variants_differ_but_share_parameters():
    torch.manual_seed(0)
    code, paper = LMSBlock(16, variant="code").eval(), LMSBlock(16, variant="paper").eval()
    paper.load_state_dict(code.state_dict())
    x = torch.randn(1, 16, 8, 8)
    assert not torch.allclose(code(x), paper(x))
    with pytest.raises(ValueError, match="variant"):
        LMSBlock(16, variant="other")
    with pytest.raises(ValueError, match="kernel groups"):
        LMSBlock(18)


def test_lms_each_kernel_acts_on_its_own_channel_group():
    blk = LMSBlock(8, kernels=(3, 5, 7, 9))
    # group i's receptive field is k_i: an impulse spreads k_i // 2 pixels in the dw stage
    x = torch.zeros(1, 8, 21, 21)
    x[:, :, 10, 10] = 1.0
    parts = torch.split(x, 2, dim=1)
    for dw, p, k in zip(blk.dw, parts, (3, 5, 7, 9)):
        y = dw(p) - dw.bias.view(1, -1, 1, 1)
        nz = (y[0, 0].abs() > 0).nonzero()
        assert int(nz[:, 0].max() - nz[:, 0].min()) + 1 == k


def test_unfold_matches_mobilevit_layout_and_roundtrips():
    x = torch.arange(2 * 3 * 4 * 6, dtype=torch.float32).view(2, 3, 4, 6)
    t = unfold_groups(x, 2)
    assert t.shape == (2, 4, 6, 3)
    # group g = (ph, pw) holds pixels (2h + ph, 2w + pw) in row-major (h, w) order
    for ph in range(2):
        for pw in range(2):
            ref = x[:, :, ph::2, pw::2].reshape(2, 3, -1).transpose(1, 2)
            assert torch.equal(t[:, ph * 2 + pw], ref)
    assert torch.equal(fold_groups(t, (4, 6), 2), x)
    v = torch.randn(1, 5, 4, 6, 8)
    assert unfold_groups(v, 2).shape == (1, 8, 24, 5)
    assert torch.equal(fold_groups(unfold_groups(v, 2), (4, 6, 8), 2), v)
    with pytest.raises(ValueError, match="not divisible by the patch size"):
        unfold_groups(torch.randn(1, 3, 5, 6), 2)


def test_gms_block_shapes_and_params():
    blk = GMSBlock(64, 128, (96, 32), mlp_dim=256)
    assert blk(torch.randn(2, 64, 8, 12)).shape == (2, 128, 8, 12)
    # encoder4 of the released model (about 0.39 M), counted by hand:
    local = 64 * 128 * 9 + 256 + 128 * 128 + 256
    conv_branch = 32 * 9 + 64 + 32 + 64
    attention = 2 * 96 + 96 * 96 + (32 * 96 + 96)  # LN, qkv (3 x 4 heads x 8), out proj
    ffn = 2 * 96 + (96 * 256 + 256) + (256 * 96 + 96)
    fuse = 128 * 128 + 256 + (64 + 128) * 128 * 9 + 256
    assert n_params(blk) == local + conv_branch + attention + ffn + fuse == 391_424
    with pytest.raises(ValueError, match="split"):
        GMSBlock(64, 128, (96, 16))


def test_gms_attention_is_global_within_a_token_group():
    torch.manual_seed(0)
    blk = GMSBlock(8, 16, (12, 4), mlp_dim=32).eval()
    x = torch.zeros(1, 8, 16, 16)
    y0 = blk(x)
    x2 = x.clone()
    x2[:, :, 0, 0] = 5.0  # a far corner changes the output far away (beyond any conv's reach)
    y1 = blk(x2)
    assert (y1 - y0)[0, :, 14:, 14:].abs().max() > 1e-6


def test_fusion_conv_params():
    # 3x3 group conv (groups 2) 32->32, 1x1 32->64, 1x1 64->16 with biases and BNs
    assert n_params(FusionConv(32, 16)) == (16 * 9 * 32 + 32) + 64 + (32 * 64 + 64) + 128 + (64 * 16 + 16) + 32


def test_lgmsnet_exact_parameter_count_and_shapes():
    net = LGMSNet(3, 1)
    assert n_params(net) == 2_321_393  # the released SegmsNet (paper: 2.32 M)
    enc = LGMSNetEncoder(3)
    feats = enc(torch.randn(1, 3, 64, 96))
    assert [tuple(f.shape[1:]) for f in feats.values()] == [
        (16, 64, 96), (32, 32, 48), (64, 16, 24), (128, 8, 12), (128, 4, 6)
    ]
    net.eval()
    with torch.no_grad():
        assert net(torch.randn(1, 3, 64, 64)).shape == (1, 1, 64, 64)


def test_lgmsnet3d_exact_parameter_count():
    # the authors' released SegmsNet3D (1 input, 14 BTCV classes): 6,193,742, not the paper's 9.86 M
    net3d = LGMSNet(1, 14, nd=3, norm="IN")
    assert n_params(net3d) == 6_193_742
    with torch.no_grad():
        assert net3d.eval()(torch.randn(1, 1, 32, 32, 32)).shape == (1, 14, 32, 32, 32)

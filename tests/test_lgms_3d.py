"""LGMSNet-3D: the 2D blocks with nd=3 in the shared volumetric path (shapes, counts, training)."""
import os

import torch
from torch import nn

from lgms.gms import GMSBlock
from lgms.lgmsnet3d import LGMSNet3D
from lgms.lms import LMSBlock
from medseg_core.engine.cli import default_argument_parser, main
from medseg_core.engine.trainer import MedSegTrainer
from medseg_core.testing import load_test_cfg, train_steps

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CFG = os.path.join(REPO, "configs/Hippocampus-VolumetricSegmentation/lgmsnet3d_hippocampus.yaml")


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_released_segmsnet3d_parameter_count():
    # SegmsNet3D as released (1 CT channel, 14 BTCV classes): 6,193,742, not the paper's 9.86 M
    assert n_params(LGMSNet3D(in_channels=1, num_classes=14)) == 6_193_742


def test_3d_reuses_the_2d_blocks_with_3d_layers():
    net = LGMSNet3D(in_channels=1, num_classes=3)
    assert isinstance(net.encoder.encoder1[0], LMSBlock) and isinstance(net.encoder.encoder4, GMSBlock)
    kinds = {type(m) for m in net.modules()}
    assert nn.Conv3d in kinds and nn.Conv2d not in kinds and nn.BatchNorm2d not in kinds
    # InstanceNorm in the convs, GroupNorm(4) in the LMS, BatchNorm3d only in the GMS conv branch
    assert isinstance(net.encoder.stem[1], nn.InstanceNorm3d) and not net.encoder.stem[1].affine
    assert isinstance(net.encoder.encoder1[0].gn, nn.GroupNorm)
    bn3d = [name for name, m in net.named_modules() if isinstance(m, nn.BatchNorm3d)]
    assert bn3d and all(".conv_branch." in name for name in bn3d)
    assert net.decoder.up2.up.mode == "trilinear"
    assert net.encoder.encoder1[0].dw[3].kernel_size == (9, 9, 9)


def test_gms_3d_unfolds_eight_token_groups():
    blk = GMSBlock(8, 16, (12, 4), mlp_dim=32, nd=3, norm="IN")
    seen = []
    blk.transformer.register_forward_hook(lambda m, i, o: seen.append(tuple(i[0].shape)))
    assert blk(torch.randn(1, 8, 4, 6, 8)).shape == (1, 16, 4, 6, 8)
    assert seen == [(1, 8, 2 * 3 * 4, 12)]


def test_built_from_config_pads_odd_volumes():
    cfg = load_test_cfg(CFG)
    model = MedSegTrainer.build_model(cfg).eval()
    assert model.network.size_divisibility == 32
    assert n_params(model.network) == 6_193_742 - 11 * 17  # 3 classes instead of 14
    vol = torch.randn(1, 20, 26, 18)  # not multiples of 32: padded inside, cropped back
    with torch.no_grad():
        (out,) = model([{"image": vol}])
    assert out["pred_label"].shape == (20, 26, 18)
    assert set(out["pred_label"].unique().tolist()) <= {0, 1, 2}


def test_instant_test_trains_and_evaluates(tmp_path):
    args = default_argument_parser().parse_args([
        "--config-file", os.path.join(REPO, "configs/quick_schedules/lgmsnet3d_instant_test.yaml"),
        "MODEL.DEVICE", "cpu", "OUTPUT_DIR", str(tmp_path),
    ])
    res = main(args)
    assert os.path.isfile(tmp_path / "model_final.pth")
    assert res["volume"]["num_volumes"] == 3 and 0 <= res["volume"]["mDice"] <= 100


def test_one_training_step_on_real_volumes(shared_data):
    cfg = load_test_cfg(CFG, "SOLVER.IMS_PER_BATCH", "1")
    (losses,) = train_steps(cfg, 1)
    assert set(losses) == {"loss_dice", "loss_ce"}
    assert all(0 < v < 10 for v in losses.values())

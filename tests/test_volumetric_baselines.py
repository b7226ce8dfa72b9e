"""MONAI 3D baselines (UNETR, SwinUNETR, SegResNet, DynUNet) in VOLUME_NETWORK_REGISTRY: exact
parameter counts of the msd-hippocampus configs, the nnU-Net plan, deep supervision, and the
instant configs training and evaluating end to end."""
import os

import pytest
import torch

import medseg_core  # noqa: F401
from detectron2.modeling import build_model

from medseg_core.data.volumetric_plan import network_size_divisibility
from medseg_core.engine.cli import default_argument_parser, main
from medseg_core.modeling.volumetric import VOLUME_NETWORK_REGISTRY, build_volume_network
from medseg_core.testing import load_test_cfg

pytestmark = pytest.mark.usefixtures("one_thread")

HIPPO = "configs/Hippocampus-VolumetricSegmentation"


def _n(m):
    return sum(p.numel() for p in m.parameters())


# name -> (config, parameters with deep supervision as configured, without, stride)
COUNTS = {
    "DynUNet": ("dynunet", 5_601_158, 5_600_963, 8),
    "SegResNet": ("segresnet", 4_980_550, 4_980_451, 8),
    "UNETR": ("unetr", 92_664_051, 92_664_051, 16),
    "SwinUNETR": ("swinunetr", 15_703_029, 15_703_029, 32),
}


@pytest.mark.parametrize("name", sorted(COUNTS))
def test_registered_with_exact_counts(name, repo_root):
    assert name in VOLUME_NETWORK_REGISTRY
    cfg_name, n_ds, n_plain, stride = COUNTS[name]
    path = os.path.join(repo_root, HIPPO, f"{cfg_name}_hippocampus.yaml")
    cfg = load_test_cfg(path)
    net = build_volume_network(cfg)
    assert _n(net) == n_ds
    assert network_size_divisibility(cfg) == stride
    plain = build_volume_network(load_test_cfg(path, "MODEL.VOLUMETRIC.DEEP_SUPERVISION.ENABLED", "False"))
    assert _n(plain) == n_plain


@pytest.mark.parametrize("name", ["DynUNet", "SegResNet"])
def test_deep_supervision_outputs(name, repo_root):
    cfg = load_test_cfg(os.path.join(repo_root, HIPPO, f"{COUNTS[name][0]}_hippocampus.yaml"),
                        "MODEL.VOLUMETRIC_BASELINES.DYNUNET.FILTERS", "(8, 16, 32, 64)",
                        "MODEL.VOLUMETRIC_BASELINES.SEGRESNET.INIT_FILTERS", "8")
    net = build_volume_network(cfg).train()
    x = torch.randn(1, 1, 16, 24, 16)
    outs = net.forward_deep_supervision(x)
    assert len(outs) == 2 and outs[0].shape == (1, 3, 16, 24, 16)
    # DynUNet up-samples its extra head to full resolution, SegResNet returns it at 1/2
    assert tuple(outs[1].shape[2:]) in {(16, 24, 16), (8, 12, 8)}
    assert net(x).shape == (1, 3, 16, 24, 16)  # plain forward: the full-resolution output only
    assert net.eval()(x).shape == (1, 3, 16, 24, 16)


def test_dynunet_is_the_nnunet_plan(repo_root):
    cfg = load_test_cfg(os.path.join(repo_root, HIPPO, "dynunet_hippocampus.yaml"))
    net = build_volume_network(cfg).net
    assert [list(k) for k in net.kernel_size] == [[3, 3, 3]] * 4
    assert [list(s) for s in net.strides] == [[1, 1, 1]] + [[2, 2, 2]] * 3
    assert list(net.filters) == [32, 64, 128, 256]
    assert cfg.SOLVER.OPTIMIZER == "SGD" and cfg.SOLVER.MOMENTUM == 0.99 and cfg.SOLVER.NESTEROV


def test_unetr_rejects_other_input_sizes(repo_root):
    cfg = load_test_cfg(os.path.join(repo_root, "configs/quick_schedules/unetr_instant_test.yaml"))
    net = build_volume_network(cfg)
    assert net(torch.randn(1, 1, 16, 16, 16)).shape == (1, 3, 16, 16, 16)
    with pytest.raises(ValueError, match="IMG_SIZE"):
        net(torch.randn(1, 1, 16, 32, 16))


@pytest.mark.parametrize("name", ["dynunet", "segresnet", "unetr", "swinunetr"])
def test_instant_test_trains_and_evaluates(name, repo_root, tmp_path):
    cfg_file = os.path.join(repo_root, f"configs/quick_schedules/{name}_instant_test.yaml")
    args = default_argument_parser().parse_args(["--config-file", cfg_file, "MODEL.DEVICE", "cpu",
                                                 "OUTPUT_DIR", str(tmp_path)])
    res = main(args)
    assert os.path.isfile(tmp_path / "model_final.pth")
    assert res["volume"]["num_volumes"] == 3 and 0 <= res["volume"]["mDice"] <= 100
    assert "DiceStd-anterior" in res["volume"] or any(k.startswith("DiceStd-") for k in res["volume"])


def test_compare_gives_a_volumetric_row_with_window_latency(repo_root, tmp_path):
    """compare on a fixed-input-size 3D network: whole-volume latency (sliding window) and the
    network alone on one window; the smoke volumes are smaller than UNETR's 16^3 input."""
    from medseg_core.comparison import Comparison, ModelSpec, extract_metrics

    cfg = os.path.join(repo_root, "configs/quick_schedules/unetr_instant_test.yaml")
    comp = Comparison([ModelSpec("unetr", cfg)], str(tmp_path), seeds=[0], opts=["SOLVER.MAX_ITER", "1"],
                      latency_runs=20, latency_warmup=1, progress=lambda m: None)
    runs = comp.run()
    assert not comp.failed and comp.task == "volume"
    m = extract_metrics(runs[0], "volume")
    assert m["latency_ms"] > 0 and m["net_latency_ms"] > 0 and m["params_m"] > 0

"""medseg_core.complexity: legacy-thop counting rules on hand-built modules, parameter counting,
and the fvcore count of a plain conv."""
import pytest
import torch
from torch import nn

from medseg_core.complexity import (
    THOP_LEGACY_RULES, count_parameters, fvcore_flops, module_complexity, register_thop_rule, thop_legacy_ops,
)


def ops_of(model: nn.Module, x: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        return thop_legacy_ops(model, lambda: model(x))[0]


def test_conv_counts_output_grid_without_bias():
    x = torch.zeros(1, 3, 8, 8)
    # 16 x 4 x 4 outputs, 3 x 3 x 3 MACs each; the bias is not counted
    assert ops_of(nn.Conv2d(3, 16, 3, 2, 1, bias=True), x) == 16 * 4 * 4 * 27
    # grouped: C_in / groups
    assert ops_of(nn.Conv2d(4, 8, 3, 1, 1, groups=2), torch.zeros(1, 4, 5, 5)) == 8 * 25 * 2 * 9


def test_transposed_conv_counted_over_output_grid():
    # legacy thop: out numel (8 x 8 x 8) x C_in (8) x k^2 (4): 4x the true MACs at k = s = 2
    m = nn.ConvTranspose2d(8, 8, 2, 2)
    assert ops_of(m, torch.zeros(1, 8, 4, 4)) == (8 * 8 * 8) * 8 * 4


def test_norms_pools_upsample_softmax_rules():
    x = torch.zeros(2, 4, 6, 6)
    assert ops_of(nn.BatchNorm2d(4), x) == 4 * x.numel()            # affine: 2 x 2 per element
    assert ops_of(nn.BatchNorm2d(4, affine=False), x) == 2 * x.numel()
    assert ops_of(nn.GroupNorm(2, 4), x) == 0                        # not counted by legacy thop
    assert ops_of(nn.SiLU(), x) == 0
    assert ops_of(nn.Upsample(scale_factor=2, mode="nearest"), x) == 4 * x.numel()
    assert ops_of(nn.Upsample(scale_factor=2, mode="bilinear"), x) == 11 * 4 * x.numel()
    assert ops_of(nn.AdaptiveAvgPool2d(1), x) == (36 + 1) * 8     # (kernel + 1) per output
    assert ops_of(nn.AvgPool2d(2), x) == 2 * 4 * 3 * 3
    assert ops_of(nn.Softmax(dim=1), x) == (x.numel() // 4) * (3 * 4 - 1)
    assert ops_of(nn.Linear(10, 3), torch.zeros(5, 10)) == 10 * 15
    assert ops_of(nn.MaxPool2d(3, 1, 1), x) == 0


def test_shared_module_counted_per_call_and_containers_descended():
    conv = nn.Conv2d(2, 2, 1, bias=False)

    class TwoCalls(nn.Module):
        def __init__(self):
            super().__init__()
            self.seq = nn.Sequential(conv, nn.BatchNorm2d(2))

        def forward(self, x):
            return self.seq(self.seq(x))

    x = torch.zeros(1, 2, 3, 3)
    assert ops_of(TwoCalls(), x) == 2 * (2 * 9 * 2 + 4 * 18)


def test_subclass_needs_its_own_rule():
    class MyConv(nn.Conv2d):
        pass

    x = torch.zeros(1, 1, 4, 4)
    assert ops_of(MyConv(1, 1, 1), x) == 0  # exact-type matching, as legacy thop
    try:
        register_thop_rule(MyConv)(THOP_LEGACY_RULES[nn.Conv2d])
        assert ops_of(MyConv(1, 1, 1), x) == 16
    finally:
        THOP_LEGACY_RULES.pop(MyConv, None)


def test_count_parameters_counts_shared_once_and_frozen():
    lin = nn.Linear(3, 3)
    m = nn.Sequential(lin, lin, nn.Conv2d(1, 1, 1).requires_grad_(False))
    assert count_parameters(m) == 12 + 2
    assert count_parameters(m, trainable_only=True) == 12


def test_module_complexity_conventions_on_a_conv():
    m = nn.Conv2d(3, 8, 3, padding=1, bias=False)
    c = module_complexity(m, torch.zeros(1, 3, 10, 10))
    macs = 8 * 100 * 27
    assert c["params"] == 8 * 27
    assert c["gmacs_thop"] == pytest.approx(macs / 1e9)
    assert c["gflops_thop2x"] == pytest.approx(2 * macs / 1e9)
    assert c["gflops_fvcore"] == pytest.approx(macs / 1e9)
    assert fvcore_flops(m, torch.zeros(1, 3, 10, 10)) == macs

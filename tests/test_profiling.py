"""medseg_core.profiling: batch-1 latency protocol (warm-up, >= 20 runs, median/spread, fusion)."""
import pytest
import torch
from torch import nn

import medseg_core  # noqa: F401

from medseg_core.profiling import MIN_RUNS, autocast_dtype, measure_latency, prepare_for_inference, profile_model


class _Fusable(nn.Module):
    """A Detectron2-style model (list of dicts in) with a fuse() that folds BN into the conv."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.register_buffer("pixel_mean", torch.zeros(3, 1, 1), False)
        self.register_buffer("pixel_std", torch.ones(3, 1, 1), False)
        self.size_divisibility = 8
        self.calls = 0
        self.seen_shapes = []

    def fuse(self):
        w = self.bn.weight / torch.sqrt(self.bn.running_var + self.bn.eps)
        fused = nn.Conv2d(3, 4, 3, padding=1, bias=True)
        fused.weight.data = self.conv.weight.data * w.view(-1, 1, 1, 1)
        fused.bias.data = self.bn.bias.data - self.bn.running_mean * w
        self.conv, self.bn = fused, nn.Identity()
        return self

    def complexity_forward(self, x):
        self.seen_shapes.append(tuple(x.shape))
        return self.bn(self.conv(x))

    def forward(self, batched_inputs):
        self.calls += 1
        x = torch.stack([(b["image"].float() - self.pixel_mean) / self.pixel_std for b in batched_inputs])
        return [{"out": y} for y in self.bn(self.conv(x))]


def test_profile_model_fuses_a_copy_and_reports_statistics():
    model = _Fusable().eval()
    inputs = {"image": torch.randint(0, 255, (3, 30, 22), dtype=torch.uint8), "height": 30, "width": 22}
    res = profile_model(model, inputs, warmup=3, runs=MIN_RUNS)
    assert res.fused and isinstance(model.bn, nn.BatchNorm2d)  # the caller's model is not fused
    assert res.runs == MIN_RUNS == len(res.times_ms) and res.warmup == 3 and res.batch_size == 1
    assert res.min_ms <= res.p10_ms <= res.median_ms <= res.p90_ms <= res.max_ms
    assert res.fps == pytest.approx(1000.0 / res.median_ms)
    assert res.device == "cpu" and res.dtype == "float32" and res.threads == torch.get_num_threads()
    assert "cores" in res.device_name
    assert "times_ms" not in res.as_dict() and res.as_dict()["mode"] == "model"


def test_profile_counts_warmup_and_timed_calls():
    model = _Fusable().eval()
    inputs = {"image": torch.zeros(3, 8, 8, dtype=torch.uint8)}
    fused_model, fused = prepare_for_inference(model, fuse=False, copy_model=False)
    assert fused_model is model and not fused
    res = profile_model(model, inputs, warmup=2, runs=25, fuse=False, copy_model=False)
    assert model.calls == 27 and not res.fused


def test_fused_model_gives_same_outputs():
    torch.manual_seed(0)
    model = _Fusable()
    model.bn.running_mean.uniform_(-1, 1)
    model.bn.running_var.uniform_(0.5, 2)
    model.eval()
    x = {"image": torch.randint(0, 255, (3, 16, 16), dtype=torch.uint8)}
    fused, was_fused = prepare_for_inference(model)
    assert was_fused
    with torch.no_grad():
        assert torch.allclose(model([x])[0]["out"], fused([x])[0]["out"], atol=1e-3)


def test_network_mode_pads_to_size_divisibility():
    model = _Fusable().eval()
    res = profile_model(model, {"image": torch.zeros(3, 30, 22, dtype=torch.uint8)}, warmup=1, runs=20,
                        mode="network", copy_model=False, fuse=False)
    assert res.mode == "network"
    assert set(model.seen_shapes) == {(1, 3, 32, 24)}


def test_bad_arguments():
    with pytest.raises(ValueError, match="at least 20"):
        measure_latency(lambda: None, torch.device("cpu"), warmup=1, runs=5)
    with pytest.raises(ValueError, match="'image'"):
        profile_model(_Fusable(), {"img": torch.zeros(3, 4, 4)})
    with pytest.raises(ValueError, match="precision"):
        autocast_dtype(torch.device("cpu"), "int8")
    assert autocast_dtype(torch.device("cpu"), "auto") is None
    assert autocast_dtype(torch.device("cpu"), "bf16") is torch.bfloat16

"""tools/export.py: TorchScript and ONNX exports of the fused network round-trip within tolerance on
real images (fixed and dynamic input sizes), the ONNX graph is fused (no BatchNormalization), and
the adaptive-pool substitution is exact. Small input sizes (tiny configs) keep it fast."""
import importlib.util
import json
import os

import numpy as np
import pytest
import torch

import medseg_core  # noqa: F401  (compat shim before detectron2)
from detectron2.data import DatasetCatalog

from medseg_core.testing import load_test_cfg

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LMSFA_CFG = os.path.join(REPO, "configs", "quick_schedules", "lmsfa_instant_test.yaml")
LGMS_CFG = os.path.join(REPO, "configs", "quick_schedules", "lgmsnet_instant_test.yaml")


def _export_tool():
    spec = importlib.util.spec_from_file_location("medseg_export_tool", os.path.join(REPO, "tools", "export.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def tool():
    return _export_tool()


@pytest.fixture(scope="module")
def lmsfa_weights(tmp_path_factory):
    """A seeded random LMSF-A (6 endoscapes classes) with non-trivial BatchNorm statistics, so
    that fusing changes the weights and a missing fold would show."""
    from detectron2.modeling import build_model
    from medseg_core.checkpoint import SafeCheckpointer

    torch.manual_seed(0)
    model = build_model(load_test_cfg(LMSFA_CFG, "MODEL.LMSFA.NUM_CLASSES", 6))
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    folder = tmp_path_factory.mktemp("export_w")
    SafeCheckpointer(model, save_dir=str(folder)).save("w")
    return os.path.join(str(folder), "w.pth")


def _opts(weights):
    return ["MODEL.LMSFA.NUM_CLASSES", "6", "MODEL.WEIGHTS", weights, "MODEL_EMA.ENABLED", "False"]


def test_fixed_size_torchscript_matches_pytorch(shared_data, tool, lmsfa_weights, tmp_path):
    out = tmp_path / "fixed"
    rc = tool.main(["--config-file", LMSFA_CFG, "--output", str(out), "--format", "torchscript",
                    "--check-dataset", "endoscapes_seg50_val", "--num-check-images", "2", "--opts"] + _opts(lmsfa_weights))
    assert rc == 0
    meta = json.loads((out / "export.json").read_text())
    assert meta["input"]["shape"] == [1, 3, 128, 128]  # INPUT.YOLO.IMAGE_SIZE of the tiny config
    assert meta["fused"] is True
    assert meta["adaptive_pools_replaced_by_means"] > 0  # the EMA pools of the C2f-Pro stages
    assert meta["substitution_max_abs_diff"] < 1e-5
    assert [o["name"] for o in meta["outputs"]] == [
        "box_s8", "box_s16", "box_s32", "cls_s8", "cls_s16", "cls_s32", "coef_s8", "coef_s16", "coef_s32", "protos"]
    assert meta["check"]["max_abs_diff"]["torchscript"] < 1e-4
    # the saved file loads without the project's Python classes and reproduces the UNFUSED model
    cfg = load_test_cfg(LMSFA_CFG, *_opts(lmsfa_weights))
    unfused = tool.ExportableNetwork(tool.build_eval_model(cfg, fuse=False)).eval()
    inputs = tool.check_images(cfg, "endoscapes_seg50_val", (), 1)
    images = tool.pad_batch([inputs[0]["image"]], torch.full((3,), 114.0), (128, 128))
    assert float(images[0, :, -1, -1].sub(114).abs().max()) == 0  # letterbox padding with YOLO gray
    ts = torch.jit.load(str(out / "model.ts"))
    with torch.no_grad():
        ref = unfused(images)
        assert max(float((a - b).abs().max()) for a, b in zip(ts(images), ref)) < 1e-4


def test_dynamic_onnx_matches_pytorch_at_other_sizes_and_batches(shared_data, tool, lmsfa_weights, tmp_path):
    import onnx
    import onnxruntime as ort

    out = tmp_path / "dyn"
    files = [d["file_name"] for d in DatasetCatalog.get("kvasir_seg_val")[:2]]  # sizes differ from endoscapes
    rc = tool.main(["--config-file", LMSFA_CFG, "--output", str(out), "--dynamic", "--format", "onnx",
                    "--input"] + files + ["--opts"] + _opts(lmsfa_weights))
    assert rc == 0
    meta = json.loads((out / "export.json").read_text())
    assert meta["input"]["shape"] == ["batch", 3, "32*h", "32*w"] and meta["onnx"]["opset"] == 18
    assert meta["check"]["max_abs_diff"]["onnx"] < 1e-4
    dets = meta["check"]["onnx_detections"]
    assert dets["detections_pytorch"] > 0 and abs(dets["detections_pytorch"] - dets["detections_onnx"]) <= 2
    assert dets["matched_fraction"] > 0.95 and dets["matched_max_box_abs_diff"] < 1e-2
    assert dets["matched_max_score_abs_diff"] < 1e-4 and dets["matched_max_mask_pixel_disagreement"] < 1e-2

    # a fused, self-contained graph (weights inside, no external data file)
    graph = onnx.load(str(out / "model.onnx"))
    onnx.checker.check_model(graph)
    assert not [n for n in graph.graph.node if n.op_type == "BatchNormalization"]
    assert not [f for f in os.listdir(out) if f.endswith(".data")]

    # other sizes and a batch of two real images, against the UNFUSED PyTorch network
    cfg = load_test_cfg(LMSFA_CFG, *_opts(lmsfa_weights))
    net = tool.ExportableNetwork(tool.build_eval_model(cfg, fuse=False)).eval()
    sess = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    inputs = tool.check_images(cfg, "endoscapes_seg50_val", (), 2)
    for size in [None, (96, 160), (128, 224)]:
        images = tool.pad_batch([x["image"] for x in inputs], torch.full((3,), 114.0), size)
        assert images.shape[0] == 2
        with torch.no_grad():
            ref = net(images)
        got = sess.run(None, {"images": images.numpy()})
        assert got[-1].shape == tuple(ref[-1].shape)
        assert max(float(np.abs(g - r.numpy()).max()) for g, r in zip(got, ref)) < 1e-4


def test_adaptive_pool_substitution_is_exact(tool):
    from torch import nn

    m = nn.Sequential(nn.AdaptiveAvgPool2d((None, 1)), nn.Sequential(nn.AdaptiveAvgPool2d((1, None))),
                      nn.AdaptiveAvgPool2d(1), nn.AdaptiveAvgPool2d((2, 2)))
    x = torch.randn(2, 3, 6, 10)
    ref = [mod(x) for mod in (m[0], m[1][0], m[2], m[3])]
    assert tool.make_export_friendly(m) == 3
    assert isinstance(m[3], nn.AdaptiveAvgPool2d)  # a real (2, 2) pool is kept
    got = [mod(x) for mod in (m[0], m[1][0], m[2], m[3])]
    for r, g in zip(ref, got):
        assert r.shape == g.shape and torch.allclose(r, g, atol=1e-6)


def test_semantic_model_torchscript_round_trip(shared_data, tool, tmp_path):
    out = tmp_path / "lgms"
    rc = tool.main(["--config-file", LGMS_CFG, "--output", str(out), "--format", "torchscript",
                    "--check-dataset", "kvasir_seg_val", "--num-check-images", "2"])
    assert rc == 0
    meta = json.loads((out / "export.json").read_text())
    assert meta["input"]["shape"] == [1, 3, 64, 64]  # INPUT.FIXED_SIZE
    assert meta["check"]["max_abs_diff"]["torchscript"] < 1e-4
    # the semantic mapper's fixed resize fills the input: nothing to pad
    assert all(r["input_shape"] == [1, 3, 64, 64] for r in meta["check"]["per_image"])

"""tools/export.py: TorchScript, ONNX, OpenVINO and INT8 exports of the fused network, checked
against PyTorch on real images (raw outputs and post-processed detections/masks), a perturbed
graph whose masks disagree fails the check, dynamic shapes, the adaptive-pool substitution and a
semantic model. Small input sizes (tiny configs) keep it fast."""
import json
import os
import shutil

import numpy as np
import pytest
import torch

import medseg_core  # noqa: F401  (compat shim before detectron2)
from detectron2.data import DatasetCatalog

from medseg_core.testing import load_script, load_test_cfg

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LMSFA_CFG = os.path.join(REPO, "configs", "quick_schedules", "lmsfa_instant_test.yaml")
LGMS_CFG = os.path.join(REPO, "configs", "quick_schedules", "lgmsnet_instant_test.yaml")


# the tool sets torch's thread count for the process
pytestmark = pytest.mark.usefixtures("keep_torch_threads")


@pytest.fixture(scope="module")
def tool():
    return load_script(os.path.join(REPO, "tools", "export.py"), "medseg_export_tool")


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
    # the AP threshold (0.001) lets detections of the random model through: masks to compare
    return ["MODEL.LMSFA.NUM_CLASSES", "6", "MODEL.WEIGHTS", weights, "MODEL_EMA.ENABLED", "False",
            "MODEL.LMSFA.TEST_MAX_DET", "30"]


@pytest.fixture(scope="module")
def exported(shared_data, tool, lmsfa_weights, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "lmsfa"
    rc = tool.main(["--config-file", LMSFA_CFG, "--output", str(out), "--format", "torchscript", "onnx", "openvino",
                    "--int8", "--calibration-dataset", "endoscapes_seg50_train", "--calibration-images", "4",
                    "--check-dataset", "endoscapes_seg50_val", "--num-check-images", "2", "--opts"]
                   + _opts(lmsfa_weights))
    return rc, out


def test_every_runtime_matches_pytorch_after_postprocessing(exported, tool, lmsfa_weights):
    import onnx
    import openvino as ov

    rc, out = exported
    assert rc == 0
    meta = json.loads((out / "export.json").read_text())
    # static input: the padded size of an 854x480 frame letterboxed to 128 (the tiny config)
    assert meta["input"]["shape"] == [1, 3, 96, 128] and meta["input"]["dynamic"] is False
    c = meta["contract"]
    assert (c["resize"], c["resize_size"], c["size_divisibility"], c["pad_value"], c["input_format"]) == (
        "longest", [128], 32, [114.0] * 3, "RGB")
    assert c["pixel_std"] == [255.0] * 3 and meta["fused"] is True
    assert meta["adaptive_pools_replaced_by_means"] > 0 and meta["substitution_max_abs_diff"] < 1e-5
    assert [o["name"] for o in meta["outputs"]] == [
        "box_s8", "box_s16", "box_s32", "cls_s8", "cls_s16", "cls_s32", "coef_s8", "coef_s16", "coef_s32", "protos"]
    assert set(meta["checks"]) == {"torchscript", "onnxruntime", "openvino", "openvino-int8"}
    for kind in ("torchscript", "onnxruntime", "openvino"):
        chk = meta["checks"][kind]
        a = chk["agreement"]
        assert chk["ok"] is True and chk["failed"] == [] and chk["max_abs_diff"] < 1e-4, kind
        assert a["detections_pytorch"] > 5 and a["matched_fraction"] == 1.0, kind
        assert a["max_score_abs_diff"] < 1e-4 and a["max_box_abs_diff"] < 1e-2 and a["min_mask_iou"] > 0.99, kind
    int8 = meta["checks"]["openvino-int8"]
    assert int8["ok"] is None and int8["max_abs_diff"] > 0  # reported, not held to FP32 tolerances
    ops = {op.get_type_name() for op in ov.Core().read_model(str(out / "model_int8.xml")).get_ops()}
    assert "FakeQuantize" in ops
    assert "FakeQuantize" not in {op.get_type_name() for op in ov.Core().read_model(str(out / "model.xml")).get_ops()}
    # a fused, self-contained ONNX graph (weights inside, no external data file)
    graph = onnx.load(str(out / "model.onnx"))
    onnx.checker.check_model(graph)
    assert not [n for n in graph.graph.node if n.op_type == "BatchNormalization"]
    assert not [f for f in os.listdir(out) if f.endswith(".data")]
    # the saved TorchScript file loads without the project's classes and reproduces the UNFUSED model
    from medseg_core.deploy import DeployNetwork
    from medseg_core.deploy.predictor import Predictor, build_deployable, build_runtime
    from medseg_core.data.mappers import read_image_checked

    model = build_deployable(load_test_cfg(LMSFA_CFG, *_opts(lmsfa_weights)), fuse=False)
    frame = read_image_checked(DatasetCatalog.get("endoscapes_seg50_val")[0]["file_name"], "BGR")
    batch, _, _ = Predictor(model, build_runtime("pytorch", model)).prepare([frame])
    assert float(batch[0, :, -1, -1].sub(114).abs().max()) == 0  # letterbox padding with YOLO gray
    with torch.no_grad():
        ref = DeployNetwork(model).eval()(batch)
        got = torch.jit.load(str(out / "model.ts"))(batch)
    assert max(float((a - b).abs().max()) for a, b in zip(got, ref)) < 1e-4


def _negate_protos_conv(onnx_path):
    """Negate the weights of the convolution nearest to the 'protos' output: boxes, classes and
    scores stay exactly as they were, the masks change."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(onnx_path)
    producers = {o: n for n in model.graph.node for o in n.output}
    inits = {i.name: i for i in model.graph.initializer}
    todo, seen = ["protos"], set()
    while todo:
        name = todo.pop(0)
        node = producers.get(name)
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        if node.op_type == "Conv":
            w = inits[node.input[1]]
            w.CopyFrom(numpy_helper.from_array(-numpy_helper.to_array(w), w.name))
            onnx.save(model, onnx_path)
            return
        todo += list(node.input)
    raise AssertionError("no Conv feeds 'protos'")


def test_check_fails_when_masks_disagree_even_with_a_generous_atol(exported, tool, lmsfa_weights, tmp_path):
    rc, src = exported
    out = tmp_path / "perturbed"
    shutil.copytree(src, out)
    _negate_protos_conv(str(out / "model.onnx"))
    rc = tool.main(["--config-file", LMSFA_CFG, "--output", str(out), "--check-only", "--atol", "1e9",
                    "--check-dataset", "endoscapes_seg50_val", "--num-check-images", "2", "--opts"] + _opts(lmsfa_weights))
    assert rc == 1
    checks = json.loads((out / "export.json").read_text())["checks"]
    bad = checks["onnxruntime"]
    assert bad["ok"] is False and bad["agreement"]["matched_fraction"] == 1.0  # same boxes ...
    assert bad["agreement"]["min_mask_iou"] < 0.9  # ... other masks
    assert len(bad["failed"]) == 1 and "mask" in bad["failed"][0]
    assert checks["torchscript"]["ok"] is True and checks["openvino"]["ok"] is True  # untouched files still agree


def test_dynamic_onnx_matches_pytorch_at_other_sizes_and_batches(shared_data, tool, lmsfa_weights, tmp_path):
    import onnxruntime as ort

    from medseg_core.deploy import DeployNetwork
    from medseg_core.deploy.predictor import build_deployable

    out = tmp_path / "dyn"
    files = [d["file_name"] for d in DatasetCatalog.get("kvasir_seg_val")[:2]]  # sizes differ from endoscapes
    rc = tool.main(["--config-file", LMSFA_CFG, "--output", str(out), "--dynamic", "--format", "onnx",
                    "--input"] + files + ["--opts"] + _opts(lmsfa_weights))
    assert rc == 0
    meta = json.loads((out / "export.json").read_text())
    assert meta["input"]["shape"] == ["batch", 3, "32*h", "32*w"] and meta["onnx"]["opset"] == 18
    assert meta["checks"]["onnxruntime"]["ok"] is True
    assert meta["checks"]["onnxruntime"]["max_abs_diff"] < 1e-4
    # other sizes and a batch of two, against the UNFUSED PyTorch network
    model = build_deployable(load_test_cfg(LMSFA_CFG, *_opts(lmsfa_weights)), fuse=False)
    net = DeployNetwork(model).eval()
    sess = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    g = torch.Generator().manual_seed(0)
    for size in [(64, 96), (96, 160), (128, 224)]:
        images = torch.randint(0, 256, (2, 3, *size), generator=g).float()
        with torch.no_grad():
            ref = net(images)
        got = sess.run(None, {"images": images.numpy()})
        assert got[-1].shape == tuple(ref[-1].shape)
        assert max(float(np.abs(a - r.numpy()).max()) for a, r in zip(got, ref)) < 1e-4


def test_adaptive_pool_substitution_is_exact():
    from torch import nn

    from medseg_core.deploy.export import make_export_friendly

    m = nn.Sequential(nn.AdaptiveAvgPool2d((None, 1)), nn.Sequential(nn.AdaptiveAvgPool2d((1, None))),
                      nn.AdaptiveAvgPool2d(1), nn.AdaptiveAvgPool2d((2, 2)))
    x = torch.randn(2, 3, 6, 10)
    ref = [mod(x) for mod in (m[0], m[1][0], m[2], m[3])]
    assert make_export_friendly(m) == 3
    assert isinstance(m[3], nn.AdaptiveAvgPool2d)  # a real (2, 2) pool is kept
    got = [mod(x) for mod in (m[0], m[1][0], m[2], m[3])]
    for r, g in zip(ref, got):
        assert r.shape == g.shape and torch.allclose(r, g, atol=1e-6)


def test_semantic_model_torchscript_and_onnx_round_trip(shared_data, tool, tmp_path):
    out = tmp_path / "lgms"
    rc = tool.main(["--config-file", LGMS_CFG, "--output", str(out), "--format", "torchscript", "onnx",
                    "--check-dataset", "kvasir_seg_val", "--num-check-images", "2"])
    assert rc == 0
    meta = json.loads((out / "export.json").read_text())
    assert meta["input"]["shape"] == [1, 3, 64, 64]  # INPUT.FIXED_SIZE: nothing to pad
    assert meta["contract"]["resize"] == "fixed" and meta["contract"]["resize_size"] == [64, 64]
    assert meta["outputs"][0]["name"] == "logits"
    for kind in ("torchscript", "onnxruntime"):
        chk = meta["checks"][kind]
        assert chk["ok"] is True and chk["max_abs_diff"] < 1e-4 and chk["agreement"]["pixel_agreement"] == 1.0


def test_evaluating_a_runtime_that_is_not_exported_stops_before_any_work(tool, tmp_path):
    out = tmp_path / "never"
    base = ["--config-file", LMSFA_CFG, "--output", str(out), "--format", "onnx", "--evaluate", "endoscapes_seg50_val"]
    with pytest.raises(SystemExit, match="--evaluate-runtimes openvino-int8: not exported"):
        tool.main(base + ["--evaluate-runtimes", "onnxruntime", "openvino-int8"])
    with pytest.raises(SystemExit, match="needs --evaluate"):
        tool.main(["--config-file", LMSFA_CFG, "--output", str(out), "--evaluate-runtimes", "onnxruntime"])
    assert not out.exists()
    assert tool.exported_runtimes(tool.get_parser().parse_args(["--config-file", "x", "--format", "onnx", "--int8"])) \
        == {"onnxruntime", "openvino", "openvino-int8"}

"""medseg_core.deploy: the deploy interface round-trips for every 2D model family (instant
configs, real images), arrays and files give identical predictions, and the video pipeline keeps
every frame in order. The runtimes against PyTorch (ONNX Runtime, OpenVINO, INT8) are tested
through tools/export.py in test_export.py."""
import os
import threading
import time

import numpy as np
import pytest
import torch

import medseg_core  # noqa: F401  (compat shim before detectron2)
from detectron2.data import DatasetCatalog

from medseg_core.data.mappers import build_dataset_mapper, read_image_checked
from medseg_core.deploy import DeployableModel, PreprocessContract, as_deployable
from medseg_core.deploy.predictor import Predictor, build_deployable, build_runtime
from medseg_core.deploy.video import VideoPipeline
from medseg_core.testing import load_test_cfg

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QS = os.path.join(REPO, "configs", "quick_schedules")

FAMILIES = [  # (instant config, real data set): one per 2D meta-architecture
    ("lmsfa_instant_test.yaml", "endoscapes_seg50_val"),
    ("lgmsnet_instant_test.yaml", "kvasir_seg_val"),
    ("mask_rcnn_R50_FPN_scratch_bn_instant_test.yaml", "endoscapes_seg50_val"),
    ("mask2former_R50_instant_test.yaml", "endoscapes_seg50_val"),
    ("yolact_R50_FPN_instant_test.yaml", "endoscapes_seg50_val"),
    ("solov2_R50_FPN_instant_test.yaml", "endoscapes_seg50_val"),
]


def _same_results(a, b):
    assert a.keys() == b.keys()
    for k in a:
        if k == "instances":
            x, y = a[k], b[k]
            assert len(x) == len(y) and x.image_size == y.image_size
            for field in ("pred_boxes", "scores", "pred_classes", "pred_masks"):
                u, v = x.get(field), y.get(field)
                u, v = (u.tensor, v.tensor) if hasattr(u, "tensor") else (u, v)
                assert torch.equal(u, v), field
        else:
            assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("config,dataset", FAMILIES, ids=[f[0].split("_instant")[0] for f in FAMILIES])
def test_interface_round_trips_and_arrays_equal_files(shared_data, config, dataset):
    torch.manual_seed(0)
    cfg = load_test_cfg(os.path.join(QS, config))
    model = build_deployable(cfg)
    assert isinstance(model, DeployableModel)
    contract = model.deploy_contract()
    rec = DatasetCatalog.get(dataset)[0]
    inputs = build_dataset_mapper(cfg, False, dataset)({"file_name": rec["file_name"], "image_id": 0})
    bgr = read_image_checked(rec["file_name"], "BGR")
    # the contract applied to an array reproduces the registered test mapper on the file
    assert torch.equal(contract.image_tensor(bgr, "BGR"), inputs["image"])
    assert torch.equal(contract.image_tensor(np.ascontiguousarray(bgr[:, :, ::-1]), "RGB"), inputs["image"])
    predictor = Predictor(model, build_runtime("pytorch", model))
    with torch.no_grad():
        own = (model.model if hasattr(model, "feature_names") else model)([inputs])[0]  # the model's own forward
    from_array = predictor(bgr, "BGR")
    from_file = predictor.predict_image_tensor(inputs["image"], (inputs["height"], inputs["width"]))
    _same_results(own, from_array)
    _same_results(own, from_file)
    names = model.deploy_output_names()
    batch, _, _ = predictor.prepare([bgr], "BGR")
    assert batch.shape[-2] % contract.size_divisibility == 0 and batch.shape[-1] % contract.size_divisibility == 0
    assert len(predictor.runtime(batch)) == len(names) == len(set(names))


def test_contract_validates_and_pads():
    c = PreprocessContract("RGB", "longest", (64,), 32, (114.0,) * 3, (0.0,) * 3, (255.0,) * 3)
    img = np.zeros((30, 50, 3), np.uint8)
    t = c.image_tensor(img, "BGR")
    assert tuple(t.shape) == (3, 38, 64)  # 30 * 64 / 50 = 38.4 -> 38, as Ultralytics rounds
    b = c.pad_batch([t])
    assert tuple(b.shape) == (1, 3, 64, 64) and float(b[0, :, 40:, :].min()) == 114.0
    with pytest.raises(ValueError, match="larger than the network's fixed input size"):
        c.pad_batch([t], (32, 64))
    with pytest.raises(ValueError, match="takes 2 size value"):
        PreprocessContract("RGB", "fixed", (64,), 32, (0.0,) * 3, (0.0,) * 3, (1.0,) * 3)
    with pytest.raises(ValueError, match="uint8"):
        c.image_tensor(img.astype(np.float32))
    with pytest.raises(TypeError, match="deploy interface"):
        as_deployable(torch.nn.Conv2d(3, 3, 1))


@pytest.fixture(scope="module")
def lmsfa_model():
    """A seeded LMSF-A (tiny config) with non-trivial BatchNorm statistics and a class bias that
    lets a few dozen detections through, so that post-processing has work to compare."""
    torch.manual_seed(0)
    cfg = load_test_cfg(os.path.join(QS, "lmsfa_instant_test.yaml"), "MODEL.LMSFA.NUM_CLASSES", 6,
                        "MODEL.LMSFA.TEST_CONF_THRESH", 0.05)
    model = build_deployable(cfg)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return cfg, model


# ------------------------------------------------------------------ video pipeline
def _clip(n=12, h=48, w=64):
    """Generated frames whose first pixel encodes their index."""
    frames = []
    for i in range(n):
        f = np.full((h, w, 3), 40, np.uint8)
        f[0, 0] = (i, 255 - i, i)
        f[10:30, 10 + i:30 + i] = 200
        frames.append(f)
    return frames


def test_video_pipeline_writes_every_frame_in_order(shared_data, lmsfa_model):
    cfg, model = lmsfa_model
    predictor = Predictor(model, build_runtime("pytorch", model))
    clip = _clip()
    written, threads = [], set()

    def render(frame, pred):
        threads.add(threading.current_thread().name)
        return int(frame[0, 0, 0]), pred

    def sink(item):
        time.sleep(0.002 * (item[0] % 3))  # uneven writer: queues must keep the order
        written.append(item)

    stats = VideoPipeline(predictor, sink, render=render, queue_size=2).run(iter(clip))
    assert [i for i, _ in written] == list(range(len(clip)))
    assert stats.count == len(clip) and [t.index for t in stats.frames] == list(range(len(clip)))
    assert threads == {"medseg-video-write"}  # drawing runs beside inference
    assert all(t.latency_ms >= t.infer_ms > 0 for t in stats.frames) and stats.fps > 0
    # every frame's predictions are the predictor's own for that frame
    for (i, pred), frame in zip(written, clip):
        _same_results(pred, predictor(frame, "BGR"))


def test_video_pipeline_raises_errors_of_any_stage():
    def bad_predictor(frame, fmt):
        if frame[0, 0, 0] == 3:
            raise RuntimeError("frame 3 is broken")
        return {}

    with pytest.raises(RuntimeError, match="frame 3 is broken"):
        VideoPipeline(bad_predictor, lambda x: None, queue_size=1).run(iter(_clip()))

    def bad_sink(item):
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        VideoPipeline(lambda f, fmt: {}, bad_sink).run(iter(_clip()))

    def bad_frames():
        yield _clip(1)[0]
        raise ValueError("decoder died")

    with pytest.raises(ValueError, match="decoder died"):
        VideoPipeline(lambda f, fmt: {}, lambda x: None).run(bad_frames())

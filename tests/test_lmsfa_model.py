"""The LMSFA meta-architecture on real endoscapes-seg50 images: one training step per
LMSF-A / YOLOv8-seg / ablation config, the loss falling on a tiny fixed subset, frames without
instances, and inference outputs (fields, original-size masks) on odd image sizes."""
import glob
import math
import os

import pytest
import torch

import medseg_core  # noqa: F401
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.modeling import build_model

from medseg_core.testing import load_test_cfg, train_steps

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENDO = os.path.join(REPO, "configs", "Endoscapes-InstanceSegmentation")
BASE = os.path.join(ENDO, "Base-LMSFA.yaml")
LMSFA_CONFIGS = sorted(
    [BASE]
    + glob.glob(os.path.join(ENDO, "lmsfa_*.yaml"))
    + glob.glob(os.path.join(ENDO, "yolov8seg_*.yaml"))
    + glob.glob(os.path.join(ENDO, "ablations", "*.yaml"))
)
LOSS_KEYS = {"loss_box", "loss_seg", "loss_cls", "loss_dfl"}
# small and fast: 64 px, 2 images, no mosaic (the mosaic path is covered in test_lmsfa_data.py)
TINY = ["INPUT.YOLO.IMAGE_SIZE", "64", "SOLVER.IMS_PER_BATCH", "2", "INPUT.YOLO.MOSAIC_PROB", "0.0",
        "SOLVER.AMP.ENABLED", "False", "DATASETS.VALIDATE", "False"]


def _register_subset(name, source, select):
    """Register ``select(all dicts)`` of a data set under a new name."""
    dicts = select(DatasetCatalog.get(source))
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, lambda: [dict(d) for d in dicts])
    meta = MetadataCatalog.get(source)
    MetadataCatalog.get(name).set(thing_classes=list(meta.thing_classes), evaluator_type="coco",
                                  mask_format=meta.get("mask_format", "bitmask"))
    return dicts


@pytest.mark.parametrize("config", LMSFA_CONFIGS, ids=lambda p: os.path.relpath(p, ENDO))
def test_one_train_step_per_config(shared_data, config):
    cfg = load_test_cfg(config, *TINY)
    assert cfg.MODEL.META_ARCHITECTURE == "LMSFA"
    hist = train_steps(cfg, 1)
    assert set(hist[0]) == LOSS_KEYS
    assert all(math.isfinite(v) for v in hist[0].values()), hist


def test_loss_falls_on_a_tiny_fixed_subset(shared_data):
    # the same 4 frames every step, no augmentation at all: the summed loss must drop
    _register_subset("endoscapes_seg50_train_first4", "endoscapes_seg50_train",
                     lambda ds: [d for d in ds if d["annotations"]][:4])
    cfg = load_test_cfg(
        BASE, "DATASETS.TRAIN", "('endoscapes_seg50_train_first4',)", "INPUT.YOLO.IMAGE_SIZE", "128",
        "SOLVER.IMS_PER_BATCH", "4", "INPUT.YOLO.MOSAIC_PROB", "0.0", "INPUT.YOLO.SCALE", "0.0",
        "INPUT.YOLO.TRANSLATE", "0.0", "INPUT.YOLO.FLIP_LR", "0.0", "INPUT.YOLO.HSV_H", "0.0",
        "INPUT.YOLO.HSV_S", "0.0", "INPUT.YOLO.HSV_V", "0.0", "DATASETS.VALIDATE", "False",
    )
    torch.manual_seed(0)
    hist = [sum(h.values()) for h in train_steps(cfg, 12)]
    first, last = sum(hist[:3]) / 3, sum(hist[-3:]) / 3
    assert last < 0.85 * first, hist


def test_frames_without_instances_train(shared_data):
    root = shared_data
    with open(os.path.join(root, "endoscapes-seg50", "metadata", "frames_empty_mask_train.txt")) as f:
        empty = {line.strip() for line in f if line.strip()}
    picked = _register_subset(
        "endoscapes_seg50_train_empty", "endoscapes_seg50_train",
        lambda ds: [d for d in ds if os.path.splitext(os.path.basename(d["file_name"]))[0] in empty],
    )
    assert picked and all(len(d["annotations"]) == 0 for d in picked)
    cfg = load_test_cfg(BASE, *TINY, "DATASETS.TRAIN", "('endoscapes_seg50_train_empty',)")
    hist = train_steps(cfg, 2)
    for h in hist:
        assert set(h) == LOSS_KEYS and all(math.isfinite(v) for v in h.values())
        assert h["loss_box"] == 0.0 and h["loss_seg"] == 0.0 and h["loss_dfl"] == 0.0 and h["loss_cls"] > 0


def _check_instances(inst, h, w, max_det):
    assert inst.image_size == (h, w)
    assert {"pred_boxes", "scores", "pred_classes", "pred_masks"} <= set(inst.get_fields())
    k = len(inst)
    assert 0 < k <= max_det
    assert inst.pred_masks.shape == (k, h, w) and inst.pred_masks.dtype == torch.bool
    b = inst.pred_boxes.tensor
    assert (b[:, 0] >= 0).all() and (b[:, 2] <= w).all() and (b[:, 1] >= 0).all() and (b[:, 3] <= h).all()
    assert (inst.scores[:-1] >= inst.scores[1:]).all()
    assert ((inst.pred_classes >= 0) & (inst.pred_classes < 6)).all()
    # masks are cropped to their boxes at the output resolution
    ys = torch.arange(h).view(1, -1, 1) + 0.5
    xs = torch.arange(w).view(1, 1, -1) + 0.5
    inside = (xs >= b[:, 0, None, None]) & (xs <= b[:, 2, None, None]) & (ys >= b[:, 1, None, None]) & (ys <= b[:, 3, None, None])
    assert not (inst.pred_masks & ~inside).any()


def test_inference_fields_and_original_size_masks_on_odd_sizes(shared_data):
    cfg = load_test_cfg(BASE, "INPUT.YOLO.IMAGE_SIZE", "160", "MODEL.LMSFA.TEST_MAX_DET", "40",
                        "MODEL.LMSFA.TEST_CONF_THRESH", "0.0")
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    # a real frame through the test mapper (854x480 -> 160x90, padded to 160x96)
    from lmsfa.yolo_mapper import YOLOMapper

    d = DatasetCatalog.get("endoscapes_seg50_val")[0]
    x = YOLOMapper(cfg, is_train=False)(d)
    assert tuple(x["image"].shape) == (3, 90, 160)
    # synthetic odd sizes: resized content 97x131 standing for a 301x411 original, and one
    # input without height/width (outputs at the input size)
    odd = {"image": torch.randint(0, 255, (3, 97, 131), dtype=torch.uint8), "height": 301, "width": 411}
    plain = {"image": torch.randint(0, 255, (3, 45, 77), dtype=torch.uint8)}
    with torch.no_grad():
        outs = model([x, odd, plain])
    assert len(outs) == 3
    _check_instances(outs[0]["instances"], 480, 854, 40)
    _check_instances(outs[1]["instances"], 301, 411, 40)
    _check_instances(outs[2]["instances"], 45, 77, 40)
    # a batch gives the same detections as each image alone (padding is outside every image)
    with torch.no_grad():
        alone = model([odd])[0]["instances"]
    assert torch.allclose(alone.scores, outs[1]["instances"].scores, atol=1e-4)


def test_complexity_forward_and_fuse_keep_outputs(shared_data):
    cfg = load_test_cfg(BASE)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    x = torch.rand(1, 3, 128, 96)
    with torch.no_grad():
        ref = model.complexity_forward(x)
        fused = model.fuse().complexity_forward(x)
    # 3 levels x (box, cls, coef) + prototypes
    assert len(ref) == 10 and ref[-1].shape == (1, 32, 32, 24)
    assert max(float((a - b).abs().max()) for a, b in zip(ref, fused)) < 1e-3

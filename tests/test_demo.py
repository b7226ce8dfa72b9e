"""demo/demo.py and demo/predictor.py on real images: an instance model (LMSF-A, tiny config) and a
semantic model (LGMSNet, tiny config) write overlays; ground truth beside the prediction; video;
each model's own test pre-processing; the paper's PELD class colours."""
import importlib.util
import os
import sys

import numpy as np
import pytest
import torch
from torch import nn

import medseg_core  # noqa: F401  (compat shim before detectron2)
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data import detection_utils as utils
from detectron2.structures import Boxes, Instances
from PIL import Image

from medseg_core.checkpoint import SafeCheckpointer
from medseg_core.testing import load_test_cfg
from medseg_core.visualization import PELD_COLORS, class_colors, draw_dataset_ground_truth, draw_prediction

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "demo"))
from predictor import VisualizationDemo  # noqa: E402

LMSFA_CFG = os.path.join(REPO, "configs", "quick_schedules", "lmsfa_instant_test.yaml")
LGMS_CFG = os.path.join(REPO, "configs", "quick_schedules", "lgmsnet_instant_test.yaml")
FORCED_CLASS = 2


def _demo_cli():
    spec = importlib.util.spec_from_file_location("medseg_demo_cli", os.path.join(REPO, "demo", "demo.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def forced_checkpoint(tmp_path_factory):
    """LMSF-A (tiny config, 6 endoscapes classes) whose class-logit bias makes every anchor score
    ~1 for class FORCED_CLASS: the demo can only draw that class if it loaded these weights."""
    from detectron2.modeling import build_model

    cfg = load_test_cfg(LMSFA_CFG, "MODEL.LMSFA.NUM_CLASSES", 6)
    torch.manual_seed(0)
    model = build_model(cfg)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.out_channels == 6 and m.bias is not None]
    assert convs, "no class-logit conv found"
    with torch.no_grad():
        for m in convs:
            m.bias.fill_(-20.0)
            m.bias[FORCED_CLASS] = 20.0
    folder = tmp_path_factory.mktemp("forced")
    SafeCheckpointer(model, save_dir=str(folder)).save("forced")
    return os.path.join(str(folder), "forced.pth")


def _lmsfa_opts(weights):
    return ["MODEL.DEVICE", "cpu", "MODEL.LMSFA.NUM_CLASSES", "6", "MODEL.LMSFA.TEST_MAX_DET", "3",
            "MODEL_EMA.ENABLED", "False", "MODEL.WEIGHTS", weights]


def test_peld_colours_drawn_for_each_class():
    """A hand-placed 'nerve' mask on a gray image is tinted with the paper's green; 'bone' red."""
    meta = MetadataCatalog.get("__test_demo_peld")
    meta.thing_classes = ["adipose tissue", "bone", "ligamentum flavum", "nerve"]
    img = np.full((64, 96, 3), 128, np.uint8)
    inst = Instances((64, 96))
    masks = torch.zeros((2, 64, 96), dtype=torch.bool)
    masks[0, 10:40, 5:40] = True
    masks[1, 20:50, 55:90] = True
    inst.pred_masks = masks
    inst.pred_boxes = Boxes(torch.tensor([[5.0, 10, 40, 40], [55, 20, 90, 50]]))
    inst.scores = torch.tensor([0.9, 0.8])
    inst.pred_classes = torch.tensor([3, 1])
    out = draw_prediction(img, {"instances": inst}, meta, 0.5).astype(int)
    nerve, bone = out[25, 20], out[35, 70]
    g, r = np.array(PELD_COLORS["nerve"]), np.array(PELD_COLORS["bone"])
    # alpha-0.45 blend with gray: the channel order of the class colour survives
    assert np.argmax(nerve) == np.argmax(g) == 1 and np.argmax(bone) == np.argmax(r) == 0
    np.testing.assert_allclose(nerve, 0.55 * 128 + 0.45 * g, atol=3)
    # a threshold above both scores draws nothing inside the masks
    empty = draw_prediction(img, {"instances": inst}, meta, 0.95)
    assert np.abs(empty[25, 20].astype(int) - 128).max() <= 1


def test_frames_and_files_share_the_models_test_preprocessing(shared_data):
    """A decoded frame and its file give identical model inputs, sized by each model's mapper:
    LMSF-A longest side = INPUT.YOLO.IMAGE_SIZE (no shortest-edge resize), LGMSNet FIXED_SIZE."""
    d = DatasetCatalog.get("endoscapes_seg50_val")[0]
    bgr = utils.read_image(d["file_name"], format="BGR")
    for cfg_file, ds in ((LMSFA_CFG, "endoscapes_seg50_val"), (LGMS_CFG, "kvasir_seg_val")):
        cfg = load_test_cfg(cfg_file, "MODEL.LMSFA.NUM_CLASSES", 6) if cfg_file == LMSFA_CFG else load_test_cfg(cfg_file)
        demo = VisualizationDemo(cfg, dataset_name=ds)
        a = demo.predictor.map_inputs(file_name=d["file_name"])
        b = demo.predictor.map_inputs(image=bgr, image_format="BGR")
        assert torch.equal(a["image"], b["image"])
        assert (b["height"], b["width"]) == bgr.shape[:2]
        h, w = a["image"].shape[-2:]
        if cfg_file == LMSFA_CFG:
            assert max(h, w) == cfg.INPUT.YOLO.IMAGE_SIZE
            assert abs(w / h - bgr.shape[1] / bgr.shape[0]) < 0.02
        else:
            assert (h, w) == tuple(cfg.INPUT.FIXED_SIZE)


def test_demo_instance_model_writes_gt_beside_prediction(shared_data, forced_checkpoint, tmp_path):
    cli = _demo_cli()
    out = tmp_path / "inst"
    cfg_file = LMSFA_CFG
    rc = cli.main(["--config-file", cfg_file, "--gt-dataset", "endoscapes_seg50_val", "--max-images", "2",
                   "--output", str(out), "--confidence-threshold", "0.5", "--opts"] + _lmsfa_opts(forced_checkpoint))
    assert rc == 0
    dicts = DatasetCatalog.get("endoscapes_seg50_val")[:2]
    meta = MetadataCatalog.get("endoscapes_seg50_val")
    written = sorted(os.listdir(out))
    assert written == sorted(os.path.splitext(os.path.basename(d["file_name"]))[0] + ".png" for d in dicts)
    cfg = load_test_cfg(cfg_file, *_lmsfa_opts(forced_checkpoint))
    demo = VisualizationDemo(cfg, 0.5, dataset_name="endoscapes_seg50_val")
    for d in dicts:
        rgb = utils.read_image(d["file_name"], format="RGB")
        h, w = rgb.shape[:2]
        vis = np.asarray(Image.open(out / (os.path.splitext(os.path.basename(d["file_name"]))[0] + ".png")))
        assert vis.shape == (h, 2 * w + 8, 3)
        gt = draw_dataset_ground_truth(rgb, d, meta)
        assert np.array_equal(vis[:, :w], gt)
        assert np.abs(gt.astype(int) - rgb).mean() > 1.0  # annotations were drawn
        # the loaded weights predict only the forced class, above the threshold, at the original size
        pred = demo.predictor(dataset_dict=d)["instances"]
        assert 1 <= len(pred) <= 3 and set(pred.pred_classes.tolist()) == {FORCED_CLASS}
        assert bool((pred.scores > 0.5).all()) and tuple(pred.pred_masks.shape[-2:]) == (h, w)
        assert np.array_equal(vis[:, w + 8:], demo.draw(rgb, {"instances": pred}))
        assert np.abs(vis[:, w + 8:].astype(int) - rgb).mean() > 1.0  # predictions were drawn


@pytest.fixture(scope="module")
def lgms_checkpoint(tmp_path_factory):
    """Untrained LGMSNet (tiny config) saved once, so that every run draws the same predictions."""
    from detectron2.modeling import build_model

    torch.manual_seed(0)
    model = build_model(load_test_cfg(LGMS_CFG))
    folder = tmp_path_factory.mktemp("lgms")
    SafeCheckpointer(model, save_dir=str(folder)).save("lgms")
    return os.path.join(str(folder), "lgms.pth")


def test_demo_semantic_model_writes_overlays(shared_data, lgms_checkpoint, tmp_path):
    cli = _demo_cli()
    dicts = DatasetCatalog.get("kvasir_seg_val")[:2]
    opts = ["--opts", "MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", lgms_checkpoint]
    # plain --input files (no ground truth) ...
    rc = cli.main(["--config-file", LGMS_CFG, "--input"] + [d["file_name"] for d in dicts]
                  + ["--output", str(tmp_path / "plain")] + opts)
    assert rc == 0
    # ... and the same files found in the registered set (ground truth | prediction)
    rc = cli.main(["--config-file", LGMS_CFG, "--gt-dataset", "kvasir_seg_val", "--input"]
                  + [d["file_name"] for d in dicts] + ["--output", str(tmp_path / "gt")] + opts)
    assert rc == 0
    demo = VisualizationDemo(load_test_cfg(LGMS_CFG, "MODEL.WEIGHTS", lgms_checkpoint), dataset_name="kvasir_seg_val")
    assert list(demo.metadata.stuff_classes) == ["background", "polyp"]
    polyp = np.array(class_colors(demo.metadata.stuff_classes)[1], dtype=float)
    for d in dicts:
        stem = os.path.splitext(os.path.basename(d["file_name"]))[0]
        rgb = utils.read_image(d["file_name"], format="RGB")
        h, w = rgb.shape[:2]
        plain = np.asarray(Image.open(tmp_path / "plain" / f"{stem}.png"))
        both = np.asarray(Image.open(tmp_path / "gt" / f"{stem}.png"))
        assert plain.shape == (h, w, 3) and both.shape == (h, 2 * w + 8, 3)
        # prediction: the loaded weights' (K, H, W) scores at the original size, drawn as an overlay
        pred = demo.predictor(file_name=d["file_name"])
        assert tuple(pred["sem_seg"].shape) == (2, h, w)
        assert np.array_equal(plain, demo.draw(rgb, pred))
        assert np.array_equal(both[:, w + 8:], plain)
        # ground truth half: polyp pixels blended 50 % with the class colour, background untouched
        mask = np.asarray(Image.open(d["sem_seg_file_name"]).convert("L")) > 127
        assert mask.any() and (~mask).any()
        left = both[:, :w].astype(float)
        expected = 0.5 * rgb[mask].astype(float) + 0.5 * polyp
        assert np.abs(left[mask] - expected).max() <= 1.0
        assert np.array_equal(both[:, :w][~mask], rgb[~mask])


def test_demo_video_writes_every_frame(shared_data, forced_checkpoint, tmp_path):
    import cv2

    cli = _demo_cli()
    src = str(tmp_path / "clip.mp4")
    frames = DatasetCatalog.get("endoscapes_seg50_val")[:3]
    writer = cv2.VideoWriter(src, cv2.VideoWriter_fourcc(*"mp4v"), 5.0, (160, 96))
    assert writer.isOpened()
    for d in frames:
        writer.write(cv2.resize(cv2.imread(d["file_name"]), (160, 96)))
    writer.release()
    rc = cli.main(["--config-file", LMSFA_CFG, "--video-input", src, "--output", str(tmp_path / "out"),
                   "--opts"] + _lmsfa_opts(forced_checkpoint))
    assert rc == 0
    cap = cv2.VideoCapture(str(tmp_path / "out" / "clip.mp4"))
    n = 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        assert frame.shape == (96, 160, 3)
        n += 1
    cap.release()
    assert n == 3


def test_demo_rejects_bad_inputs(tmp_path):
    cli = _demo_cli()
    with pytest.raises(FileNotFoundError, match="no image matches"):
        cli.expand_inputs([str(tmp_path / "missing*.png")])
    from medseg_core.errors import UsageError

    with pytest.raises(UsageError, match="give --input"):
        cli.main(["--config-file", LMSFA_CFG])


def test_demo_raises_model_score_thresholds_to_its_own():
    """Masks are assembled only for detections the demo draws: LMSF-A's AP threshold (0.001) and
    Detectron2's ROI-head threshold are raised to --confidence-threshold, never lowered."""
    cli = _demo_cli()
    args = cli.get_parser().parse_args(["--config-file", LMSFA_CFG, "--confidence-threshold", "0.4"])
    cfg = cli.setup_cfg(args)
    assert cfg.MODEL.LMSFA.TEST_CONF_THRESH == 0.4 and cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST == 0.4
    args = cli.get_parser().parse_args(["--config-file", LMSFA_CFG, "--confidence-threshold", "0.01",
                                        "--opts", "MODEL.LMSFA.TEST_CONF_THRESH", "0.3"])
    assert cli.setup_cfg(args).MODEL.LMSFA.TEST_CONF_THRESH == 0.3

"""YOLACT, SOLOv2 and ConvNeXt V2 Mask R-CNN: Fast NMS and Matrix NMS against hand-computed
cases, mask resampling / cropping and SOLO target assignment by hand, losses falling on a fixed
smoke-set batch, inference fields at the original size, pinned parameter counts."""
import math
import os

import pytest
import torch

import medseg_core  # noqa: F401

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.modeling import build_model
from detectron2.structures import Instances

from medseg_baselines.fast_nms import batched_box_iou, fast_nms, fast_nms_keep
from medseg_baselines.instance_masks import crop_to_boxes, resample_to_original
from medseg_baselines.matrix_nms import matrix_nms
from medseg_baselines.solov2_targets import solov2_targets
from medseg_core.testing import load_test_cfg, train_steps

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QS = os.path.join(REPO, "configs", "quick_schedules")
YOLACT_QS = os.path.join(QS, "yolact_R50_FPN_instant_test.yaml")
SOLOV2_QS = os.path.join(QS, "solov2_R50_FPN_instant_test.yaml")
CONVNEXT_QS = os.path.join(QS, "mask_rcnn_convnextv2_FPN_instant_test.yaml")
PELD = os.path.join(REPO, "configs", "PELD-InstanceSegmentation")


# ------------------------------------------------------------------ Fast NMS
# Three boxes in a column: IoU(A, B) = IoU(B, C) = 75 / 125 = 0.6, IoU(A, C) = 50 / 150 = 1/3.
A, B, C = [0.0, 0.0, 10.0, 10.0], [0.0, 2.5, 10.0, 12.5], [0.0, 5.0, 10.0, 15.0]


def test_box_iou_matrix_by_hand():
    iou = batched_box_iou(torch.tensor([[A, B, C]]))[0]
    expected = torch.tensor([[1.0, 0.6, 1 / 3], [0.6, 1.0, 0.6], [1 / 3, 0.6, 1.0]])
    assert torch.allclose(iou, expected, atol=1e-6)


def test_fast_nms_keep_is_column_max_of_upper_triangle():
    # sorted detections 0, 1, 2, 3; upper-triangle column maxima: [0, 0.7, 0.3, 0.55]
    iou = torch.tensor([[[1.0, 0.7, 0.3, 0.1],
                         [0.7, 1.0, 0.2, 0.55],
                         [0.3, 0.2, 1.0, 0.4],
                         [0.1, 0.55, 0.4, 1.0]]])
    assert fast_nms_keep(iou, 0.5).tolist() == [[True, False, True, False]]
    assert fast_nms_keep(iou, 0.6).tolist() == [[True, False, True, True]]


def test_fast_nms_suppressed_boxes_still_suppress_and_classes_are_separate():
    from torchvision.ops import nms

    boxes = torch.tensor([A, B, C])
    # class 0 ranks A > B > C; class 1 ranks C > B > A
    scores = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.7, 0.95]])
    idx, classes, kept = fast_nms(boxes, scores, score_threshold=0.05, iou_threshold=0.5, top_k=200, max_detections=100)
    # per class, Fast NMS keeps only the best box: B is suppressed by the best one, and the third
    # box by B (IoU 0.6) although B itself is suppressed -- greedy NMS would keep it
    assert idx.tolist() == [2, 0] and classes.tolist() == [1, 0]
    assert torch.allclose(kept, torch.tensor([0.95, 0.9]))
    assert sorted(nms(boxes, scores[:, 0], 0.5).tolist()) == [0, 2]  # greedy: A and C


def test_fast_nms_score_threshold_top_k_and_max_detections():
    far = [50.0, 50.0, 60.0, 60.0]
    boxes = torch.tensor([A, far, C])
    scores = torch.tensor([[0.9], [0.04], [0.7]])
    idx, _, _ = fast_nms(boxes, scores, 0.05, 0.5, top_k=200, max_detections=100)
    assert idx.tolist() == [0, 2]  # 0.04 is below the score threshold; A and C overlap < 0.5
    idx, _, _ = fast_nms(boxes, scores, 0.0, 0.5, top_k=2, max_detections=100)
    assert idx.tolist() == [0, 2]  # only the top 2 per class enter
    idx, _, _ = fast_nms(boxes, scores, 0.0, 0.5, top_k=200, max_detections=1)
    assert idx.tolist() == [0]


# ------------------------------------------------------------------ Matrix NMS
def _masks(*pixel_sets, n=20):
    m = torch.zeros((len(pixel_sets), 1, n), dtype=torch.bool)
    for i, px in enumerate(pixel_sets):
        m[i, 0, list(px)] = True
    return m


# m0 = {0..9}; m1 = {0..4, 10..14}; m2 = {10..19}; m3 = m0 (a duplicate of the best mask)
# IoU(0,1) = 5/15 = 1/3, IoU(0,2) = 0, IoU(1,2) = 1/3, IoU(0,3) = 1, IoU(1,3) = 1/3, IoU(2,3) = 0
MASKS = _masks(range(10), [*range(5), *range(10, 15)], range(10, 20), range(10))
SCORES = torch.tensor([0.9, 0.8, 0.7, 0.6])


def test_matrix_nms_gaussian_by_hand():
    out = matrix_nms(MASKS, torch.zeros(4, dtype=torch.long), SCORES, "gaussian", sigma=0.5)
    # compensation iou_{.,i} = [0, 1/3, 1/3, 1]
    # m1: decay = exp(-(1/9 - 0) / 0.5)
    # m2: overlaps only m1, and m1's own compensation is 1/3: exp(-(1/9 - 1/9) / 0.5) = 1
    # m3: from m0 exp(-(1 - 0) / 0.5) = e^-2 (from m1: exp(0) = 1; from m2: exp(+2/9))
    expected = torch.tensor([0.9, 0.8 * math.exp(-2 / 9), 0.7, 0.6 * math.exp(-2)])
    assert torch.allclose(out, expected, atol=1e-6)


def test_matrix_nms_linear_by_hand():
    out = matrix_nms(MASKS, torch.zeros(4, dtype=torch.long), SCORES, "linear")
    # m1: (1 - 1/3) / (1 - 0); m2: (1 - 1/3) / (1 - 1/3) = 1; m3: (1 - 1) / 1 = 0
    assert torch.allclose(out, torch.tensor([0.9, 0.8 * 2 / 3, 0.7, 0.0]), atol=1e-6)


def test_matrix_nms_only_same_class_decays():
    labels = torch.tensor([0, 1, 1, 1])
    out = matrix_nms(MASKS, labels, SCORES, "gaussian", sigma=0.5)
    # m1 is now the best of class 1: m2 decays from it (IoU 1/3, compensation 0), m3 from m1
    # (IoU 1/3) while m0 (class 0) no longer touches anything
    e = math.exp(-(1 / 9) / 0.5)
    assert torch.allclose(out, torch.tensor([0.9, 0.8, 0.7 * e, 0.6 * e]), atol=1e-6)


# ------------------------------------------------------------------ masks and targets
def test_resample_to_original_drops_padding_and_resizes():
    # 4x4 map at stride 4 = a 16x16 padded canvas holding an 8x16 image (rows 8..15 padding)
    m = torch.zeros((1, 4, 4))
    m[0, 0:2, 0:2] = 1.0  # the image's left half
    m[0, 2:4, 2:4] = 1.0  # padding only: must not leak into the output
    out = resample_to_original(m, 4, (8, 16), (4, 8))
    assert out.shape == (1, 4, 8)
    expected = torch.zeros((4, 8), dtype=torch.bool)
    expected[:, :4] = True
    assert torch.equal(out[0] > 0.5, expected)
    # output pixel (0, 3) samples map coordinate 1.25 along x: 0.75 of cell 1 + 0.25 of cell 2
    assert out[0, 0, 3].item() == pytest.approx(0.75)


def test_crop_to_boxes_uses_pixel_centres():
    m = torch.ones((1, 4, 6))
    out = crop_to_boxes(m, torch.tensor([[1.0, 0.6, 3.5, 2.0]]))
    expected = torch.zeros((4, 6))
    expected[1, 1:3] = 1.0  # centres 1.5, 2.5 in [1, 3.5); row centre 1.5 in [0.6, 2)
    assert torch.equal(out[0], expected)


def test_solov2_targets_by_hand():
    # 64x64 canvas, one 32x32 square object at [8, 40): centre of mass (24, 24)
    masks = torch.zeros((1, 64, 64))
    masks[0, 8:40, 8:40] = 1.0
    boxes = torch.tensor([[8.0, 8.0, 40.0, 40.0]])
    classes = torch.tensor([2])
    # level 0 (S = 4, cells of 16 px) takes scales 1-48, level 1 (S = 2) 100-200: only level 0
    t = solov2_targets(boxes, classes, masks, 3, [4, 2], [[1, 48], [100, 200]], sigma=0.2, mask_stride=4)
    assert t.labels.shape == (16 + 4,)
    # sigma 0.2: centre region 24 +/- 3.2 stays in cell (1, 1) = index 5
    assert t.positives.tolist() == [5]
    assert t.labels[5].item() == 2 and (t.labels[torch.arange(20) != 5] == 3).all()
    expected = torch.zeros((16, 16))
    expected[2:10, 2:10] = 1.0
    assert torch.equal(t.masks[0], expected)
    # sigma 1: region [8, 40] spans cells 0..2 in both axes (within the 3x3 around the centre)
    t = solov2_targets(boxes, classes, masks, 3, [4, 2], [[1, 48], [100, 200]], sigma=1.0, mask_stride=4)
    assert t.positives.tolist() == [0, 1, 2, 4, 5, 6, 8, 9, 10]
    # both levels when the ranges overlap the scale 32: level 1 cell (0, 0) (global index 16)
    t = solov2_targets(boxes, classes, masks, 3, [4, 2], [[1, 48], [16, 64]], sigma=0.2, mask_stride=4)
    assert t.positives.tolist() == [5, 16]


# ------------------------------------------------------------------ training and inference
def _fixed_smoke_subset() -> str:
    """The first 4 annotated smoke-set training images, registered once."""
    name = "smoke_peld_train_first4"
    if name not in DatasetCatalog.list():
        dicts = [d for d in DatasetCatalog.get("smoke_peld_train") if d["annotations"]][:4]
        DatasetCatalog.register(name, lambda: dicts)
        meta = MetadataCatalog.get("smoke_peld_train")
        MetadataCatalog.get(name).set(thing_classes=list(meta.thing_classes), evaluator_type="coco")
    return name


@pytest.mark.parametrize("config,keys", [
    (YOLACT_QS, {"loss_cls", "loss_box", "loss_mask", "loss_sem"}),
    (SOLOV2_QS, {"loss_cate", "loss_mask"}),
], ids=["yolact", "solov2"])
def test_loss_falls_on_a_fixed_smoke_batch(config, keys):
    # the same 4 images every step, no flip: the summed loss must drop
    cfg = load_test_cfg(config, "DATASETS.TRAIN", f"('{_fixed_smoke_subset()}',)", "SOLVER.IMS_PER_BATCH", 4,
                        "INPUT.RANDOM_FLIP", "none", "DATASETS.VALIDATE", "False")
    torch.manual_seed(0)
    hist = train_steps(cfg, 10)
    assert set(hist[0]) == keys
    assert all(math.isfinite(v) for h in hist for v in h.values()), hist
    totals = [sum(h.values()) for h in hist]
    # the sampler's order is not seeded, and a random-init R50 on 4 images spikes now and then
    # (SOLOv2 measured 3.86 -> 2.50-2.94 over 10 steps, one step back up to 3.69): the best of
    # the last three steps must be 20 % under the first two
    first = sum(totals[:2]) / 2
    assert min(totals[-3:]) < 0.8 * first, totals


@pytest.mark.parametrize("config,extra", [
    (YOLACT_QS, ["MODEL.YOLACT.SCORE_THRESH_TEST", 0.0]),
    (SOLOV2_QS, ["MODEL.SOLOV2.UPDATE_THRESH", 0.0]),
], ids=["yolact", "solov2"])
def test_inference_returns_instances_at_the_original_size(config, extra):
    cfg = load_test_cfg(config, *extra)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    # a 96x128 network input (not a multiple of 32 in height) of a 150x200 original image
    image = torch.randint(0, 255, (3, 96, 128), dtype=torch.uint8)
    with torch.no_grad():
        out = model([{"image": image, "height": 150, "width": 200}])
    inst = out[0]["instances"]
    assert isinstance(inst, Instances) and inst.image_size == (150, 200)
    assert {"pred_boxes", "scores", "pred_classes", "pred_masks"} <= set(inst.get_fields())
    k = len(inst)
    assert 0 < k <= 20
    assert inst.pred_masks.shape == (k, 150, 200) and inst.pred_masks.dtype == torch.bool
    assert (inst.scores[:-1] >= inst.scores[1:]).all()
    assert ((inst.pred_classes >= 0) & (inst.pred_classes < 4)).all()
    b = inst.pred_boxes.tensor
    assert (b[:, 0] >= 0).all() and (b[:, 2] <= 200).all() and (b[:, 1] >= 0).all() and (b[:, 3] <= 150).all()
    # masks lie inside their boxes (YOLACT crops to the box; SOLOv2's boxes are the masks' extents)
    ys = torch.arange(150).view(1, -1, 1) + 0.5
    xs = torch.arange(200).view(1, 1, -1) + 0.5
    inside = (xs >= b[:, 0, None, None]) & (xs <= b[:, 2, None, None]) & (ys >= b[:, 1, None, None]) & (ys <= b[:, 3, None, None])
    assert not (inst.pred_masks & ~inside).any()
    # the deploy split: network -> postprocess gives the same detections
    images = model.preprocess_image([{"image": image}])
    with torch.no_grad():
        again = model.postprocess(model.network(images.tensor), images.image_sizes, [(150, 200)])[0]["instances"]
    assert torch.equal(again.pred_masks, inst.pred_masks) and torch.equal(again.scores, inst.scores)


@pytest.mark.parametrize("config,opts,params", [
    # PELD's 4 classes; paper Table IV: YOLACT 34.7 M, SOLOv2 46.2 M, ConvNeXt 48.7 M
    (os.path.join(PELD, "yolact_R50_FPN_640.yaml"), [], 30_619_871),
    # P6/P7 from C5 (mmdetection's YOLACT) gives the paper's 34.7 M
    (os.path.join(PELD, "yolact_R50_FPN_640.yaml"), ["MODEL.FPN_P6P7.IN_FEATURE", "res5"], 34_748_639),
    (os.path.join(PELD, "solov2_R50_FPN_640.yaml"), [], 46_242_628),
    (CONVNEXT_QS, [], 47_729_832),
], ids=["yolact", "yolact_p6_from_c5", "solov2", "convnextv2_mask_rcnn"])
def test_parameter_counts(config, opts, params):
    model = build_model(load_test_cfg(config, *opts))
    assert sum(p.numel() for p in model.parameters()) == params


def test_convnextv2_mask_rcnn_builds_and_trains_two_steps():
    cfg = load_test_cfg(CONVNEXT_QS)
    model = build_model(cfg)
    assert type(model.backbone.bottom_up).__name__ == "TimmBackbone"
    shapes = model.backbone.bottom_up.output_shape()
    assert [shapes[k].channels for k in ("res2", "res3", "res4", "res5")] == [96, 192, 384, 768]
    torch.manual_seed(0)
    hist = train_steps(cfg, 2)
    assert len(hist) == 2
    assert {"loss_cls", "loss_box_reg", "loss_mask", "loss_rpn_cls", "loss_rpn_loc"} <= set(hist[0])
    assert all(math.isfinite(v) for h in hist for v in h.values()), hist


@pytest.mark.parametrize("config", [YOLACT_QS, SOLOV2_QS], ids=["yolact", "solov2"])
def test_complexity_counts_the_network(config):
    from medseg_core.complexity import model_complexity

    cfg = load_test_cfg(config)
    card = model_complexity(cfg, with_fvcore=False)
    assert card["params"] == sum(p.numel() for p in build_model(cfg).parameters())
    assert card["gflops_thop2x"] > 0


@pytest.mark.parametrize("config", [YOLACT_QS, SOLOV2_QS], ids=["yolact", "solov2"])
def test_frames_without_instances_give_finite_losses(config):
    from detectron2.structures import Boxes

    model = build_model(load_test_cfg(config)).train()
    empty = Instances((96, 128))  # as Detectron2's mapper gives: boxes and classes, no gt_masks
    empty.gt_boxes = Boxes(torch.zeros((0, 4)))
    empty.gt_classes = torch.zeros((0,), dtype=torch.int64)
    batch = [{"image": torch.randint(0, 255, (3, 96, 128), dtype=torch.uint8), "instances": empty}] * 2
    losses = model(batch)
    assert all(torch.isfinite(v) for v in losses.values()), losses
    sum(losses.values()).backward()  # every head stays in the graph
    mask_key = "loss_mask"
    assert losses[mask_key].item() == 0.0


@pytest.mark.parametrize("config", [YOLACT_QS, SOLOV2_QS, CONVNEXT_QS], ids=["yolact", "solov2", "convnextv2"])
def test_local_weights_path_loads(config, tmp_path):
    from medseg_core.checkpoint import SafeCheckpointer
    from medseg_core.engine.trainer import load_weights_for_eval

    cfg = load_test_cfg(config, output_dir=str(tmp_path))
    torch.manual_seed(0)
    trained = build_model(cfg)
    SafeCheckpointer(trained, save_dir=str(tmp_path)).save("weights")
    torch.manual_seed(1)
    fresh = build_model(cfg)
    load_weights_for_eval(cfg, fresh, str(tmp_path / "weights.pth"))
    for (name, a), b in zip(trained.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(a, b), name

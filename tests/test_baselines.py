"""Baselines (Mask R-CNN BN/GN scratch, Swin-T and ConvNeXt V2-T Mask R-CNN, Mask2Former
R50/Swin-T, YOLACT, SOLOv2): one real
training iteration and one COCO evaluation each on endoscapes-seg50 images, plus unit checks of
the timm backbone wrapper and of Mask2Former's instance inference."""
import math
import os

import pytest
import torch

import medseg_core  # noqa: F401

from detectron2.layers import ShapeSpec
from detectron2.structures import Instances

from medseg_core.evaluation import build_evaluators
from medseg_core.testing import inference_outputs, load_test_cfg, train_steps

QS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "quick_schedules")

# (instant-test config, key of its class count)
BASELINES = [
    ("mask_rcnn_R50_FPN_scratch_bn_instant_test.yaml", "MODEL.ROI_HEADS.NUM_CLASSES"),
    ("mask_rcnn_R50_FPN_scratch_gn_instant_test.yaml", "MODEL.ROI_HEADS.NUM_CLASSES"),
    ("mask_rcnn_swin_t_FPN_instant_test.yaml", "MODEL.ROI_HEADS.NUM_CLASSES"),
    ("mask2former_R50_instant_test.yaml", "MODEL.MASK2FORMER.NUM_CLASSES"),
    ("mask2former_swin_t_instant_test.yaml", "MODEL.MASK2FORMER.NUM_CLASSES"),
    ("mask_rcnn_convnextv2_FPN_instant_test.yaml", "MODEL.ROI_HEADS.NUM_CLASSES"),
    ("yolact_R50_FPN_instant_test.yaml", "MODEL.YOLACT.NUM_CLASSES"),
    ("solov2_R50_FPN_instant_test.yaml", "MODEL.SOLOV2.NUM_CLASSES"),
]


def _endoscapes_cfg(config: str, classes_key: str, size: int = 128):
    # few detections per image: pasting 100 masks at 854x480 dominates a CPU test otherwise
    return load_test_cfg(
        os.path.join(QS, config),
        "DATASETS.TRAIN", "('endoscapes_seg50_train',)", "DATASETS.TEST", "('endoscapes_seg50_val',)",
        classes_key, 6, "INPUT.MIN_SIZE_TRAIN", f"({size},)", "INPUT.MAX_SIZE_TRAIN", size,
        "INPUT.MIN_SIZE_TEST", size, "INPUT.MAX_SIZE_TEST", size, "SOLVER.IMS_PER_BATCH", 2,
        "INPUT.MASK_FORMAT", "auto", "TEST.DETECTIONS_PER_IMAGE", 10, "MODEL.MASK2FORMER.TEST_TOPK_PER_IMAGE", 10,
        "MODEL.YOLACT.DETECTIONS_PER_IMAGE", 10, "MODEL.SOLOV2.DETECTIONS_PER_IMAGE", 10,
    )


@pytest.mark.parametrize("config,classes_key", BASELINES, ids=[b[0].replace("_instant_test.yaml", "") for b in BASELINES])
def test_baseline_trains_and_evaluates_on_endoscapes(shared_data, config, classes_key):
    torch.manual_seed(0)
    cfg = _endoscapes_cfg(config, classes_key)
    assert cfg.INPUT.MASK_FORMAT == "bitmask"  # endoscapes is RLE
    losses = train_steps(cfg, 1)
    assert len(losses) == 1 and losses[0], "no loss returned"
    assert all(math.isfinite(v) for v in losses[0].values()), losses[0]
    assert sum(losses[0].values()) > 0

    from medseg_core.engine import MedSegTrainer

    model = MedSegTrainer.build_model(cfg)
    pairs = inference_outputs(cfg, model, "endoscapes_seg50_val", num_images=1)
    evaluator = build_evaluators(cfg, "endoscapes_seg50_val")
    evaluator.reset()
    for inp, out in pairs:
        inst = out["instances"]
        assert isinstance(inst, Instances)
        assert inst.image_size == (inp["height"], inp["width"]) == (480, 854)
        # one binary mask per detection at the original size (not a merged map)
        assert inst.pred_masks.dtype == torch.bool
        assert inst.pred_masks.shape == (len(inst), 480, 854)
        assert len(inst.pred_boxes) == len(inst.scores) == len(inst.pred_classes)
        assert len(inst) > 0 and int(inst.pred_classes.max()) < 6
        evaluator.process([inp], [out])
    res = evaluator.evaluate(img_ids=[inp["image_id"] for inp, _ in pairs])
    assert set(res) >= {"bbox", "segm"}
    assert {"AP", "AP50", "AR@100"} <= set(res["segm"])
    ap = res["segm"]["AP"]
    assert math.isnan(ap) or 0.0 <= ap <= 100.0


def test_timm_swin_backbone_shapes_any_size():
    from medseg_core.config import load_config

    cfg = load_config(None, ["MODEL.BACKBONE.NAME", "build_timm_backbone", "MODEL.TIMM.DROP_PATH_RATE", 0.0])
    from detectron2.modeling import build_backbone

    bb = build_backbone(cfg, ShapeSpec(channels=3))
    shapes = bb.output_shape()
    assert [shapes[k].channels for k in ("res2", "res3", "res4", "res5")] == [96, 192, 384, 768]
    assert [shapes[k].stride for k in ("res2", "res3", "res4", "res5")] == [4, 8, 16, 32]
    assert bb.size_divisibility == 32
    # Swin-T backbone (no classifier head) = timm's 27.5 M features_only count
    assert sum(p.numel() for p in bb.parameters()) == 27_517_818
    bb.eval()
    with torch.no_grad():
        out = bb(torch.randn(1, 3, 96, 160))  # not the 224 training size, not square
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "res2": (1, 96, 24, 40), "res3": (1, 192, 12, 20), "res4": (1, 384, 6, 10), "res5": (1, 768, 3, 5)
    }
    assert all(v.is_contiguous() for v in out.values())


def test_swin_mask_rcnn_fpn_levels():
    cfg = load_test_cfg(os.path.join(QS, "mask_rcnn_swin_t_FPN_instant_test.yaml"))
    from detectron2.modeling import build_model

    model = build_model(cfg)
    shapes = model.backbone.output_shape()
    assert sorted(shapes) == ["p2", "p3", "p4", "p5", "p6"]
    assert [shapes[f"p{i}"].stride for i in range(2, 7)] == [4, 8, 16, 32, 64]
    assert type(model.backbone.bottom_up).__name__ == "TimmBackbone"


@pytest.mark.parametrize("backbone,params", [("resnet50", 44_003_845), ("swin_tiny", 47_403_647)])
def test_mask2former_param_counts(backbone, params):
    """Paper Table IV: Mask2Former 44.4 M (our R50 44.0 M at 4 classes, as upstream's R50)."""
    cfg = load_test_cfg(os.path.join(QS, "mask2former_R50_instant_test.yaml"), "MODEL.MASK2FORMER.BACKBONE", backbone)
    from detectron2.modeling import build_model

    model = build_model(cfg)
    assert sum(p.numel() for p in model.parameters()) == params


def test_mask2former_instance_inference_hand_made():
    """Two queries, two classes: top-k over (query, class), score = class prob x mean mask prob,
    masks resized to the original size after dropping the padding, boxes = mask extents."""
    cfg = load_test_cfg(
        os.path.join(QS, "mask2former_R50_instant_test.yaml"), "MODEL.MASK2FORMER.NUM_CLASSES", 2,
        "MODEL.MASK2FORMER.TEST_TOPK_PER_IMAGE", 3,
    )
    from detectron2.modeling import build_model

    model = build_model(cfg)
    # class logits (no-object last): query 0 -> class 1 mostly, query 1 -> class 0 mostly
    cls = torch.log(torch.tensor([[0.1, 0.7, 0.2], [0.6, 0.3, 0.1]]))
    # masks at 1/4 of a padded 16x16 input (4x4); the image is 8x16 (rows 8..15 are padding)
    masks = torch.full((2, 4, 4), -1000.0)
    masks[0, 0:2, 0:2] = 1000.0  # top-left quarter of the image
    masks[1, 0:2, 2:4] = 1000.0  # top-right
    masks[1, 2:4, :] = 1000.0   # in the padding only: must be cut away
    inst = model.instance_inference(cls, masks, (16, 16), (8, 16), (4, 8))
    assert len(inst) == 3
    expected = sorted([(0.7, 0, 1), (0.6, 1, 0), (0.3, 1, 1)], reverse=True)
    assert inst.pred_classes.tolist() == [c for _, _, c in expected]
    assert torch.allclose(inst.scores, torch.tensor([s for s, _, _ in expected]), atol=1e-4)
    assert inst.pred_masks.shape == (3, 4, 8) and inst.pred_masks.dtype == torch.bool
    m0 = torch.zeros(4, 8, dtype=torch.bool)
    m0[:, :4] = True
    assert torch.equal(inst.pred_masks[0], m0)  # query 0 -> left half of the 4x8 output
    assert torch.equal(inst.pred_masks[1], ~m0)  # query 1 -> right half, padding rows dropped
    assert inst.pred_boxes.tensor[0].tolist() == [0.0, 0.0, 4.0, 4.0]
    assert inst.pred_boxes.tensor[1].tolist() == [4.0, 0.0, 8.0, 4.0]


def test_mask2former_loss_uses_polygon_and_empty_targets():
    """Polygons (smoke set) are rasterised; an image without annotations (no gt_masks field)
    still gives finite losses."""
    cfg = load_test_cfg(os.path.join(QS, "mask2former_R50_instant_test.yaml"), "INPUT.MIN_SIZE_TRAIN", "(64,)",
                        "INPUT.MAX_SIZE_TRAIN", 64, "MODEL.MASK2FORMER.TRAIN_NUM_POINTS", 256)
    from detectron2.modeling import build_model
    from detectron2.structures import Boxes, PolygonMasks

    torch.manual_seed(0)
    model = build_model(cfg).train()
    a = Instances((64, 48))
    a.gt_boxes = Boxes(torch.tensor([[4.0, 4.0, 20.0, 30.0]]))
    a.gt_classes = torch.tensor([2])
    a.gt_masks = PolygonMasks([[[4.0, 4.0, 20.0, 4.0, 20.0, 30.0, 4.0, 30.0]]])
    # an image without annotations: Detectron2's mapper gives boxes and classes but no gt_masks
    b = Instances((64, 48))
    b.gt_boxes = Boxes(torch.zeros((0, 4)))
    b.gt_classes = torch.zeros((0,), dtype=torch.int64)
    batch = [
        {"image": torch.randint(0, 255, (3, 64, 48), dtype=torch.uint8), "instances": a},
        {"image": torch.randint(0, 255, (3, 64, 48), dtype=torch.uint8), "instances": b},
    ]
    losses = model(batch)
    assert {"loss_cross_entropy", "loss_mask", "loss_dice"} <= set(losses)
    # deep supervision: one set of three losses per decoder layer (DEC_LAYERS 10 -> 10 sets)
    assert len(losses) == 3 * cfg.MODEL.MASK2FORMER.DEC_LAYERS
    assert all(torch.isfinite(v) for v in losses.values())

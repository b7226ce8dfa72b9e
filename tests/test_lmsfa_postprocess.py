"""LMSF-A inference post-processing: batched multi-label NMS, DFL box decoding and mask assembly
on hand-built tensors (expected results worked out in the comments)."""
import pytest
import torch

import medseg_core  # noqa: F401
from lmsfa.postprocess import assemble_masks, decode_boxes, multilabel_nms, rank_within_groups


def _nms_case():
    # anchors: A [0,0,10,10], B [0,0,10,11] (IoU with A = 100/110), C far away, D [20,20,30,30]
    boxes = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 11], [50, 50, 60, 60], [20, 20, 30, 30]], dtype=torch.float)
    scores = torch.tensor([[0.9, 0.3], [0.8, 0.0005], [0.0001, 0.0002], [0.5, 0.6]])
    b = torch.stack([boxes, boxes])
    s = torch.stack([scores, torch.zeros_like(scores)])  # image 1: nothing above threshold
    coef = torch.arange(2 * 4 * 3, dtype=torch.float).view(2, 4, 3)
    return b, s, coef


def test_multilabel_nms_hand_case():
    b, s, coef = _nms_case()
    dets = multilabel_nms(b, s, coef, conf_thresh=0.001, iou_thresh=0.7, max_det=300)
    # candidates A0 .9, A1 .3, B0 .8, D0 .5, D1 .6; class 0: A0 suppresses B0 (IoU .909)
    d = dets[0]
    assert d.scores.tolist() == torch.tensor([0.9, 0.6, 0.5, 0.3]).tolist()
    assert d.classes.tolist() == [0, 1, 0, 1]
    assert torch.equal(d.boxes, b[0, [0, 3, 3, 0]])
    assert torch.equal(d.coef, coef[0, [0, 3, 3, 0]])  # coefficients follow their anchor
    assert len(dets[1].scores) == 0 and dets[1].coef.shape == (0, 3)
    # max_det keeps the best 3
    assert multilabel_nms(b, s, coef, 0.001, 0.7, max_det=3)[0].scores.tolist() == torch.tensor([0.9, 0.6, 0.5]).tolist()


def test_single_label_and_agnostic_nms():
    b, s, coef = _nms_case()
    single = multilabel_nms(b, s, coef, 0.001, 0.7, 300, multi_label=False)[0]
    # best class per anchor: A0 .9, B0 .8 (suppressed by A0), D1 .6; C is below threshold
    assert single.classes.tolist() == [0, 1] and single.scores.tolist() == torch.tensor([0.9, 0.6]).tolist()
    agn = multilabel_nms(b, s, coef, 0.001, 0.7, 300, multi_label=True, agnostic=True)[0]
    # across classes A0 also removes A1 (same box) and B0; D1 removes D0
    assert agn.scores.tolist() == torch.tensor([0.9, 0.6]).tolist() and agn.classes.tolist() == [0, 1]


def test_rank_within_groups():
    groups = torch.tensor([1, 0, 1, 1, 0])
    scores = torch.tensor([0.2, 0.9, 0.8, 0.5, 0.1])
    order, rank = rank_within_groups(groups, scores)
    assert order.tolist() == [1, 4, 2, 3, 0]
    assert rank.tolist() == [0, 1, 0, 1, 2]


def test_decode_boxes_from_peaked_dfl_logits():
    # one level, stride 8, 2x2 grid; every side's distribution peaks at bin 2 -> ltrb = 2 cells
    logits = torch.full((1, 4, 16, 2, 2), -20.0)
    logits[:, :, 2] = 20.0
    boxes, anchors, strides = decode_boxes([logits.view(1, 64, 2, 2)], [8], 16)
    # anchor (0.5, 0.5) cells = (4, 4) px -> [4 - 16, 4 - 16, 4 + 16, 4 + 16]
    assert torch.allclose(boxes[0, 0], torch.tensor([-12.0, -12.0, 20.0, 20.0]), atol=1e-4)
    assert torch.allclose(boxes[0, 3], torch.tensor([-4.0, -4.0, 28.0, 28.0]), atol=1e-4)


def test_assemble_masks_resamples_to_original_size_and_crops_to_box():
    # padded input 32x32 (prototypes 8x8 at stride 4) holding a 32x24 (h x w) resized image;
    # the original image is 64x48. Prototype 0: +1 in proto columns 0..2, -1 elsewhere.
    protos = -torch.ones(1, 8, 8)
    protos[0, :, :3] = 1.0
    coef = torch.tensor([[1.0], [-1.0], [1.0]])
    boxes = torch.tensor([[0.0, 0.0, 48.0, 64.0], [0.0, 0.0, 48.0, 64.0], [8.0, 16.0, 20.0, 40.0]])
    m = assemble_masks(coef, protos, boxes, input_hw=(32, 24), output_hw=(64, 48))
    assert m.shape == (3, 64, 48) and m.dtype == torch.bool
    # output column x samples proto coordinate (x + .5) * (24 / 48) / 4; the logit changes sign
    # at proto coordinate 3.0, i.e. between output columns 23 and 24
    expected = torch.zeros(64, 48, dtype=torch.bool)
    expected[:, :24] = True
    assert torch.equal(m[0], expected)
    assert torch.equal(m[1], ~expected)
    # cropped to the box: pixel centres in [8, 20] x [16, 40] -> columns 8..19, rows 16..39
    box_only = torch.zeros(64, 48, dtype=torch.bool)
    box_only[16:40, 8:20] = True
    assert torch.equal(m[2], box_only & expected)
    # no detection -> empty stack of the right size; chunking gives the same masks
    assert assemble_masks(coef[:0], protos, boxes[:0], (32, 24), (64, 48)).shape == (0, 64, 48)
    chunked = assemble_masks(coef, protos, boxes, (32, 24), (64, 48), max_chunk_pixels=64 * 48)
    assert torch.equal(chunked, m)


def test_assemble_masks_box_path_equals_dense_path():
    """The CPU path (each detection resampled inside its box) gives the dense path's masks,
    including boxes that leave the image, degenerate boxes and boxes on pixel centres."""
    torch.manual_seed(0)
    k = 40
    protos, coef = torch.randn(8, 20, 20), torch.randn(k, 8)
    x1, y1 = torch.rand(k) * 200 - 20, torch.rand(k) * 120 - 20
    boxes = torch.stack([x1, y1, x1 + torch.rand(k) * 80 + 1, y1 + torch.rand(k) * 60 + 1], 1)
    boxes[0] = torch.tensor([0.0, 0.0, 213.0, 120.0])  # whole image
    boxes[1] = torch.tensor([10.5, 10.5, 10.5, 10.5])  # one pixel centre
    boxes[2] = torch.tensor([230.0, 10.0, 250.0, 20.0])  # outside the image
    boxes[3] = torch.tensor([8.0, 16.0, 20.0, 40.0])  # edges on integer coordinates
    for input_hw, output_hw in (((45, 80), (120, 213)), ((80, 80), (160, 160)), ((75, 64), (250, 213))):
        dense = assemble_masks(coef, protos, boxes, input_hw, output_hw, method="dense")
        boxed = assemble_masks(coef, protos, boxes, input_hw, output_hw, method="boxes")
        assert torch.equal(boxed, dense)
        assert dense.any() and not dense[2].any()
    # "auto" takes the box path on the CPU
    auto = assemble_masks(coef, protos, boxes, (45, 80), (120, 213))
    assert torch.equal(auto, assemble_masks(coef, protos, boxes, (45, 80), (120, 213), method="dense"))
    with pytest.raises(ValueError, match="method"):
        assemble_masks(coef, protos, boxes, (45, 80), (120, 213), method="fast")

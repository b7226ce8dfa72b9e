"""Task-aligned assigner and YOLOv8-seg loss of LMSF-A on hand-built tensors.

The expected numbers are worked out by hand in the comments (t = s^0.5 * u^6, soft target
t / max_t * max_u; mean BCE inside the box; DFL weights), not produced by the code under test.
"""
import math

import pytest
import torch

import medseg_core  # noqa: F401
from lmsfa.assigner import TaskAlignedAssigner, anchors_inside_boxes
from lmsfa.dfl import make_anchors
from lmsfa.iou import bbox_ciou
from lmsfa.losses import SegTargets, YOLOSegLoss


def _grid_anchors():
    # 4x4 grid at stride 8: centres 4, 12, 20, 28 (pixels), row-major
    feats = [torch.zeros(1, 1, 4, 4)]
    pts, strides = make_anchors(feats, [8])
    return pts * strides, pts, strides


def test_anchors_strictly_inside():
    anc, _, _ = _grid_anchors()
    gt = torch.tensor([[[0.0, 0.0, 16.0, 16.0], [12.0, 0.0, 24.0, 8.0]]])
    inside = anchors_inside_boxes(anc, gt)[0]
    # box 1 holds the 4 centres (4,4), (12,4), (4,12), (12,12): anchors 0, 1, 4, 5
    assert inside[0].nonzero().flatten().tolist() == [0, 1, 4, 5]
    # box 2 starts exactly at x = 12: the centre (12, 4) is on the edge, not strictly inside
    assert inside[1].nonzero().flatten().tolist() == [2]


def test_assigner_hand_built_topk_and_soft_targets():
    anc, _, _ = _grid_anchors()
    n, c = anc.shape[0], 3
    # GT: [0, 0, 16, 16] of class 1; its candidates are anchors 0, 1, 4, 5.
    gt_boxes = torch.tensor([[[0.0, 0.0, 16.0, 16.0]]])
    gt_labels = torch.tensor([[1]])
    # Predicted boxes share the GT centre (8, 8) and are square, so CIoU = IoU:
    #   a0 = GT (IoU 1), a1 = [2,2,14,14] (144/256), a4 = [4,4,12,12] (64/256), a5 = [-8,-8,24,24] (256/1024)
    pd_boxes = torch.tensor([[100.0, 100.0, 110.0, 110.0]]).repeat(n, 1)
    pd_boxes[0] = torch.tensor([0.0, 0.0, 16.0, 16.0])
    pd_boxes[1] = torch.tensor([2.0, 2.0, 14.0, 14.0])
    pd_boxes[4] = torch.tensor([4.0, 4.0, 12.0, 12.0])
    pd_boxes[5] = torch.tensor([-8.0, -8.0, 24.0, 24.0])
    scores = torch.full((n, c), 0.01)
    scores[[0, 1, 4, 5], 1] = torch.tensor([0.25, 0.81, 0.64, 0.04])
    a = TaskAlignedAssigner(c, topk=2, alpha=0.5, beta=6.0)(
        scores[None], pd_boxes[None], anc, gt_labels, gt_boxes, torch.tensor([[True]])
    )
    # t: a0 = 0.5 * 1 = 0.5; a1 = 0.9 * 0.5625^6 = 0.028508; a4 = 0.8 * 0.25^6; a5 = 0.2 * 0.25^6
    # top-2 -> anchors 0 and 1
    assert a.fg_mask[0].nonzero().flatten().tolist() == [0, 1]
    assert a.labels[0, 0] == 1 and a.labels[0, 1] == 1
    # soft targets: t / max_t * max_IoU = 1.0 and 0.028508 / 0.5 = 0.057016, only in class 1
    expected = torch.zeros(n, c)
    expected[0, 1] = 1.0
    expected[1, 1] = 0.9 * 0.5625**6 / 0.5
    assert torch.allclose(a.scores[0], expected, atol=1e-5)
    assert torch.equal(a.bboxes[0, 0], gt_boxes[0, 0])


def test_assigner_conflict_keeps_highest_iou_gt_and_ignores_padding():
    anc, _, _ = _grid_anchors()
    n, c = anc.shape[0], 2
    # two GTs both contain anchor 5 (12, 12); the prediction there fits GT 1 far better
    gt_boxes = torch.tensor([[[0.0, 0.0, 16.0, 16.0], [8.0, 8.0, 24.0, 24.0], [0.0, 0.0, 0.0, 0.0]]])
    gt_labels = torch.tensor([[0, 1, 0]])
    valid = torch.tensor([[True, True, False]])  # the third GT is padding
    pd_boxes = torch.tensor([[8.0, 8.0, 24.0, 24.0]]).repeat(n, 1)  # = GT 1 everywhere
    scores = torch.full((1, n, c), 0.5)
    a = TaskAlignedAssigner(c, topk=10)(scores, pd_boxes[None], anc, gt_labels, gt_boxes, valid)
    # anchor 5 lies in both boxes; its predicted box has IoU 1 with GT 1 and 64/448 with GT 0
    assert bool(a.fg_mask[0, 5]) and int(a.gt_idx[0, 5]) == 1 and int(a.labels[0, 5]) == 1
    # GT 0 keeps its other candidates (0, 1, 4); GT 1 also gets 6, 9, 10
    assert a.fg_mask[0].nonzero().flatten().tolist() == [0, 1, 4, 5, 6, 9, 10]
    assert a.gt_idx[0, [0, 1, 4]].tolist() == [0, 0, 0]
    assert a.gt_idx[0, [6, 9, 10]].tolist() == [1, 1, 1]
    # the padding GT (index 2) is assigned nowhere
    assert not bool((a.gt_idx[0][a.fg_mask[0]] == 2).any())


def test_assigner_batch_is_independent_and_empty_images_are_background():
    anc, _, _ = _grid_anchors()
    n, c = anc.shape[0], 2
    torch.manual_seed(0)
    xy = torch.rand(2, n, 2) * 24
    pd = torch.cat([xy, xy + 8], -1)
    sc = torch.rand(2, n, c)
    gt = torch.tensor([[[0.0, 0.0, 20.0, 20.0]], [[0.0, 0.0, 0.0, 0.0]]])
    lab = torch.tensor([[1], [0]])
    valid = torch.tensor([[True], [False]])
    ass = TaskAlignedAssigner(c)
    both = ass(sc, pd, anc, lab, gt, valid)
    alone = ass(sc[:1], pd[:1], anc, lab[:1], gt[:1], valid[:1])
    assert torch.equal(both.fg_mask[0], alone.fg_mask[0])
    assert torch.allclose(both.scores[0], alone.scores[0])
    assert not both.fg_mask[1].any() and float(both.scores[1].abs().sum()) == 0.0
    # no GT at all in the batch (M = 0)
    none = ass(sc, pd, anc, torch.zeros(2, 0, dtype=torch.long), torch.zeros(2, 0, 4), torch.zeros(2, 0, dtype=torch.bool))
    assert not none.fg_mask.any()


def test_ciou_equals_iou_for_concentric_same_shape_and_penalises_offsets():
    a = torch.tensor([0.0, 0.0, 16.0, 16.0])
    b = torch.tensor([2.0, 2.0, 14.0, 14.0])
    assert abs(float(bbox_ciou(a, b)) - 144 / 256) < 1e-5
    # same size, shifted by 8: IoU = 128/384 = 1/3; rho^2 = 64, c^2 = 24^2 + 16^2 = 832
    c = torch.tensor([8.0, 0.0, 24.0, 16.0])
    assert abs(float(bbox_ciou(a, c)) - (1 / 3 - 64 / 832)) < 1e-5


def _targets(b, m, hp, wp):
    return SegTargets(torch.zeros(b, m, 4), torch.zeros(b, m, dtype=torch.long),
                      torch.zeros(b, m, dtype=torch.bool), torch.zeros(b, m, hp, wp))


def _outputs(b, n, c, reg_max=16, nm=4, hp=8, wp=8, grad=True):
    torch.manual_seed(1)
    t = [torch.randn(b, n, 4 * reg_max), torch.randn(b, n, c), torch.randn(b, n, nm), torch.randn(b, nm, hp, wp)]
    return [x.requires_grad_(grad) for x in t]


def test_loss_finite_without_instances_and_reaches_every_branch():
    anc, pts, strides = _grid_anchors()
    pd, pc, coef, protos = _outputs(2, 16, 3)
    loss = YOLOSegLoss(3)
    out = loss(pd, pc, coef, protos, pts, strides, _targets(2, 0, 8, 8))
    assert set(out) == {"loss_box", "loss_seg", "loss_cls", "loss_dfl"}
    assert all(torch.isfinite(v) for v in out.values())
    assert float(out["loss_box"].detach()) == 0.0 and float(out["loss_seg"].detach()) == 0.0
    # cls loss: all targets 0, normaliser max(sum, 1) = 1 -> sum of BCE(x, 0) = softplus(x), x gain 0.5 x batch 2
    assert torch.allclose(out["loss_cls"], torch.nn.functional.softplus(pc).sum() * 0.5 * 2)
    sum(out.values()).backward()
    for t in (pd, pc, coef, protos):
        assert t.grad is not None and torch.isfinite(t.grad).all()


def test_mask_loss_is_mean_bce_inside_box():
    # zero coefficients -> logits 0 -> BCE = log 2 everywhere; a box aligned with the proto grid
    # averages log 2 over exactly its area, whatever the GT mask holds
    anc, pts, strides = _grid_anchors()
    b, n, c, nm = 1, 16, 2, 4
    # DFL logits peaked at bin 1: every anchor predicts anchor -/+ 1 cell, which overlaps the GT
    pd = torch.zeros(b, n, 4, 16)
    pd[..., 1] = 10.0
    pd = pd.reshape(b, n, 64)
    pc = torch.zeros(b, n, c)
    coef = torch.zeros(b, n, nm)
    protos = torch.randn(b, nm, 8, 8)
    t = _targets(1, 1, 8, 8)
    t.boxes[0, 0] = torch.tensor([0.0, 0.0, 16.0, 16.0])  # proto coords [0, 4) x [0, 4)
    t.valid[0, 0] = True
    t.masks[0, 0, :2, :2] = 1.0
    out = YOLOSegLoss(c, scale_by_batch=False)(pd, pc, coef, protos, pts, strides, t)
    assert abs(float(out["loss_seg"]) - 7.5 * math.log(2)) < 1e-5


def test_dfl_interpolates_between_neighbouring_bins():
    loss = YOLOSegLoss(1, reg_max=4)
    logits = torch.log(torch.tensor([[0.1, 0.2, 0.3, 0.4]])).repeat(4, 1).reshape(1, 16)
    # target 1.25 on every side: 0.75 * CE(bin 1) + 0.25 * CE(bin 2)
    val = loss._dfl(logits, torch.full((1, 4), 1.25))
    assert abs(float(val) - (0.75 * -math.log(0.2) + 0.25 * -math.log(0.3))) < 1e-5


@pytest.mark.parametrize("b", [1, 3])
def test_loss_gradients_lower_the_loss(b):
    # a few plain gradient steps on free prediction tensors must reduce the total loss
    anc, pts, strides = _grid_anchors()
    pd, pc, coef, protos = _outputs(b, 16, 2, nm=4, hp=8, wp=8)
    t = _targets(b, 2, 8, 8)
    t.boxes[0, 0] = torch.tensor([0.0, 0.0, 16.0, 16.0])
    t.boxes[0, 1] = torch.tensor([10.0, 12.0, 30.0, 28.0])
    t.classes[0] = torch.tensor([0, 1])
    t.valid[0] = True
    t.masks[0, 0, :3, :3] = 1
    t.masks[0, 1, 3:7, 3:7] = 1
    loss = YOLOSegLoss(2)
    opt = torch.optim.SGD([pd, pc, coef, protos], lr=0.05)
    hist = []
    for _ in range(25):
        out = loss(pd, pc, coef, protos, pts, strides, t)
        tot = sum(out.values())
        hist.append(float(tot.detach()))
        opt.zero_grad()
        tot.backward()
        opt.step()
    assert hist[-1] < 0.7 * hist[0], hist

"""The export check's detection matching (medseg_core.deploy.export._match) on hand-made cases."""
import torch
from detectron2.structures import Boxes, Instances

from medseg_core.deploy.export import _match


def _inst(boxes, scores, classes):
    i = Instances((100, 100))
    i.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32))
    i.scores = torch.tensor(scores)
    i.pred_classes = torch.tensor(classes)
    return i


def test_matches_same_class_by_iou_and_zero_area_boxes_only_to_their_twin():
    ref = _inst([[0, 0, 10, 10], [5, 5, 5, 5], [20, 20, 40, 40]], [0.9, 0.8, 0.7], [0, 1, 2])
    got = _inst([[20, 20, 41, 40], [5, 5, 5, 5], [0, 0, 10, 11]], [0.69, 0.8, 0.88], [2, 1, 0])
    # the zero-area pair has IoU 0 / 0 = NaN (it used to crash the check): the same box matches
    assert _match(ref, got) == [(0, 2), (1, 1), (2, 0)]
    # a zero-area box elsewhere matches nothing
    moved = _inst([[20, 20, 41, 40], [6, 5, 6, 5], [0, 0, 10, 11]], [0.69, 0.8, 0.88], [2, 1, 0])
    assert _match(ref, moved) == [(0, 2), (2, 0)]
    # its twin is found among other zero-area boxes (their NaN IoUs once hid it from max())
    two = _inst([[6, 5, 6, 5], [5, 5, 5, 5]], [0.8, 0.8], [1, 1])
    assert _match(ref, two) == [(1, 1)]
    assert _match(ref, _inst([[0, 0, 10, 10]], [0.9], [1])) == []  # other class
    assert _match(ref, got[:0]) == []

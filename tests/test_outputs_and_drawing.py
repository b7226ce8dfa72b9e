"""Output names decided before any work (one per input, inputs never replaced) and drawing with
masks kept cropped to their boxes (same pixels as dense masks, memory ~ what is drawn)."""
import numpy as np
import pytest
import torch
from detectron2.data import MetadataCatalog
from detectron2.structures import Boxes, Instances

from medseg_core.cropped_masks import CroppedMasks, mask_crop
from medseg_core.errors import OutputPathError
from medseg_core.output_paths import plan_output_paths
from medseg_core.visualization import draw_ground_truth, draw_prediction, draw_semantic


def test_equal_stems_get_distinct_outputs(tmp_path):
    ins = [str(tmp_path / "a" / "x.png"), str(tmp_path / "b" / "x.png"), str(tmp_path / "a" / "x.jpg"),
           str(tmp_path / "x_2.bmp")]
    out = plan_output_paths(ins, str(tmp_path / "out"))
    assert [p.rsplit("/", 1)[1] for p in out] == ["x.png", "x_2.png", "x_3.png", "x_2_2.png"]


def test_existing_files_are_kept_unless_overwrite(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "x.png").write_bytes(b"old")
    ins = [str(tmp_path / "x.jpg")]
    assert plan_output_paths(ins, str(tmp_path / "out"))[0].endswith("x_2.png")
    assert plan_output_paths(ins, str(tmp_path / "out"), overwrite=True)[0].endswith("out/x.png")


def test_an_output_replacing_an_input_is_refused_even_with_overwrite(tmp_path):
    (tmp_path / "x.png").write_bytes(b"input")
    with pytest.raises(OutputPathError, match=r"x\.png: the output for .* would overwrite the input file"):
        plan_output_paths([str(tmp_path / "x.png")], str(tmp_path), overwrite=True)
    with pytest.raises(OutputPathError):  # a single named output file that is the input
        plan_output_paths([str(tmp_path / "x.png")], str(tmp_path / "x.png"), file_exts=(".png",), overwrite=True)
    # an input's own stem+suffix is avoided too: y.png's output must not become the input y_2.png
    (tmp_path / "y.jpg").write_bytes(b"")
    (tmp_path / "y_2.png").write_bytes(b"input")
    out = plan_output_paths([str(tmp_path / "y.jpg"), str(tmp_path / "y_2.png")], str(tmp_path / "o"))
    assert out[0].endswith("o/y.png")


def _instances(h, w):
    inst = Instances((h, w))
    masks = torch.zeros((3, h, w), dtype=torch.bool)
    masks[0, 5:30, 4:50] = True
    masks[1, 20:28, 40:70] = True
    masks[1, 22:24, 42:44] = False  # a hole
    masks[2, 0:3, 0:3] = True
    inst.pred_masks = masks
    inst.pred_boxes = Boxes(torch.tensor([[4.0, 5, 50, 30], [40, 20, 70, 28], [0, 0, 3, 3]]))
    inst.scores = torch.tensor([0.9, 0.8, 0.3])
    inst.pred_classes = torch.tensor([0, 1, 1])
    return inst


def test_cropped_masks_round_trip_and_index_like_a_tensor():
    inst = _instances(40, 80)
    dense = inst.pred_masks
    crops, offsets = [], []
    for i in range(3):
        c, x0, y0 = mask_crop(dense, i)
        crops.append(c)
        offsets.append((x0, y0))
    cm = CroppedMasks.from_crops(crops, offsets, (40, 80))
    assert torch.equal(cm.dense(), dense) and cm.area().tolist() == dense.flatten(1).sum(1).tolist()
    inst.pred_masks = cm
    kept = inst[inst.scores >= 0.5]
    assert isinstance(kept.pred_masks, CroppedMasks) and torch.equal(kept.pred_masks.dense(), dense[:2])
    assert torch.equal(CroppedMasks.cat([cm[0], cm[1:]]).dense(), dense)


def test_drawing_cropped_masks_gives_the_dense_drawing():
    meta = MetadataCatalog.get("__test_outputs_drawing")
    meta.thing_classes = ["a", "b"]
    img = np.random.default_rng(0).integers(0, 255, (40, 80, 3), dtype=np.uint8)
    inst = _instances(40, 80)
    dense = draw_prediction(img, {"instances": inst}, meta, 0.5)
    crops = [mask_crop(inst.pred_masks, i) for i in range(3)]
    inst.pred_masks = CroppedMasks.from_crops([c for c, _, _ in crops], [(x, y) for _, x, y in crops], (40, 80))
    assert np.array_equal(draw_prediction(img, {"instances": inst}, meta, 0.5), dense)
    # the low-score instance (score 0.3, the 3x3 corner) is not drawn; the others are
    assert np.array_equal(dense[0:3, 0:3], img[0:3, 0:3])
    assert not np.array_equal(dense[10:25, 10:35], img[10:25, 10:35])


def test_ground_truth_polygon_and_rle_draw_the_same_region():
    import pycocotools.mask as mask_util
    from detectron2.structures import BoxMode

    meta = MetadataCatalog.get("__test_outputs_gt")
    meta.thing_classes = ["a"]
    img = np.full((40, 60, 3), 100, np.uint8)
    m = np.zeros((40, 60), np.uint8)
    m[10:30, 20:50] = 1
    rle = mask_util.encode(np.asfortranarray(m))
    poly = [[20, 10, 50, 10, 50, 30, 20, 30]]
    base = {"bbox": [20, 10, 30, 20], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 0}
    a = draw_ground_truth(img, {"annotations": [{**base, "segmentation": rle}]}, meta)
    b = draw_ground_truth(img, {"annotations": [{**base, "segmentation": poly}]}, meta)
    assert np.array_equal(a[15:25, 25:45], b[15:25, 25:45]) and not np.array_equal(a[15:25, 25:45], img[15:25, 25:45])


def test_semantic_blend_in_row_blocks_matches_one_block():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 255, (70, 33, 3), dtype=np.uint8)
    lab = rng.integers(0, 4, (70, 33))
    lab[0, :5] = 255
    one = draw_semantic(img, lab, ["bg", "a", "b", "c"], rows_per_block=1000)
    assert np.array_equal(draw_semantic(img, lab, ["bg", "a", "b", "c"], rows_per_block=16), one)
    assert np.array_equal(one[lab == 0], img[lab == 0]) and np.array_equal(one[0, :5], img[0, :5])


def test_lmsfa_cropped_masks_equal_its_full_masks():
    """TEST.MASK_OUTPUT "boxes": the same masks, each kept only inside its box (row blocks too)."""
    from lmsfa.postprocess import _masks_in_boxes, assemble_masks

    torch.manual_seed(0)
    coef, protos = torch.randn(5, 8), torch.randn(8, 20, 28)
    boxes = torch.tensor([[0.0, 0, 111, 79], [10.3, 5.5, 40.2, 60.9], [50, 50, 50.2, 50.1], [90, 2, 111, 20],
                          [3, 70, 9, 79]])
    full = assemble_masks(coef, protos, boxes, (80, 112), (80, 112), proto_stride=4, method="dense")
    cropped = assemble_masks(coef, protos, boxes, (80, 112), (80, 112), proto_stride=4, cropped=True)
    assert isinstance(cropped, CroppedMasks) and torch.equal(cropped.dense(), full)
    logits = (coef @ protos.reshape(8, -1)).view(5, 20, 28)
    small_blocks = {d: c for d, _, _, c in _masks_in_boxes(logits, boxes, (80, 112), (80, 112), 4, rows_per_block=3)}
    one_block = {d: c for d, _, _, c in _masks_in_boxes(logits, boxes, (80, 112), (80, 112), 4, rows_per_block=999)}
    assert all(torch.equal(small_blocks[d], one_block[d]) for d in range(5))

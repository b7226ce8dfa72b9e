"""Zero-shot generalisation: a trained binary model evaluated on another registered data set
without fine-tuning, with one ``tools/train_net.py --eval-only ... DATASETS.TEST`` command."""
import json
import os

import pytest

from detectron2.data import DatasetCatalog

from medseg_core.data import register_semantic_folder
from medseg_core.engine.cli import default_argument_parser, main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def smoke_trained_weights(tmp_path_factory):
    """A binary LGMSNet trained (briefly) on the smoke set by its instant-test config."""
    out = tmp_path_factory.mktemp("lgms_smoke")
    args = default_argument_parser().parse_args([
        "--config-file", os.path.join(REPO, "configs/quick_schedules/lgmsnet_instant_test.yaml"),
        "MODEL.DEVICE", "cpu", "OUTPUT_DIR", str(out),
    ])
    main(args)
    return str(out / "model_final.pth")


def _eval_only(weights, test_set, out_dir):
    args = default_argument_parser().parse_args([
        "--eval-only", "--config-file", os.path.join(REPO, "configs/Kvasir-SemanticSegmentation/lgmsnet_256.yaml"),
        "MODEL.WEIGHTS", weights, "MODEL.DEVICE", "cpu", "DATALOADER.NUM_WORKERS", "0",
        "DATASETS.TEST", f"('{test_set}',)", "OUTPUT_DIR", str(out_dir),
    ])
    return main(args)


def test_zero_shot_binary_model_on_another_binary_data_set(shared_data, smoke_trained_weights, tmp_path):
    # 3 kvasir val images keep the test short; any registered binary set works the same way
    ids = [os.path.splitext(os.path.basename(d["file_name"]))[0] for d in DatasetCatalog.get("kvasir_seg_val")[:3]]
    root = os.path.join(shared_data, "kvasir-seg")
    register_semantic_folder(
        "kvasir_seg_val_first3", os.path.join(root, "images", "val"), os.path.join(root, "masks", "val"),
        ["background", "polyp"], ids=ids, mask_threshold=127,
    )
    res = _eval_only(smoke_trained_weights, "kvasir_seg_val_first3", tmp_path)
    metrics = res["sem_seg"]
    assert metrics["num_images"] == 3
    assert 0 <= metrics["per_image_IoU@model_res"] <= 100 and 0 <= metrics["dataset_IoU@orig_res"] <= 100
    saved = json.load(open(tmp_path / "inference" / "kvasir_seg_val_first3" / "results.json"))
    assert saved["results"]["sem_seg"]["per_image_F1@model_res"] == pytest.approx(metrics["per_image_F1@model_res"])


def test_zero_shot_with_a_different_label_set_is_a_clear_error(shared_data, smoke_trained_weights, tmp_path):
    with pytest.raises(ValueError, match=r"predicts 2 classes but the data set has 7 \(background, cystic_plate"):
        _eval_only(smoke_trained_weights, "endoscapes_seg50_sem_val", tmp_path)

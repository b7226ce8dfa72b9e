"""Bad input gets a clear error naming the file and the problem, before training starts."""
import copy
import json
import os

import numpy as np
import pytest
from detectron2.data import DatasetCatalog
from PIL import Image

from medseg_core.config import load_config
from medseg_core.data import register_coco_instances_checked, register_semantic_folder
from medseg_core.data.mappers import CheckedDatasetMapper, SemanticMapper
from medseg_core.errors import ConfigError, DatasetError
from medseg_core.testing import load_test_cfg

from conftest import CONFIGS

MASK_RCNN = os.path.join(CONFIGS, "quick_schedules", "mask_rcnn_R50_FPN_scratch_bn_instant_test.yaml")


def _image(path, h=32, w=48):
    Image.fromarray(np.full((h, w, 3), 128, np.uint8)).save(path)


def _coco(tmp_path, **overrides):
    _image(tmp_path / "a.png")
    data = {
        "images": [{"id": 1, "file_name": "a.png", "height": 32, "width": 48}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 2, 10, 10],
                         "area": 100, "iscrowd": 0, "segmentation": [[2, 2, 12, 2, 12, 12, 2, 12]]}],
        "categories": [{"id": 1, "name": "bone"}],
    }
    data.update(overrides)
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(data))
    return str(path), data


def _load(tmp_path, json_file, name="bad_input_test"):
    register_coco_instances_checked(name, json_file, str(tmp_path), thing_classes=["bone"])
    return DatasetCatalog.get(name)


def test_valid_file_loads(tmp_path):
    js, _ = _coco(tmp_path)
    (d,) = _load(tmp_path, js)
    assert len(d["annotations"]) == 1


def test_missing_image(tmp_path):
    js, data = _coco(tmp_path)
    data["images"][0]["file_name"] = "nope.png"
    open(js, "w").write(json.dumps(data))
    with pytest.raises(DatasetError, match=r"nope\.png: image file does not exist"):
        _load(tmp_path, js)


def test_corrupt_image(tmp_path):
    js, _ = _coco(tmp_path)
    (tmp_path / "a.png").write_bytes(b"this is not a png")
    with pytest.raises(DatasetError, match=r"a\.png: cannot decode image \(cannot identify image file\)"):
        _load(tmp_path, js)


def test_truncated_image_fails_in_mapper_with_file_name(tmp_path):
    js, _ = _coco(tmp_path)
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 48, 3), dtype=np.uint8)).save(tmp_path / "a.jpg")
    raw = (tmp_path / "a.jpg").read_bytes()
    (tmp_path / "a.jpg").write_bytes(raw[: len(raw) // 3])  # header intact, body cut
    cfg = load_test_cfg(MASK_RCNN)
    mapper = CheckedDatasetMapper(cfg, is_train=True)
    d = {"file_name": str(tmp_path / "a.jpg"), "height": 32, "width": 48, "image_id": 1, "annotations": []}
    with pytest.raises(DatasetError, match=r"a\.jpg: cannot decode image"):
        mapper(copy.deepcopy(d))


def test_image_size_disagrees_with_annotation(tmp_path):
    js, data = _coco(tmp_path)
    data["images"][0]["height"] = 64
    open(js, "w").write(json.dumps(data))
    with pytest.raises(DatasetError, match=r"a\.png: image is 32x48 .* annotation says 64x48"):
        _load(tmp_path, js)


def test_rle_mask_size_mismatch(tmp_path):
    js, data = _coco(tmp_path)
    data["annotations"][0]["segmentation"] = {"size": [16, 16], "counts": "0`0"}
    open(js, "w").write(json.dumps(data))
    with pytest.raises(DatasetError, match=r"ann\.json: annotation 1 \(image a\.png\): mask size \[16, 16\] does not match "
                                           r"the image's 32x48"):
        _load(tmp_path, js)


def test_category_not_in_list(tmp_path):
    js, data = _coco(tmp_path)
    data["annotations"][0]["category_id"] = 7
    open(js, "w").write(json.dumps(data))
    with pytest.raises(DatasetError, match=r"ann\.json: annotation 1 has category id 7, which is not in the category list \[1\]"):
        _load(tmp_path, js)


@pytest.mark.parametrize("content,msg", [
    ("{not json", "not valid JSON"),
    (json.dumps({"images": []}), "not valid COCO: missing 'annotations'"),
    (json.dumps([1, 2]), "not valid COCO: top level must be an object"),
])
def test_not_valid_coco(tmp_path, content, msg):
    js, _ = _coco(tmp_path)
    open(js, "w").write(content)
    with pytest.raises(DatasetError, match=msg):
        _load(tmp_path, js)


def test_empty_dataset(tmp_path):
    js, data = _coco(tmp_path, images=[], annotations=[])
    with pytest.raises(DatasetError, match=r"ann\.json: data set is empty"):
        _load(tmp_path, js)


def test_image_without_instances_is_valid_training_data(tmp_path):
    js, data = _coco(tmp_path, annotations=[])
    (d,) = _load(tmp_path, js, "no_instances_test")
    cfg = load_test_cfg(MASK_RCNN, "DATASETS.TRAIN", "('no_instances_test',)")
    assert cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS is False
    out = CheckedDatasetMapper(cfg, is_train=True)(copy.deepcopy(d))
    assert len(out["instances"]) == 0


def test_semantic_mask_size_mismatch(tmp_path):
    (tmp_path / "img").mkdir(), (tmp_path / "msk").mkdir()
    _image(tmp_path / "img" / "x.png", 32, 48)
    Image.fromarray(np.zeros((30, 48), np.uint8)).save(tmp_path / "msk" / "x.png")
    register_semantic_folder("bad_sem_test", str(tmp_path / "img"), str(tmp_path / "msk"), ["bg", "fg"])
    with pytest.raises(DatasetError, match=r"x\.png: mask is 30x48 \(HxW\) but its image .* is 32x48"):
        DatasetCatalog.get("bad_sem_test")


def test_semantic_missing_mask(tmp_path):
    (tmp_path / "img").mkdir(), (tmp_path / "msk").mkdir()
    _image(tmp_path / "img" / "x.png")
    register_semantic_folder("bad_sem_test2", str(tmp_path / "img"), str(tmp_path / "msk"), ["bg", "fg"])
    with pytest.raises(DatasetError, match=r"x\.png: no mask with the same name"):
        DatasetCatalog.get("bad_sem_test2")


def test_semantic_mapper_remaps_0_255_and_ignores_unknown_values(tmp_path):
    (tmp_path / "img").mkdir(), (tmp_path / "msk").mkdir()
    _image(tmp_path / "img" / "x.png", 8, 8)
    m = np.zeros((8, 8), np.uint8)
    m[:4] = 255
    m[0, 0] = 7
    Image.fromarray(m).save(tmp_path / "msk" / "x.png")
    register_semantic_folder("remap_test", str(tmp_path / "img"), str(tmp_path / "msk"), ["bg", "fg"],
                             mask_value_map={0: 0, 255: 1}, unknown_values="ignore")
    (d,) = DatasetCatalog.get("remap_test")
    cfg = load_test_cfg(None, "INPUT.RANDOM_FLIP", "none")
    sem = SemanticMapper(cfg, is_train=True)(d)["sem_seg"].numpy()
    assert sem[1:4].min() == 1 and sem[4:].max() == 0 and sem[0, 0] == 255


def test_unknown_config_key_names_the_file(tmp_path):
    p = tmp_path / "cfg.yaml"
    p.write_text("MODEL:\n  NOT_A_KEY: 3\n")
    with pytest.raises(ConfigError, match=r"cfg\.yaml: Non-existent config key: MODEL.NOT_A_KEY"):
        load_config(str(p))


def test_unknown_command_line_key():
    with pytest.raises(ConfigError, match="SOLVER.NOT_A_KEY"):
        load_config(None, ["SOLVER.NOT_A_KEY", "1"])


def test_yaml_python_tags_are_never_executed(tmp_path):
    marker = tmp_path / "pwned"
    p = tmp_path / "evil.yaml"
    p.write_text(f"SOLVER:\n  BASE_LR: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(ConfigError, match=r"evil\.yaml: not valid \(safe\) YAML"):
        load_config(str(p))
    assert not marker.exists()


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match=r"nope\.yaml: config file does not exist"):
        load_config(str(tmp_path / "nope.yaml"))

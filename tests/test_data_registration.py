"""The shared data sets register by name with the image/instance counts their READMEs give."""
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog

from medseg_core.data import register_all_builtin

# (name, images, instances) from ../shared/data/*/README.md
INSTANCE_SETS = [
    ("endoscapes_seg50_train", 343, 1751),
    ("endoscapes_seg50_val", 76, 395),
    ("ufba425_teeth_train", 298, 8115),
    ("ufba425_teeth_val", 43, 1192),
    ("kvasir_seg_inst_train", 800, 846),
    ("kvasir_seg_inst_val", 100, 113),
]
SEMANTIC_SETS = [
    ("endoscapes_seg50_sem_train", 343, 7),
    ("endoscapes_seg50_sem_val", 76, 7),
    ("kvasir_seg_train", 800, 2),
    ("kvasir_seg_val", 100, 2),
]
VOLUME_SETS = [("msd_hippocampus_train", 182), ("msd_hippocampus_val", 26)]


@pytest.fixture(scope="module", autouse=True)
def _registered(shared_data):
    names = register_all_builtin(shared_data)
    assert names, "nothing registered"


@pytest.mark.parametrize("name,num_images,num_instances", INSTANCE_SETS)
def test_instance_sets(name, num_images, num_instances):
    dicts = DatasetCatalog.get(name)
    assert len(dicts) == num_images
    assert sum(len(d.get("annotations", [])) for d in dicts) == num_instances
    meta = MetadataCatalog.get(name)
    assert meta.evaluator_type == "coco"
    assert meta.mask_format == "bitmask"  # the shared sets store compressed RLE
    assert all(0 <= a["category_id"] < len(meta.thing_classes) for d in dicts for a in d.get("annotations", []))


def test_class_lists():
    assert len(MetadataCatalog.get("endoscapes_seg50_train").thing_classes) == 6
    assert MetadataCatalog.get("ufba425_teeth_train").thing_classes[:2] == ["11", "12"]
    assert len(MetadataCatalog.get("ufba425_teeth_train").thing_classes) == 32


def test_images_without_instances_are_kept():
    # endoscapes has all-black frames with empty masks and one val frame without annotations
    dicts = DatasetCatalog.get("endoscapes_seg50_val")
    assert any(len(d.get("annotations", [])) == 0 for d in dicts)


@pytest.mark.parametrize("name,num_images,num_classes", SEMANTIC_SETS)
def test_semantic_sets(name, num_images, num_classes):
    dicts = DatasetCatalog.get(name)
    assert len(dicts) == num_images
    assert all(d["height"] > 0 and d["width"] > 0 for d in dicts)
    meta = MetadataCatalog.get(name)
    assert len(meta.stuff_classes) == num_classes and meta.ignore_label == 255


@pytest.mark.parametrize("name,num_volumes", VOLUME_SETS)
def test_volume_sets(name, num_volumes):
    dicts = DatasetCatalog.get(name)
    assert len(dicts) == num_volumes
    assert all(len(d["shape"]) == 3 for d in dicts)
    assert MetadataCatalog.get(name).stuff_classes == ["background", "anterior", "posterior"]


def test_kvasir_binary_masks_decode_to_0_1():
    from medseg_core.data.mappers import read_label_mask

    d = DatasetCatalog.get("kvasir_seg_val")[0]
    m = read_label_mask(d["sem_seg_file_name"], 2, 255, d["mask_value_map"], d["mask_threshold"])
    assert set(map(int, set(m.ravel().tolist()))) == {0, 1}

"""datasets.imagenet100.class_list beyond ImageNet-100: Imagenette (10 ImageNet classes in the
same layout) with ``all``, a chosen list of wnids, and the model's output size following."""
from __future__ import annotations

import copy

import pytest

from clipbench import config as cfgmod
from clipbench.data import imagenet100 as imagenet
from clipbench.data.prepare import load_manifest, prepare
from clipbench import spec as jobspec
from tests._fakedata import jpeg_bytes, make_tree

# Imagenette's ten classes (fast.ai), as its train/ and val/ folders name them.
IMAGENETTE = ["n01440764", "n02102040", "n02979186", "n03000684", "n03028079",
              "n03394916", "n03417042", "n03425413", "n03445777", "n03888605"]


@pytest.fixture
def imagenette(tmp_path):
    return make_tree(tmp_path / "imagenette2", IMAGENETTE, n=2)


def _spec(manifest_cfg: dict) -> dict:
    cfg = {"run": {"tasks": ["classification"], "methods": ["sgd"], "seeds": [0]},
           "datasets": {"imagenet100": manifest_cfg},
           "tasks": {"classification": {"image_size": 16, "epochs": 1, "batch_size": 4,
                                        "methods": {"sgd": {"lr": 0.01}}}}}
    return jobspec.run_spec(cfgmod.validate(cfg), "classification", "sgd", 0)


def test_all_takes_every_class_folder_and_sizes_the_model(imagenette, tmp_path):
    from clipbench.tasks import build_task

    ds_cfg = {"root": str(imagenette), "class_list": "all"}
    spec = _spec(ds_cfg)
    m = prepare("imagenet100", spec["dataset_config"], tmp_path / "out")
    assert m["class_list"] == "all" and m["wnids"] == IMAGENETTE and m["num_classes"] == 10
    assert m["splits"]["train"]["images"] == 20
    task = build_task(spec, load_manifest(tmp_path / "out" / "manifest.json"))
    assert task.model.fc.out_features == 10 and task.train_set.classes == IMAGENETTE


def test_a_list_of_wnids_selects_those_classes_only(imagenette, tmp_path):
    from clipbench.tasks import build_task

    chosen = [IMAGENETTE[3], IMAGENETTE[0], IMAGENETTE[7]]
    spec = _spec({"root": str(imagenette), "class_list": chosen})
    m = prepare("imagenet100", spec["dataset_config"], tmp_path / "out")
    assert m["class_list"] == "wnids" and m["wnids"] == chosen and m["num_classes"] == 3
    task = build_task(spec, load_manifest(tmp_path / "out" / "manifest.json"))
    # The root holds 10 classes; the model and the data see the 3 chosen, labelled in sorted order.
    assert task.model.fc.out_features == 3 and task.train_set.classes == sorted(chosen)
    assert len(task.train_set) == 6 and {y for _, y in task.train_set.samples} == {0, 1, 2}


def test_a_wnid_missing_from_root_names_it(imagenette, tmp_path):
    with pytest.raises(imagenet.ImageNetError, match=r"n09999999.*class list 'wnids'"):
        prepare("imagenet100", {"root": str(imagenette), "class_list": [IMAGENETTE[0], "n09999999"]},
                tmp_path / "out")
    with pytest.raises(imagenet.ImageNetError, match="class folder"):  # Imagenette is not first100
        prepare("imagenet100", {"root": str(imagenette)}, tmp_path / "out")


def test_all_needs_a_root_and_a_val_folder_per_class(imagenette, tmp_path):
    with pytest.raises(imagenet.ImageNetError, match="all means every class folder.*set root"):
        prepare("imagenet100", {"source": "archives", "class_list": "all", "archives": str(tmp_path)},
                tmp_path / "out")
    (imagenette / "train" / "n04000000").mkdir()
    (imagenette / "train" / "n04000000" / "a.JPEG").write_bytes(jpeg_bytes())
    with pytest.raises(imagenet.ImageNetError, match=r"val/n04000000"):
        prepare("imagenet100", {"root": str(imagenette), "class_list": "all"}, tmp_path / "out")


def test_schema_refuses_other_class_lists(default_config):
    for bad in ("first1000", ["n01440764"], ["n01440764", "../etc"]):
        cfg = copy.deepcopy(default_config)
        cfg["datasets"]["imagenet100"]["class_list"] = bad
        with pytest.raises(cfgmod.ConfigError, match=r"datasets\.imagenet100\.class_list"):
            cfgmod.validate(cfg)

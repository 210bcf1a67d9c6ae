"""SBD ("trainaug") for segmentation: VOC train + SBD train/val minus VOC val, .mat masks
read and checked, the composition recorded, and clear errors when SBD is missing or bad."""
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.io import savemat

from tests._fakedata import make_sbd
from clipbench.data import DatasetLayoutError
from clipbench.data.prepare import load_manifest, prepare
from clipbench.data.synthetic import make_voc2012
from clipbench.tasks import build_task
from tests._specs import segmentation_spec

SIZE = 32
# The synthetic tree names its images 2012_000001.. in order: train first, then val.
VOC_TRAIN = ["2012_000001", "2012_000002", "2012_000003"]
VOC_VAL = ["2012_000004", "2012_000005"]
# SBD overlaps VOC train (2012_000001) and VOC val (2012_000004 in SBD train, 2012_000005 in
# SBD val), as the real sets do.
SBD_TRAIN = ["2008_000010", "2012_000001", "2012_000004"]
SBD_VAL = ["2008_000011", "2012_000005"]
SBD_ONLY = {"2008_000010": 7, "2008_000011": 15}  # id -> the class painted in its mask


def write_sbd_mat(path: Path, seg: np.ndarray) -> None:
    """A ``cls/<id>.mat`` in SBD's structure: a 1x1 struct GTcls with Segmentation (uint8
    class indices), Boundaries (a cell per class) and CategoriesPresent."""
    bounds = np.empty((20, 1), dtype=object)
    for k in range(20):
        bounds[k, 0] = np.zeros(seg.shape, dtype=bool)
    present = np.unique(seg[seg > 0]).astype(np.uint8).reshape(-1, 1)
    savemat(path, {"GTcls": {"Segmentation": seg, "Boundaries": bounds, "CategoriesPresent": present}})


def _mask(value: int, dtype=np.uint8) -> np.ndarray:
    seg = np.zeros((SIZE, SIZE), dtype=dtype)
    seg[8:24, 4:20] = value
    return seg


def make_tree(root: Path) -> Path:
    make_voc2012(root, num_train=len(VOC_TRAIN), num_val=len(VOC_VAL), image_size=SIZE, num_classes=2, seed=3)
    sets = root / "VOCdevkit/VOC2012/ImageSets/Segmentation"
    assert (sets / "train.txt").read_text().split() == VOC_TRAIN
    assert (sets / "val.txt").read_text().split() == VOC_VAL
    sbd = root / "benchmark_RELEASE" / "dataset"
    (sbd / "img").mkdir(parents=True)
    (sbd / "cls").mkdir()
    for i in SBD_TRAIN + SBD_VAL:
        Image.new("RGB", (SIZE, SIZE), (90, 60, 30)).save(sbd / "img" / f"{i}.jpg")
        # Ids VOC also has get class 20 everywhere, so a test can tell SBD's mask from VOC's.
        write_sbd_mat(sbd / "cls" / f"{i}.mat", _mask(SBD_ONLY[i]) if i in SBD_ONLY else np.full((SIZE, SIZE), 20, np.uint8))
    (sbd / "train.txt").write_text("\n".join(SBD_TRAIN) + "\n")
    (sbd / "val.txt").write_text("\n".join(SBD_VAL) + "\n")
    return root


@pytest.fixture(scope="module")
def sbd_manifest(tmp_path_factory):
    root = make_tree(tmp_path_factory.mktemp("tree"))
    out = tmp_path_factory.mktemp("prepared")
    manifest = prepare("voc2012", {"root": str(root), "sbd": True}, out)
    assert manifest["sbd"] is True and manifest["source"] == "root"
    return load_manifest(out / "manifest.json")


def test_trainaug_is_voc_train_plus_sbd_minus_voc_val(sbd_manifest):
    task = build_task(segmentation_spec(), sbd_manifest)
    train = task.train_set
    expected = sorted((set(VOC_TRAIN) | set(SBD_TRAIN) | set(SBD_VAL)) - set(VOC_VAL))
    assert train.ids == expected == ["2008_000010", "2008_000011"] + VOC_TRAIN
    assert not set(train.ids) & set(VOC_VAL)  # SBD's copies of VOC val images are left out
    assert not any("2012_000004" in p or "2012_000005" in p for p in train.images + train.masks)
    assert [Path(m).suffix for m in train.masks] == [".mat", ".mat", ".png", ".png", ".png"]
    assert len(task.val_set) == len(VOC_VAL)  # validation stays VOC val
    assert task.extra["train_set"] == "voc_train+sbd (trainaug)"
    assert task.extra["train_images"] == 5 and task.extra["sbd_images"] == 2 and task.extra["val_images"] == 2

    train.transforms = None  # raw masks, to compare values
    for k, i in enumerate(train.ids):
        img, mask = train[k]
        assert tuple(img.shape) == (3, SIZE, SIZE) and tuple(mask.shape) == (SIZE, SIZE)
        if i in SBD_ONLY:
            assert np.array_equal(mask.numpy(), _mask(SBD_ONLY[i]))
        else:  # VOC's own PNG wins over SBD's .mat (which is all 20) for 2012_000001
            assert Path(train.masks[k]).name == f"{i}.png" and not (mask.numpy() == 20).all()


def test_task_info_records_the_train_set(sbd_manifest, tmp_path):
    from clipbench.engine.train import train

    train(segmentation_spec(batch_size=5), sbd_manifest, tmp_path / "run")  # .mat and .png samples batched together
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["status"] == "ok"
    assert m["task_info"]["train_set"] == "voc_train+sbd (trainaug)" and m["task_info"]["train_images"] == 5


def test_without_sbd_the_train_set_is_voc_train(sbd_manifest):
    task = build_task(segmentation_spec(), {**sbd_manifest, "sbd": False})
    assert task.extra["train_set"] == "voc_train" and task.extra["train_images"] == 3
    assert "sbd_images" not in task.extra


def test_bad_sbd_mask_names_the_file(sbd_manifest, tmp_path):
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(sbd_manifest["root"], root)
    task = build_task(segmentation_spec(), {**sbd_manifest, "root": str(root)})
    bad = Path(task.train_set.masks[0])
    assert bad.suffix == ".mat"
    write_sbd_mat(bad, _mask(30))
    task.train_set[2]  # the others still load
    with pytest.raises(ValueError, match=rf"{bad}.*\[30\] outside 0..20 and 255"):
        task.train_set[0]
    # Checked before the cast to uint8, where 300 would silently become 44.
    write_sbd_mat(bad, _mask(300, np.uint16))
    with pytest.raises(ValueError, match=rf"{bad}.*\[300\] outside"):
        task.train_set[0]
    # The fake benchmark.tgz's mask is not a MATLAB file at all.
    tgz, _ = make_sbd(tmp_path)
    with tarfile.open(tgz) as tf:
        fake = tf.extractfile("benchmark_RELEASE/dataset/cls/2008_000002.mat").read()
    bad.write_bytes(fake)
    with pytest.raises(ValueError, match=rf"{bad}: not an SBD class mask"):
        task.train_set[0]


def test_missing_sbd_is_a_clear_error(tmp_path):
    root = tmp_path / "voc"
    make_voc2012(root, num_train=1, num_val=1, image_size=SIZE, num_classes=1)
    where = root / "benchmark_RELEASE" / "dataset"
    with pytest.raises(DatasetLayoutError, match=rf"sbd is true but SBD is not at {where}"):
        prepare("voc2012", {"root": str(root), "sbd": True}, tmp_path / "out")
    manifest = prepare("voc2012", {"root": str(root)}, tmp_path / "out")
    assert manifest["sbd"] is False
    # A manifest that promises SBD which has since gone away fails too, rather than quietly
    # training on the smaller set.
    with pytest.raises(DatasetLayoutError, match=str(where)):
        build_task(segmentation_spec(), {**manifest, "sbd": True})
    (where / "img").mkdir(parents=True)
    with pytest.raises(DatasetLayoutError, match=rf"{where} is not an SBD folder: missing .*cls"):
        build_task(segmentation_spec(), {**manifest, "sbd": True})

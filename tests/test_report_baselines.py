"""The trivial baselines each task's table shows: chance, background everywhere, bicubic."""
import json

import numpy as np
import pytest

from clipbench import cli
from clipbench.data.prepare import load_manifest, prepare
from clipbench.tasks import registry


def test_every_task_names_a_baseline():
    assert registry.with_baseline() == ["classification", "segmentation", "superres"]


def test_chance_is_one_over_the_classes(tiny_imagenet):
    from clipbench.tasks.classification import chance_baseline

    row = chance_baseline({}, tiny_imagenet)  # 4 classes
    assert row["metrics"] == {"top1": pytest.approx(0.25), "top5": pytest.approx(1.0)}
    assert row["phrase"] == "chance"
    ten = chance_baseline({}, {"wnids": [f"n{i}" for i in range(10)]})
    assert ten["metrics"] == {"top1": pytest.approx(0.1), "top5": pytest.approx(0.5)}
    with pytest.raises(ValueError, match="lists no classes"):
        chance_baseline({}, {"root": "x"})


def test_background_everywhere_scores_the_masks(tmp_path):
    from clipbench.tasks.segmentation import background_baseline, read_mask

    out = tmp_path / "voc"
    prepare("voc2012", {"source": "synthetic", "synthetic": {"num_train": 4, "num_val": 3, "image_size": 64,
                                                             "num_classes": 3, "seed": 1}}, out)
    manifest = load_manifest(out / "manifest.json")
    row = background_baseline({"base_size": 64, "crop_size": 64, "eval_size": None}, manifest)
    # By hand: background IoU = background pixels / all non-void pixels; other present classes 0.
    voc = next(out.rglob("VOC2012"))
    ids = (voc / "ImageSets/Segmentation/val.txt").read_text().split()
    masks = np.concatenate([read_mask(voc / "SegmentationClass" / f"{i}.png").ravel() for i in ids])
    masks = masks[masks != 255]
    present = len(np.unique(masks))
    assert row["metrics"]["miou"] == pytest.approx((masks == 0).mean() / present)
    assert row["metrics"]["pixel_acc"] == pytest.approx((masks == 0).mean())
    assert row["phrase"] == "predicting background" and "loss" not in row["metrics"]


def test_baseline_command_for_classification(tiny_imagenet, tmp_path):
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps(tiny_imagenet))
    out = tmp_path / "baselines" / "classification.json"
    assert cli.main(["baseline", "classification", "--task-json", "{}", "--data", str(manifest), "--out", str(out)]) == 0
    assert json.loads(out.read_text())["rows"][0]["metrics"]["top1"] == pytest.approx(0.25)

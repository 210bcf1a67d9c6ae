import copy
from pathlib import Path

import pytest
import yaml

from clipbench import config as cfgmod

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def repo() -> Path:
    return REPO


@pytest.fixture
def default_config() -> dict:
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


@pytest.fixture
def tiny_imagenet(tmp_path_factory) -> dict:
    """A prepared, tiny synthetic ImageNet-100 (4 classes, 16 px) and its manifest."""
    from clipbench.data.prepare import load_manifest, prepare

    out = tmp_path_factory.mktemp("imagenet100")
    prepare("imagenet100", {"source": "synthetic", "synthetic": {
        "num_classes": 4, "train_per_class": 8, "val_per_class": 4, "image_size": 24, "seed": 1}}, out)
    return load_manifest(out / "manifest.json")


def tiny_spec(method: str = "sgd", seed: int = 0, epochs: int = 2, **method_cfg) -> dict:
    """A run spec for a fast classification run on ``tiny_imagenet``."""
    cfg = {
        "run": {"tasks": ["classification"], "methods": [method], "seeds": [seed]},
        "engine": {"device": "cpu", "threads": 1},
        "tasks": {"classification": {
            "dataset": "imagenet100", "model": "resnet18", "image_size": 16, "epochs": epochs,
            "batch_size": 8, "eval_batch_size": 16,
            "methods": {method: method_cfg or {"lr": 0.01, "momentum": 0.9}},
        }},
    }
    cfgmod.validate(cfg)
    return cfgmod.run_spec(copy.deepcopy(cfg), "classification", method, seed)

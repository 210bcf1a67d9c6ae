"""Fixtures shared by several test modules (pytest finds them here; never import this module).
Plain helpers live in the tests/_<what>.py modules."""
from pathlib import Path

import pytest
import yaml

from tests._checkout import REPO, scratch_checkout
from tests._httpservers import serve_folder
from tests._tinydata import VOC_SYN


@pytest.fixture
def repo() -> Path:
    return REPO


@pytest.fixture
def default_config() -> dict:
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


@pytest.fixture(scope="module")
def checkout(tmp_path_factory) -> Path:
    """A scratch checkout of the repo, one per test module (tests/_checkout.py)."""
    return scratch_checkout(tmp_path_factory.mktemp("checkout"))


@pytest.fixture
def tiny_imagenet(tmp_path_factory) -> dict:
    """A prepared, tiny synthetic ImageNet-100 (4 classes, 16 px) and its manifest."""
    from clipbench.data.prepare import load_manifest, prepare

    out = tmp_path_factory.mktemp("imagenet100")
    prepare("imagenet100", {"source": "synthetic", "synthetic": {
        "num_classes": 4, "train_per_class": 8, "val_per_class": 4, "image_size": 24, "seed": 1}}, out)
    return load_manifest(out / "manifest.json")


@pytest.fixture(scope="module")
def tiny_voc(tmp_path_factory) -> dict:
    """A prepared, tiny synthetic VOC 2012 (``VOC_SYN``), one per test module, and its manifest."""
    from clipbench.data.prepare import load_manifest, prepare

    out = tmp_path_factory.mktemp("voc2012")
    prepare("voc2012", {"source": "synthetic", "synthetic": VOC_SYN}, out)
    return load_manifest(out / "manifest.json")


@pytest.fixture
def http_server(tmp_path):
    """A running file server over ``tmp_path / "www"`` (tests/_httpservers.py, ``serve_folder``);
    put files there before requesting them."""
    root = tmp_path / "www"
    root.mkdir()
    with serve_folder(root) as state:
        yield state

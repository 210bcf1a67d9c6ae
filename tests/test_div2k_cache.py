"""The decoded DIV2K cache: built once by prepare, memory-mapped by training, and giving the
same pixels, draws and training results as reading the PNGs."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from clipbench import config as cfgmod
from clipbench.data.div2k import build_cache, cache_file, read_rgb
from clipbench.data.prepare import load_manifest, prepare
from clipbench.tasks.superres import DIV2K
from clipbench import spec as jobspec

SYN = {"train_images": 4, "valid_images": 2, "hr_size": 48, "seed": 1}


@pytest.fixture(scope="module")
def cached(tmp_path_factory):
    out = tmp_path_factory.mktemp("div2k")
    prepare("div2k", {"source": "synthetic", "synthetic": SYN}, out)
    return load_manifest(out / "manifest.json")


def _pngs(root: Path):
    return sorted(root.rglob("*.png"))


def test_prepare_decodes_every_png_into_a_uint8_npy(cached):
    root, cache = Path(cached["root"]), Path(cached["cache"]["dir"])
    pngs = _pngs(root)
    assert len(pngs) == 2 * (SYN["train_images"] + SYN["valid_images"]) == cached["cache"]["images"]
    assert cache == root.parent / "cache" and cached["cache"]["bytes"] > 0
    for png in pngs:
        arr = np.load(cache_file(cache, root, png), mmap_mode="r")
        assert arr.dtype == np.uint8 and arr.shape[2] == 3
        assert np.array_equal(arr, read_rgb(png))
    raw = json.loads((root.parent / "manifest.json").read_text())
    assert raw["cache"]["dir"] == "cache"  # relative: the prepared folder can move


def test_cache_false_reads_the_pngs(tmp_path):
    manifest = prepare("div2k", {"source": "synthetic", "synthetic": SYN, "cache": False}, tmp_path)
    assert "cache" not in manifest and not (tmp_path / "cache").exists()


@pytest.mark.parametrize("train", [True, False])
def test_cache_and_png_give_the_same_samples(cached, train):
    kw = dict(train=train, patch_size=8, repeat=3) if train else dict(val_crop=24)
    split = "train" if train else "valid"
    png = DIV2K(cached["root"], split, **kw)
    npy = DIV2K(cached["root"], split, cache=cached["cache"]["dir"], **kw)
    assert all(str(f[0]).endswith(".npy") for f in npy.files)
    for i in range(len(png)):
        torch.manual_seed(i)
        a = png[i]
        torch.manual_seed(i)
        b = npy[i]
        for x, y in zip(a, b):
            assert x.dtype == torch.float32 and torch.equal(x, y)


def _spec():
    cfg = {
        "run": {"tasks": ["superres"], "methods": ["sgd"], "seeds": [3]},
        "engine": {"device": "cpu", "threads": 1},
        "tasks": {"superres": {"model": "espcn", "patch_size": 8, "repeat": 4, "epochs": 2, "batch_size": 4,
                               "eval_batch_size": 1, "methods": {"sgd": {"lr": 0.05, "momentum": 0.9}}}},
    }
    cfgmod.validate(cfg)
    return jobspec.run_spec(cfg, "superres", "sgd", 3)


def test_training_with_the_cache_equals_training_on_the_pngs(cached, tmp_path):
    from clipbench.engine.train import train

    pngs_only = {k: v for k, v in cached.items() if k != "cache"}
    a = train(_spec(), cached, tmp_path / "cache")
    b = train(_spec(), pngs_only, tmp_path / "png")
    assert a["final"] == b["final"] and a["steps"] == b["steps"] == 8
    assert (tmp_path / "cache" / "history.csv").read_text() == (tmp_path / "png" / "history.csv").read_text()


def test_rebuild_keeps_finished_files_and_parallel_build_is_the_same(cached, tmp_path):
    root = Path(cached["root"])
    first = build_cache(root, tmp_path / "c1", workers=1, progress=False)
    files = sorted((tmp_path / "c1").rglob("*.npy"))
    mtimes = [f.stat().st_mtime_ns for f in files]
    assert build_cache(root, tmp_path / "c1", workers=1, progress=False) == first
    assert [f.stat().st_mtime_ns for f in files] == mtimes
    build_cache(root, tmp_path / "c2", workers=2, progress=False)
    for f in files:
        assert f.read_bytes() == (tmp_path / "c2" / f.relative_to(tmp_path / "c1")).read_bytes()


def test_a_missing_cached_image_is_named(cached, tmp_path):
    root = Path(cached["root"])
    build_cache(root, tmp_path / "c", workers=1, progress=False)
    gone = cache_file(tmp_path / "c", root, _pngs(root / "DIV2K_train_HR")[0])
    gone.unlink()
    with pytest.raises(FileNotFoundError, match=rf"{gone}.*rerun `clipbench prepare div2k`"):
        DIV2K(root, "train", train=True, cache=tmp_path / "c")

"""Data changed after `clipbench prepare`: files added, removed or changed under a dataset's
root, links and second names, and a stale or damaged DIV2K decoded cache.

A run checks the disk against the manifest's file list before it trains and stops naming the
difference; the loaders read exactly the listed files; metrics.json records what was read.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipbench.data import filelist
from clipbench.data.div2k import CacheError, build_cache, cache_file, map_cached, read_rgb
from clipbench.data.filelist import DataDriftError, DataLinkError
from clipbench.data.prepare import load_manifest, prepare
from clipbench.tasks import build_task
from clipbench.tasks.superres import DIV2K
from clipbench import files
from tests._fakedata import jpeg_bytes
from tests._specs import classification_spec

IN100 = {"source": "synthetic", "synthetic": {"num_classes": 2, "train_per_class": 8, "val_per_class": 2,
                                              "image_size": 24, "seed": 1}}
DIV2K_SYN = {"train_images": 2, "valid_images": 1, "hr_size": 48, "seed": 1}


def _imagenet(tmp_path) -> dict:
    prepare("imagenet100", IN100, tmp_path / "prepared")
    return load_manifest(tmp_path / "prepared" / "manifest.json")


def _first(manifest, split="train") -> Path:
    root = Path(manifest["root"])
    return sorted((root / split / manifest["wnids"][0]).iterdir())[0]


def _train_stops(manifest, tmp_path, match: str) -> None:
    from clipbench.engine.train import train

    out = tmp_path / "run"
    with pytest.raises(DataDriftError, match=match):
        train(classification_spec(), manifest, out)
    assert not (out / "checkpoint.pt").exists() and not (out / "metrics.json").exists()  # stopped before training


def test_a_file_added_after_prepare_stops_the_run_naming_it(tmp_path):
    manifest = _imagenet(tmp_path)
    wnid = manifest["wnids"][1]
    (Path(manifest["root"]) / "train" / wnid / "new_1.JPEG").write_bytes(jpeg_bytes())
    _train_stops(manifest, tmp_path, rf"added 1 \(train/{wnid}/new_1.JPEG\).*rerun `clipbench prepare imagenet100`")


def test_a_file_removed_after_prepare_stops_the_run_naming_it(tmp_path):
    manifest = _imagenet(tmp_path)
    gone = _first(manifest, "val")
    gone.unlink()
    _train_stops(manifest, tmp_path, rf"removed 1 \(val/{gone.parent.name}/{gone.name}\)")


def test_a_file_changed_in_place_with_its_size_stops_the_run_naming_it(tmp_path):
    manifest = _imagenet(tmp_path)
    changed = _first(manifest)
    data = bytearray(changed.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, other content
    changed.write_bytes(bytes(data))
    _train_stops(manifest, tmp_path, rf"changed 1 \(train/{changed.parent.name}/{changed.name}\)")


def test_a_change_that_keeps_size_and_time_needs_the_full_check(tmp_path):
    # The stated trade-off: a run stats every file and hashes only those whose time changed.
    manifest = _imagenet(tmp_path)
    changed = _first(manifest)
    st = changed.stat()
    data = bytearray(changed.read_bytes())
    data[len(data) // 2] ^= 0xFF
    changed.write_bytes(bytes(data))
    os.utime(changed, ns=(st.st_atime_ns, st.st_mtime_ns))
    files._HASHES.clear()  # as a new process: nothing hashed yet
    assert filelist.verify(manifest)["files"] == 2 * (8 + 2)
    with pytest.raises(DataDriftError, match=rf"changed 1 \(.*{changed.name}\)"):
        filelist.verify(manifest, full=True)


def test_a_copied_tree_with_new_times_is_hashed_and_accepted(tmp_path, capsys):
    manifest = _imagenet(tmp_path)
    copy = tmp_path / "copy"
    shutil.copytree(manifest["root"], copy, copy_function=shutil.copyfile)  # new modification times
    record = filelist.verify({**manifest, "root": str(copy)})
    assert record["read_sha256"] == manifest["files"]["sha256"]
    assert "20 file(s) have new modification times; their contents were hashed and match" in capsys.readouterr().err


def test_the_loader_reads_the_listed_files_not_a_new_search(tmp_path):
    manifest = _imagenet(tmp_path)
    wnid = manifest["wnids"][0]
    extra = Path(manifest["root"]) / "train" / wnid / "zz_extra.JPEG"
    extra.write_bytes(jpeg_bytes())
    task = build_task(classification_spec(), manifest)
    paths = [p for p, _ in task.train_set.samples]
    assert str(extra) not in paths and len(paths) == 16 and len(task.val_set) == 4


def test_a_second_name_of_a_file_is_left_out_with_a_message(tmp_path, capsys):
    tree = tmp_path / "tree"
    shutil.copytree(_imagenet(tmp_path)["root"], tree)
    first = sorted((tree / "train").iterdir())[0]
    original = sorted(first.iterdir())[0]
    (first / "zz_link.JPEG").symlink_to(original.name)
    manifest = prepare("imagenet100", {"root": str(tree), "class_list": "all"}, tmp_path / "p2")
    assert "second names (links) of files already listed and are left out" in capsys.readouterr().err
    assert manifest["files"]["count"] == 20
    task = build_task(classification_spec(), load_manifest(tmp_path / "p2" / "manifest.json"))
    assert len(task.train_set) == 16


def test_a_link_leading_outside_the_root_is_refused(tmp_path):
    tree = tmp_path / "tree"
    shutil.copytree(_imagenet(tmp_path)["root"], tree)
    outside = tmp_path / "elsewhere.JPEG"
    outside.write_bytes(jpeg_bytes())
    link = sorted((tree / "train").iterdir())[0] / "outside.JPEG"
    link.symlink_to(outside)
    with pytest.raises(DataLinkError, match=r"1 data file\(s\) are links to files outside the dataset's root "
                                            rf"\(train/{link.parent.name}/outside.JPEG\)"):
        prepare("imagenet100", {"root": str(tree), "class_list": "all"}, tmp_path / "p2")


def test_metrics_record_the_manifest_and_the_digest_of_what_was_read(tmp_path):
    from clipbench.engine.train import train

    manifest = _imagenet(tmp_path)
    path = tmp_path / "prepared" / "manifest.json"
    train(classification_spec(epochs=1), manifest, tmp_path / "run")
    data = json.loads((tmp_path / "run" / "metrics.json").read_text())["data"]
    assert data["dataset"] == "imagenet100" and data["manifest"] == str(path.resolve())
    assert data["manifest_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert data["read_sha256"] == data["files_sha256"] == json.loads(path.read_text())["files"]["sha256"]
    assert data["files"] == 20


# --- the DIV2K decoded cache -------------------------------------------------------------------


@pytest.fixture
def div2k_root(tmp_path):
    """A DIV2K tree of the user's (``root``), prepared with its decoded cache."""
    prepare("div2k", {"source": "synthetic", "synthetic": DIV2K_SYN}, tmp_path / "syn")
    tree = tmp_path / "tree"
    shutil.copytree(tmp_path / "syn" / "data", tree)
    prepare("div2k", {"root": str(tree)}, tmp_path / "prepared")
    return load_manifest(tmp_path / "prepared" / "manifest.json")


def _hr(manifest) -> tuple[Path, Path]:
    root = Path(manifest["root"])
    png = sorted((root / "DIV2K_train_HR").glob("*.png"))[0]
    return png, cache_file(manifest["cache"]["dir"], root, png)


def _open(manifest):
    return DIV2K(manifest["root"], "train", train=True, patch_size=4, cache=manifest["cache"]["dir"])


def test_a_changed_source_image_stops_the_run_and_prepare_rebuilds_its_cached_copy(div2k_root, tmp_path, capsys):
    png, npy = _hr(div2k_root)
    arr = read_rgb(png)
    Image.fromarray(255 - arr).save(png)  # the same size in pixels: a shape check passes
    with pytest.raises(CacheError, match=rf"{npy}: decoded from other bytes than {png}"):
        _open(div2k_root)
    with pytest.raises(DataDriftError, match=rf"changed 1 \(DIV2K_train_HR/{png.name}\)"):
        filelist.verify(div2k_root)
    others = {p: p.stat().st_mtime_ns for p in npy.parent.glob("*.npy") if p != npy}
    prepare("div2k", {"root": div2k_root["root"]}, tmp_path / "prepared")
    assert "1 decoded copies differ from their PNG or are damaged and are decoded again" in capsys.readouterr().err
    assert np.array_equal(np.load(npy), 255 - arr)
    assert {p: p.stat().st_mtime_ns for p in others} == others  # the others kept
    manifest = load_manifest(tmp_path / "prepared" / "manifest.json")
    filelist.verify(manifest)
    _open(manifest)


def test_damaged_cache_bytes_are_detected_and_rebuilt(div2k_root, tmp_path):
    png, npy = _hr(div2k_root)
    data = bytearray(npy.read_bytes())
    data[-10] ^= 0xFF  # a pixel, past the header: the shape is intact
    npy.write_bytes(bytes(data))
    with pytest.raises(CacheError, match=rf"{npy}: the decoded copy of {png} is damaged"):
        _open(div2k_root)
    build_cache(div2k_root["root"], div2k_root["cache"]["dir"], workers=1, progress=False)
    assert np.array_equal(np.load(npy), read_rgb(png))
    _open(div2k_root)


def test_a_truncated_cache_file_is_named(div2k_root):
    png, npy = _hr(div2k_root)
    size = npy.stat().st_size
    with open(npy, "r+b") as f:
        f.truncate(size // 2)
    with pytest.raises(CacheError, match=rf"{npy}: the decoded copy of {png} is {size // 2} bytes, not {size} "
                                         r"\(truncated or damaged\); rerun `clipbench prepare div2k`"):
        _open(div2k_root)


def test_a_truncated_cache_file_read_without_its_index_is_named(tmp_path):
    # map_cached is what the loader's workers call: numpy's "buffer is smaller than requested
    # size" named no file.
    npy = tmp_path / "0001.npy"
    np.save(npy, np.zeros((16, 16, 3), np.uint8))
    with open(npy, "r+b") as f:
        f.truncate(npy.stat().st_size - 100)
    with pytest.raises(CacheError, match=rf"^{npy}: the decoded-cache file is truncated"):
        map_cached(npy, {})

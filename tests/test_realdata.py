"""End to end on tiny archives in the real formats, served over local HTTP."""

import json
import re

import pytest
from PIL import Image

from clipbench.data import sources
from clipbench.data.download import ChecksumError
from clipbench.data.extract import CorruptArchiveError
from clipbench.data import DatasetLayoutError
from clipbench.data.div2k import check_div2k_root, fetch_div2k
from clipbench.data.imagenet100 import (
    ImageNetError,
    load_class_list,
    prepare_imagenet100,
    resize_tree,
)
from clipbench.data.prepare import prepare
from clipbench.data.voc2012 import check_voc_root, fetch_voc2012
from tests._fakedata import (
    DIV2K_CONTENT,
    VOC_IDS,
    digests,
    jpeg_bytes,
    make_div2k_zips,
    make_ilsvrc,
    make_sbd,
    make_tree,
    make_voc_tar,
)

FAST = dict(progress=False, retries=1, backoff=0.01, timeout=5)
VOC_TAR = "VOCtrainval_11-May-2012.tar"


# ------------------------------------------------------------------ pinned data


@pytest.mark.parametrize("name", ["first100", "cmc"])
def test_class_lists_have_100_unique_wnids(name):
    wnids = load_class_list(name)
    assert len(wnids) == 100 and len(set(wnids)) == 100
    assert all(re.fullmatch(r"n\d{8}", w) for w in wnids)


def test_first100_is_the_head_of_the_sorted_ilsvrc_list():
    wnids = load_class_list("first100")
    assert wnids == sorted(wnids)
    assert (wnids[0], wnids[-1]) == ("n01440764", "n01855672")  # tench .. goose
    # The CMC classes below "goose" are exactly those of first100 (both lists are real).
    cmc_low = {w for w in load_class_list("cmc") if w <= wnids[-1]}
    assert cmc_low <= set(wnids) and len(cmc_low) == 8


def test_sources_pin_a_checksum_for_every_file():
    for dataset, entry in sources.SOURCES.items():
        for spec in entry["files"]:
            assert spec["md5"] or spec["sha256"], (dataset, spec["name"])
            if entry["downloadable"]:
                assert spec["mirrors"], (dataset, spec["name"])
    names = [s["name"] for s in sources.files("div2k")]
    assert names == list(DIV2K_CONTENT)
    assert next(f for f in sources.files("voc2012") if f["name"] == VOC_TAR)["md5"] == "6cd6e144f989b92b3379bac3b3de84fd"


# ------------------------------------------------------------------ VOC


def test_fetch_voc2012_end_to_end(http_server, tmp_path):
    (http_server.root / "voc").mkdir()
    tar = make_voc_tar(http_server.root / "voc" / VOC_TAR)
    dest = tmp_path / "data" / "voc"
    voc = fetch_voc2012(dest, mirrors=[http_server.url + "voc/"],
                        checksums={VOC_TAR: digests(tar)}, **FAST)
    assert voc == dest / "VOCdevkit" / "VOC2012"
    assert (dest / "archives" / VOC_TAR).read_bytes() == tar.read_bytes()
    for split, ids in VOC_IDS.items():
        listed = (voc / "ImageSets/Segmentation" / f"{split}.txt").read_text().split()
        assert listed == ids
        for i in ids:
            assert Image.open(voc / "JPEGImages" / f"{i}.jpg").size == (40, 30)
            assert Image.open(voc / "SegmentationClass" / f"{i}.png").mode == "P"
    assert [r.path for r in http_server.requests] == ["/voc/" + VOC_TAR]

    # Everything is done: a second call neither downloads nor extracts.
    (voc / "JPEGImages" / "marker").write_text("untouched")
    fetch_voc2012(dest, mirrors=[http_server.url + "voc/"],
                  checksums={VOC_TAR: digests(tar)}, **FAST)
    assert len(http_server.requests) == 1
    assert (voc / "JPEGImages" / "marker").exists()


def test_fetch_voc2012_keeps_the_pinned_checksum(http_server, tmp_path):
    # A mirror serving anything but the real file is refused with the pinned md5.
    make_voc_tar(http_server.root / VOC_TAR)
    dest = tmp_path / "voc"
    with pytest.raises(ChecksumError) as err:
        fetch_voc2012(dest, mirrors=[http_server.url], **FAST)
    assert "6cd6e144f989b92b3379bac3b3de84fd" in str(err.value)
    assert list((dest / "archives").iterdir()) == []
    assert not (dest / "VOCdevkit").exists()


def test_fetch_voc2012_with_sbd(http_server, tmp_path):
    tar = make_voc_tar(http_server.root / VOC_TAR)
    (http_server.root / "sbd").mkdir()
    tgz, split = make_sbd(http_server.root / "sbd")
    dest = tmp_path / "voc"
    fetch_voc2012(dest, mirrors=[http_server.url], sbd=True,
                  sbd_mirrors=[http_server.url + "sbd/"],
                  checksums={VOC_TAR: digests(tar), "benchmark.tgz": digests(tgz),
                             "train_noval.txt": digests(split)}, **FAST)
    sbd = dest / "benchmark_RELEASE" / "dataset"
    assert (sbd / "img" / "2008_000002.jpg").is_file()
    assert (sbd / "train_noval.txt").read_text() == "2008_000002\n"


def test_layout_checks_name_the_missing_folder(tmp_path):
    (tmp_path / "VOCdevkit" / "VOC2012" / "JPEGImages").mkdir(parents=True)
    with pytest.raises(DatasetLayoutError, match="SegmentationClass") as err:
        check_voc_root(tmp_path)
    assert "datasets.voc2012.root" in str(err.value)
    with pytest.raises(DatasetLayoutError, match="DIV2K_valid_HR"):
        check_div2k_root(tmp_path)


# ------------------------------------------------------------------ DIV2K


def test_fetch_div2k_end_to_end_with_a_dead_first_mirror(http_server, tmp_path):
    zips = make_div2k_zips(http_server.root / "div2k")
    dest = tmp_path / "div2k"
    root = fetch_div2k(dest, mirrors=[http_server.url + "gone/", http_server.url + "div2k/"],
                       checksums={name: digests(p) for name, p in zips.items()}, **FAST)
    assert root == dest
    for members in DIV2K_CONTENT.values():
        for m in members:
            assert Image.open(dest / m).format == "PNG"
    assert sorted(p.name for p in (dest / "archives").iterdir()) == sorted(DIV2K_CONTENT)
    statuses = [(r.path.split("/")[1], r.status) for r in http_server.requests]
    assert statuses.count(("gone", 404)) == 4 and statuses.count(("div2k", 200)) == 4


# ------------------------------------------------------------------ ImageNet-100

ALL = ["n01440764", "n01443537", "n01484850", "n01491361", "n01494475"]
PICKED = ["n01443537", "n01491361", "n01494475"]


def _ilsvrc(tmp_path):
    archives = tmp_path / "archives"
    expected = make_ilsvrc(archives, ALL)
    sums = {p.name: {"md5": digests(p)["md5"]} for p in archives.iterdir()}
    return archives, expected, sums


def test_imagenet100_from_archives(tmp_path):
    archives, expected, sums = _ilsvrc(tmp_path)
    out = tmp_path / "in100"
    cfg = {"source": "archives", "archives": str(archives), "class_list": "test"}
    manifest = prepare("imagenet100", cfg, out, wnids=PICKED, checksums=sums, progress=False)
    for split in ("train", "val"):
        assert sorted(p.name for p in (out / split).iterdir()) == sorted(PICKED)
    for wnid in PICKED:
        assert len(list((out / "train" / wnid).glob("*.JPEG"))) == expected["train_per_class"]
        val = sorted(p.name for p in (out / "val" / wnid).iterdir())
        assert val == sorted(expected["val"][wnid])  # sorted by the devkit's ground truth
    assert not any(p.name.startswith(".partial") for p in out.iterdir())

    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk == manifest
    assert manifest["wnids"] == PICKED and manifest["source"] == "archives"
    assert manifest["splits"]["train"]["images"] == 3 * len(PICKED)
    assert manifest["splits"]["val"]["per_class"] == {w: 2 for w in PICKED}
    assert re.fullmatch(r"[0-9a-f]{40}", manifest["files_sha1"])

    # Done already: returns the manifest without reading the archives.
    for p in archives.iterdir():
        p.unlink()
    # (The file list is prepare's, made for every dataset after the dataset's own part.)
    assert prepare_imagenet100(out, archive_dir=archives, class_list="test", wnids=PICKED,
                               checksums=sums, progress=False) == {k: v for k, v in manifest.items() if k != "files"}
    # A crash after the extraction but before the manifest (while resizing): not redone.
    (out / "manifest.json").unlink()
    assert prepare("imagenet100", cfg, out, wnids=PICKED, checksums=sums, progress=False) == manifest


def test_imagenet100_wrong_archive_checksum(tmp_path):
    archives, _, sums = _ilsvrc(tmp_path)
    sums["ILSVRC2012_img_val.tar"] = {"md5": "0" * 32}
    with pytest.raises(ImageNetError) as err:
        prepare_imagenet100(tmp_path / "out", archive_dir=archives, wnids=PICKED,
                            checksums=sums, progress=False)
    msg = str(err.value)
    assert "ILSVRC2012_img_val.tar" in msg and "0" * 32 in msg and "image-net.org" in msg


def test_imagenet100_truncated_archive_leaves_nothing(tmp_path):
    archives, _, _ = _ilsvrc(tmp_path)
    val = archives / "ILSVRC2012_img_val.tar"
    val.write_bytes(val.read_bytes()[: val.stat().st_size // 2])
    sums = {p.name: {"md5": digests(p)["md5"]} for p in archives.iterdir()}
    out = tmp_path / "out"
    with pytest.raises(CorruptArchiveError) as err:
        prepare_imagenet100(out, archive_dir=archives, wnids=PICKED, checksums=sums,
                            progress=False)
    assert str(val) in str(err.value) and "download it again" in str(err.value)
    assert list(out.iterdir()) == []


def test_imagenet100_missing_archives_message(tmp_path):
    archives = tmp_path / "archives"
    archives.mkdir()
    (archives / "ILSVRC2012_img_val.tar").write_bytes(b"")
    with pytest.raises(ImageNetError) as err:
        prepare_imagenet100(tmp_path / "out", archive_dir=archives)
    msg = str(err.value)
    assert "ILSVRC2012_img_train.tar" in msg and "1d675b47d978889d74fa0da5fadfb00e" in msg
    assert "ILSVRC2012_devkit_t12.tar.gz" in msg and "fa75699e90414af021442c21a62c3abf" in msg
    assert "ILSVRC2012_img_val.tar" not in msg  # present, so not listed as missing
    assert "image-net.org" in msg and "licence" in msg
    assert "datasets.imagenet100.root" in msg


def test_imagenet100_from_an_extracted_tree(tmp_path):
    root = make_tree(tmp_path / "kaggle", ALL)
    out = tmp_path / "out"
    manifest = prepare("imagenet100", {"root": str(root), "class_list": "test"}, out, wnids=PICKED)
    assert manifest["root"] == str(root.resolve()) and manifest["source"] == "tree"
    assert manifest["splits"]["val"]["images"] == 2 * len(PICKED)
    assert json.loads((out / "manifest.json").read_text()) == manifest
    assert not (out / "train").exists()  # used in place, not copied


def test_imagenet100_tree_errors_name_the_path(tmp_path):
    root = make_tree(tmp_path / "tree", PICKED[:2])
    with pytest.raises(ImageNetError) as err:
        prepare_imagenet100(tmp_path / "out", root=root, wnids=PICKED)
    assert str(root / "train" / PICKED[2]) in str(err.value)
    with pytest.raises(ImageNetError, match="does not exist"):
        prepare_imagenet100(tmp_path / "out", root=tmp_path / "nowhere", wnids=PICKED)
    (tmp_path / "flat").mkdir()
    with pytest.raises(ImageNetError, match=re.escape(str(tmp_path / "flat" / "train"))):
        prepare_imagenet100(tmp_path / "out", root=tmp_path / "flat", wnids=PICKED)


def test_resize_tree_is_parallel_and_idempotent(tmp_path):
    src = tmp_path / "src"
    (src / "train" / "n1").mkdir(parents=True)
    (src / "train" / "n1" / "wide.JPEG").write_bytes(jpeg_bytes(120, 60))
    (src / "train" / "n1" / "tall.JPEG").write_bytes(jpeg_bytes(50, 100))
    (src / "train" / "n1" / "small.JPEG").write_bytes(jpeg_bytes(20, 16))
    dst = tmp_path / "dst"
    rate = resize_tree(src, dst, shorter_side=32, quality=85, workers=2, progress=False)
    assert rate > 0
    sizes = {p.name: Image.open(p).size for p in (dst / "train" / "n1").iterdir()}
    assert sizes == {"wide.JPEG": (64, 32), "tall.JPEG": (32, 64), "small.JPEG": (20, 16)}
    stamp = (dst / "train" / "n1" / "wide.JPEG").stat().st_mtime_ns
    assert resize_tree(src, dst, shorter_side=32, workers=2, progress=False) == 0.0
    assert (dst / "train" / "n1" / "wide.JPEG").stat().st_mtime_ns == stamp

import os
import stat
import tarfile
import zipfile

import pytest

from clipbench.data.extract import (
    ArchiveError,
    CorruptArchiveError,
    UnsafeArchiveError,
    safe_extract,
)
from tests._archives import add_file, add_special, is_extracted, listing, make_tar, make_zip


@pytest.mark.parametrize("suffix,mode", [(".tar", "w"), (".tar.gz", "w:gz"), (".tgz", "w:gz")])
def test_tar_extracts_and_is_idempotent(tmp_path, suffix, mode):
    archive = make_tar(tmp_path / f"a{suffix}", {"top/a.txt": b"A", "top/sub/b.txt": b"B"}, mode)
    dest = tmp_path / "out"
    assert safe_extract(archive, dest) == dest
    assert (dest / "top/a.txt").read_bytes() == b"A"
    assert (dest / "top/sub/b.txt").read_bytes() == b"B"
    assert is_extracted(archive, dest)
    assert not any(p.name.startswith(".partial-") for p in dest.iterdir())

    # Second call: a no-op, even if the archive has gone (only the marker matters).
    (dest / "top/a.txt").write_bytes(b"edited")
    archive.unlink()
    safe_extract(archive, dest)
    assert (dest / "top/a.txt").read_bytes() == b"edited"


def test_zip_extracts_and_merges_with_existing_folders(tmp_path):
    dest = tmp_path / "out"
    (dest / "DIV2K_train_LR_bicubic" / "X2").mkdir(parents=True)
    archive = make_zip(tmp_path / "lr.zip", {
        "DIV2K_train_LR_bicubic/X4/0001x4.png": b"png",
        "DIV2K_train_LR_bicubic/X4/0002x4.png": b"png2",
    })
    safe_extract(archive, dest)
    assert (dest / "DIV2K_train_LR_bicubic/X2").is_dir()  # merged, not replaced
    assert (dest / "DIV2K_train_LR_bicubic/X4/0002x4.png").read_bytes() == b"png2"
    assert is_extracted(archive, dest)


def test_merge_follows_a_user_symlinked_folder(tmp_path):
    elsewhere = tmp_path / "bigdisk"
    elsewhere.mkdir()
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "top").symlink_to(elsewhere)
    archive = make_tar(tmp_path / "a.tar", {"top/a.txt": b"A"})
    safe_extract(archive, dest)
    assert (dest / "top").is_symlink()
    assert (elsewhere / "a.txt").read_bytes() == b"A"


def test_interrupted_extraction_leaves_nothing_that_looks_complete(tmp_path):
    archive = make_tar(tmp_path / "a.tar", {"top/a.txt": b"A"})
    dest = tmp_path / "out"
    # What a crash mid-way leaves: a staging folder and no marker.
    stale = dest / ".partial-a.tar" / "top"
    stale.mkdir(parents=True)
    (stale / "junk").write_bytes(b"half")
    assert not is_extracted(archive, dest)
    safe_extract(archive, dest)
    assert listing(dest) == [".extracted-a.tar", "top", "top/a.txt"]


# ------------------------------------------------------------------ unsafe archives


def _assert_refused(archive, tmp_path, *words):
    dest = tmp_path / "inner" / "out"
    with pytest.raises(UnsafeArchiveError) as err:
        safe_extract(archive, dest)
    msg = str(err.value)
    assert str(archive) in msg
    for word in words:
        assert word in msg
    # Nothing outside dest, nothing complete-looking inside it.
    assert sorted(p.name for p in (tmp_path / "inner").iterdir()) == ["out"]
    assert list(dest.iterdir()) == []
    assert not (tmp_path / "evil.txt").exists()
    return msg


def test_tar_with_dotdot_is_refused(tmp_path):
    archive = tmp_path / "a.tar"
    with tarfile.open(archive, "w") as tf:
        add_file(tf, "ok.txt")
        add_file(tf, "../../evil.txt")
    _assert_refused(archive, tmp_path, "../../evil.txt", "..")


def test_tar_with_absolute_path_is_refused(tmp_path):
    archive = tmp_path / "a.tar"
    target = tmp_path / "evil.txt"
    with tarfile.open(archive, "w") as tf:
        add_file(tf, str(target))
    _assert_refused(archive, tmp_path, "absolute")


def test_tar_with_symlink_pointing_out_is_refused(tmp_path):
    archive = tmp_path / "a.tar"
    with tarfile.open(archive, "w") as tf:
        add_special(tf, "link", tarfile.SYMTYPE, "../../evil.txt")
        add_file(tf, "link", b"written through the link")
    _assert_refused(archive, tmp_path, "link", "outside")


def test_tar_with_absolute_symlink_is_refused(tmp_path):
    archive = tmp_path / "a.tar"
    with tarfile.open(archive, "w") as tf:
        add_special(tf, "etc", tarfile.SYMTYPE, "/etc")
    _assert_refused(archive, tmp_path, "absolute")


def test_tar_with_hardlink_pointing_out_is_refused(tmp_path):
    archive = tmp_path / "a.tar"
    with tarfile.open(archive, "w") as tf:
        add_special(tf, "h", tarfile.LNKTYPE, "../evil.txt")
    _assert_refused(archive, tmp_path, "outside")


def test_tar_with_device_file_is_refused(tmp_path):
    archive = tmp_path / "a.tar"
    with tarfile.open(archive, "w") as tf:
        add_special(tf, "dev/null", tarfile.CHRTYPE)
    _assert_refused(archive, tmp_path, "device")


def test_tar_with_symlink_inside_target_is_allowed(tmp_path):
    archive = tmp_path / "a.tar"
    with tarfile.open(archive, "w") as tf:
        add_file(tf, "d/real.txt", b"R")
        add_special(tf, "d/alias.txt", tarfile.SYMTYPE, "real.txt")
    dest = tmp_path / "out"
    safe_extract(archive, dest)
    assert (dest / "d/alias.txt").is_symlink()
    assert (dest / "d/alias.txt").read_bytes() == b"R"


def test_zip_with_dotdot_and_absolute_paths_are_refused(tmp_path):
    _assert_refused(make_zip(tmp_path / "a.zip", {"ok": b"1", "../evil.txt": b"2"}),
                    tmp_path, "..")
    _assert_refused(make_zip(tmp_path / "b.zip", {"/abs/evil.txt": b"2"}), tmp_path,
                    "absolute")


def test_zip_with_symlink_is_refused(tmp_path):
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        info = zipfile.ZipInfo("link")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "../../evil.txt")
    _assert_refused(archive, tmp_path, "symbolic link")


# ------------------------------------------------------------------ corrupt archives


def _truncate(path, keep):
    data = path.read_bytes()
    path.write_bytes(data[:keep])


@pytest.mark.parametrize("fraction", [0.5, None])
def test_truncated_tar_is_a_clear_error(tmp_path, fraction):
    archive = make_tar(tmp_path / "a.tar", {"a.bin": os.urandom(20_000), "b.bin": b"b" * 3000})
    size = archive.stat().st_size
    # None: cut exactly after the first member, where tarfile alone would stop quietly.
    keep = int(size * fraction) if fraction else 512 + 20_480
    _truncate(archive, keep)
    dest = tmp_path / "out"
    with pytest.raises(CorruptArchiveError) as err:
        safe_extract(archive, dest)
    msg = str(err.value)
    assert str(archive) in msg and "Delete it and download it again" in msg
    assert not is_extracted(archive, dest)
    assert list(dest.iterdir()) == []


def test_truncated_tgz_is_a_clear_error(tmp_path):
    archive = make_tar(tmp_path / "a.tar.gz", {"a.bin": os.urandom(50_000)}, "w:gz")
    _truncate(archive, archive.stat().st_size // 2)
    with pytest.raises(CorruptArchiveError, match="truncated or corrupt"):
        safe_extract(archive, tmp_path / "out")


def test_truncated_zip_is_a_clear_error(tmp_path):
    archive = make_zip(tmp_path / "a.zip", {"a.bin": os.urandom(20_000)})
    _truncate(archive, archive.stat().st_size // 2)
    with pytest.raises(CorruptArchiveError, match="Delete it and download it again"):
        safe_extract(archive, tmp_path / "out")


def test_unknown_archive_type(tmp_path):
    (tmp_path / "a.rar").write_bytes(b"x")
    with pytest.raises(ArchiveError, match="unsupported archive type"):
        safe_extract(tmp_path / "a.rar", tmp_path / "out")

"""Pretrained weights fetched like data: pinned checksum, local HTTP mirror, refusal of a
tampered file; the verify-once marker of large archives."""
import hashlib
import os

import pytest
import torch

from clipbench.data import download as dl
from clipbench.data.download import ChecksumError
from clipbench.data.weights import fetch_weights, file_name, find_weights, name_of, spec

FAST = dict(retries=1, backoff=0.01, timeout=5, progress=False)
VGG = "vgg16_imagenet"


def _fake_checkpoint(path):
    torch.save({"features.0.weight": torch.randn(4, 3, 3, 3)}, path)
    return path.read_bytes()


def test_pinned_names():
    assert file_name(VGG) == "vgg16-397923af.pth" and name_of("vgg16-397923af.pth") == VGG
    assert spec(VGG)["sha256_prefix"] == "397923af" and spec(VGG)["size"] == 553433881
    with pytest.raises(KeyError, match="known: vgg16_imagenet"):
        file_name("alexnet")


def test_fetch_weights_from_a_local_mirror_with_a_pinned_checksum(http_server, tmp_path):
    name = file_name(VGG)
    data = _fake_checkpoint(http_server.root / name)
    sha = hashlib.sha256(data).hexdigest()
    dest = tmp_path / "data" / "weights"
    pins = {name: {"sha256": sha, "size": len(data)}}
    path = fetch_weights(VGG, dest, mirrors=[http_server.url], checksums=pins, **FAST)
    assert path == dest / name and path.read_bytes() == data
    assert sorted(p.name for p in dest.iterdir()) == [name]
    # Verified and already there: not fetched again.
    n = len(http_server.requests_for(name))
    fetch_weights(VGG, dest, mirrors=[http_server.url], checksums=pins, **FAST)
    assert len(http_server.requests_for(name)) == n
    # torchvision's own check: the file name's 8 hex digits are the sha256's first 8.
    prefix_pin = {name: {"sha256_prefix": sha[:8]}}
    assert fetch_weights(VGG, dest, mirrors=[http_server.url], checksums=prefix_pin, **FAST) == path


def test_a_tampered_weights_file_is_refused_and_nothing_is_left(http_server, tmp_path):
    name = file_name(VGG)
    good = _fake_checkpoint(tmp_path / "good.pth")
    sha = hashlib.sha256(good).hexdigest()
    tampered = bytearray(good)
    tampered[len(tampered) // 2] ^= 0xFF
    (http_server.root / name).write_bytes(bytes(tampered))
    dest = tmp_path / "weights"
    with pytest.raises(ChecksumError) as err:
        fetch_weights(VGG, dest, mirrors=[http_server.url], checksums={name: {"sha256": sha}}, **FAST)
    msg = str(err.value)
    assert name in msg and http_server.url + name in msg
    assert sha in msg and hashlib.sha256(bytes(tampered)).hexdigest() in msg
    assert not dest.exists() or list(dest.iterdir()) == []


def test_the_pinned_prefix_refuses_a_file_that_is_not_vgg16(http_server, tmp_path):
    name = file_name(VGG)
    (http_server.root / name).write_bytes(b"not the weights")
    with pytest.raises(ChecksumError, match="sha256 expected to start with 397923af"):
        fetch_weights(VGG, tmp_path / "w", mirrors=[http_server.url],
                      checksums={name: {"sha256_prefix": "397923af"}}, **FAST)
    assert list((tmp_path / "w").iterdir()) == []


def test_training_reads_data_weights_first(tmp_path, monkeypatch):
    from clipbench.models.fcn import default_vgg16_weights

    hub = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    monkeypatch.chdir(tmp_path)
    fetched = tmp_path / "data" / "weights" / file_name(VGG)
    assert default_vgg16_weights().resolve() == fetched  # neither exists: name the fetched path
    (hub / "checkpoints").mkdir(parents=True)
    (hub / "checkpoints" / file_name(VGG)).write_bytes(b"x")
    assert find_weights(VGG) == hub / "checkpoints" / file_name(VGG)
    fetched.parent.mkdir(parents=True)
    fetched.write_bytes(b"y")
    assert default_vgg16_weights().resolve() == fetched


def test_a_large_file_is_hashed_once_until_its_size_or_mtime_changes(tmp_path, monkeypatch):
    monkeypatch.setattr(dl, "VERIFY_ONCE_BYTES", 1)
    f = tmp_path / "big.tar"
    f.write_bytes(b"archive bytes")
    md5 = hashlib.md5(b"archive bytes").hexdigest()
    assert dl.mismatches(f, md5=md5, size=13) == []
    marker = dl.verified_marker(f)
    assert marker.is_file() and marker.name == ".big.tar.verified.json"

    hashed = []
    real = dl.digests
    monkeypatch.setattr(dl, "digests", lambda *a, **k: hashed.append(a) or real(*a, **k))
    assert dl.mismatches(f, md5=md5) == [] and hashed == []  # trusted: same size and mtime
    assert dl.mismatches(f, sha256=hashlib.sha256(b"archive bytes").hexdigest()) == []
    assert len(hashed) == 1  # a checksum the marker does not hold is computed
    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert dl.mismatches(f, md5=md5) == [] and len(hashed) == 2  # touched: hashed again
    f.write_bytes(b"ARCHIVE BYTES")  # same size, new content, new mtime
    assert dl.mismatches(f, md5=md5) and len(hashed) == 3


def test_small_files_get_no_marker(tmp_path):
    f = tmp_path / "small.bin"
    f.write_bytes(b"abc")
    assert dl.mismatches(f, md5=hashlib.md5(b"abc").hexdigest()) == []
    assert not dl.verified_marker(f).exists()


def test_fetch_weights_command_refuses_a_file_that_is_not_the_pinned_one(http_server, tmp_path, capsys):
    from clipbench.cli import main

    (http_server.root / file_name(VGG)).write_bytes(b"not vgg16")
    out = tmp_path / "weights"
    rc = main(["fetch-weights", VGG, "--out", str(out), "--json", f'{{"mirrors": ["{http_server.url}"]}}'])
    err = capsys.readouterr().err
    assert rc == 1 and file_name(VGG) in err and "397923af" in err and "553433881" in err
    assert not out.exists() or list(out.iterdir()) == []

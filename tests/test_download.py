import hashlib
import os

import pytest

from clipbench.data.download import (
    ChecksumError,
    DownloadError,
    download,
    mirror_urls,
    mismatches,
    verify,
)

FAST = dict(retries=2, backoff=0.01, timeout=5, progress=False)


def _payload(n=300_000):
    return os.urandom(n)


def _publish(server, name, data, sub=""):
    folder = server.root / sub
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data)
    return hashlib.md5(data).hexdigest(), hashlib.sha256(data).hexdigest()


def test_mirror_urls_appends_name_once():
    assert mirror_urls("a.tar", ["http://x/voc/", "http://y/voc"]) == [
        "http://x/voc/a.tar",
        "http://y/voc/a.tar",
    ]
    with pytest.raises(TypeError):
        mirror_urls("a.tar", "http://x/")


def test_verify_and_mismatches(tmp_path):
    f = tmp_path / "f.bin"
    f.write_bytes(b"hello")
    md5 = hashlib.md5(b"hello").hexdigest()
    sha = hashlib.sha256(b"hello").hexdigest()
    assert verify(f, md5=md5, sha256=sha, size=5)
    assert verify(f, md5=md5.upper())
    assert not verify(f, size=6)
    assert not verify(tmp_path / "absent", md5=md5)
    problems = mismatches(f, md5="0" * 32, size=6)
    assert any("expected 6 bytes, actual 5" in p for p in problems)
    assert any("0" * 32 in p and md5 in p for p in problems)


def test_full_download(http_server, tmp_path):
    data = _payload()
    md5, sha = _publish(http_server, "data.bin", data)
    out = download("data.bin", mirror_urls("data.bin", [http_server.url]), tmp_path / "dl",
                   md5=md5, sha256=sha, size=len(data), **FAST)
    assert out == tmp_path / "dl" / "data.bin"
    assert out.read_bytes() == data
    assert not (tmp_path / "dl" / "data.bin.part").exists()
    assert [r.range for r in http_server.requests] == [None]


def test_existing_verified_file_is_not_downloaded_again(http_server, tmp_path):
    data = _payload(1000)
    md5, _ = _publish(http_server, "data.bin", data)
    (tmp_path / "data.bin").write_bytes(data)
    download("data.bin", [http_server.url + "data.bin"], tmp_path, md5=md5, **FAST)
    assert http_server.requests == []


def test_existing_wrong_file_is_an_error_and_kept(http_server, tmp_path):
    data = _payload(1000)
    md5, _ = _publish(http_server, "data.bin", data)
    (tmp_path / "data.bin").write_bytes(b"user's own bytes")
    with pytest.raises(ChecksumError) as err:
        download("data.bin", [http_server.url + "data.bin"], tmp_path, md5=md5, **FAST)
    msg = str(err.value)
    assert "data.bin" in msg and md5 in msg
    assert hashlib.md5(b"user's own bytes").hexdigest() in msg
    assert "Delete it" in msg
    assert (tmp_path / "data.bin").read_bytes() == b"user's own bytes"
    assert http_server.requests == []


def test_cut_download_resumes_with_range(http_server, tmp_path):
    data = _payload()
    md5, _ = _publish(http_server, "data.bin", data)
    http_server.cuts["data.bin"] = 1
    out = download("data.bin", [http_server.url + "data.bin"], tmp_path, md5=md5,
                   size=len(data), **FAST)
    assert out.read_bytes() == data
    reqs = http_server.requests_for("data.bin")
    assert len(reqs) == 2
    assert reqs[0].range is None
    assert reqs[1].range == f"bytes={len(data) // 2}-" and reqs[1].status == 206


def test_partial_file_from_an_earlier_run_is_resumed(http_server, tmp_path):
    data = _payload()
    md5, _ = _publish(http_server, "data.bin", data)
    (tmp_path / "data.bin.part").write_bytes(data[:1234])
    out = download("data.bin", [http_server.url + "data.bin"], tmp_path, md5=md5, **FAST)
    assert out.read_bytes() == data
    assert http_server.requests[0].range == "bytes=1234-"


def test_server_ignoring_range_restarts_from_zero(http_server, tmp_path):
    data = _payload()
    md5, _ = _publish(http_server, "data.bin", data)
    http_server.ignore_range = True
    http_server.cuts["data.bin"] = 1
    out = download("data.bin", [http_server.url + "data.bin"], tmp_path, md5=md5, **FAST)
    assert out.read_bytes() == data
    reqs = http_server.requests_for("data.bin")
    assert [r.status for r in reqs] == [200, 200]
    assert reqs[1].range is not None  # asked to resume, got the whole file, still right


def test_wrong_checksum_leaves_nothing_behind(http_server, tmp_path):
    data = _payload(5000)
    _, _ = _publish(http_server, "data.bin", data)
    wrong = "0" * 64
    with pytest.raises(ChecksumError) as err:
        download("data.bin", [http_server.url + "data.bin"], tmp_path / "dl", sha256=wrong,
                 **FAST)
    msg = str(err.value)
    assert wrong in msg and hashlib.sha256(data).hexdigest() in msg
    assert http_server.url + "data.bin" in msg and "mirror" in msg
    assert list((tmp_path / "dl").iterdir()) == []


def test_404_on_first_mirror_then_second(http_server, tmp_path):
    data = _payload(10_000)
    md5, _ = _publish(http_server, "data.bin", data, sub="good")
    urls = mirror_urls("data.bin", [http_server.url + "bad/", http_server.url + "good/"])
    out = download("data.bin", urls, tmp_path, md5=md5, **FAST)
    assert out.read_bytes() == data
    assert [(r.path, r.status) for r in http_server.requests] == [
        ("/bad/data.bin", 404),
        ("/good/data.bin", 200),
    ]  # a 404 is not retried


def test_every_mirror_failing_lists_each_url(http_server, tmp_path):
    urls = mirror_urls("nope.bin", [http_server.url + "a/", "http://127.0.0.1:9/b/"])
    with pytest.raises(DownloadError) as err:
        download("nope.bin", urls, tmp_path, md5="0" * 32, retries=1, backoff=0.01,
                 timeout=2, progress=False)
    msg = str(err.value)
    assert urls[0] in msg and "404" in msg
    assert urls[1] in msg
    assert not (tmp_path / "nope.bin").exists()


def test_retries_then_gives_up_on_a_server_that_always_cuts(http_server, tmp_path):
    data = _payload(10_000)
    md5, _ = _publish(http_server, "data.bin", data)
    http_server.cuts["data.bin"] = 100
    http_server.ignore_range = True  # never makes progress past the first half
    with pytest.raises(DownloadError) as err:
        download("data.bin", [http_server.url + "data.bin"], tmp_path, md5=md5, **FAST)
    assert "connection closed" in str(err.value)
    # After the last attempt that got further than before, `retries` more attempts.
    assert len(http_server.requests) == FAST["retries"] + 1
    assert not (tmp_path / "data.bin").exists()


def test_complete_part_file_is_verified_and_renamed(http_server, tmp_path):
    data = _payload(5000)
    md5, _ = _publish(http_server, "data.bin", data)
    (tmp_path / "data.bin.part").write_bytes(data)
    out = download("data.bin", [http_server.url + "data.bin"], tmp_path, md5=md5, **FAST)
    assert out.read_bytes() == data
    assert [r.status for r in http_server.requests] == [416]


def test_file_url_mirror(tmp_path):
    src = tmp_path / "mirror"
    src.mkdir()
    data = _payload(5000)
    (src / "data.bin").write_bytes(data)
    (tmp_path / "dl").mkdir()
    (tmp_path / "dl" / "data.bin.part").write_bytes(data[:100])  # file:// ignores Range
    urls = mirror_urls("data.bin", [(tmp_path / "nowhere").as_uri(), src.as_uri()])
    out = download("data.bin", urls, tmp_path / "dl", md5=hashlib.md5(data).hexdigest(),
                   **FAST)
    assert out.read_bytes() == data


def test_stale_part_from_another_file_is_redownloaded_once(http_server, tmp_path):
    data = _payload(5000)
    md5, _ = _publish(http_server, "data.bin", data)
    (tmp_path / "data.bin.part").write_bytes(b"x" * 100)  # not a prefix of data
    out = download("data.bin", [http_server.url + "data.bin"], tmp_path, md5=md5, **FAST)
    assert out.read_bytes() == data
    assert [r.range for r in http_server.requests] == ["bytes=100-", None]

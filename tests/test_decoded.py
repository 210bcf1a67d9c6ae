"""The decoded-image cache: each file decoded once per process, the same samples as without it."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

from clipbench.data import decoded
from clipbench.data.decoded import DecodedCache
from clipbench.tasks import build_task
from tests._specs import classification_spec, segmentation_spec


def _png(path, value: int) -> str:
    Image.fromarray(np.full((4, 5, 3), value, dtype=np.uint8)).save(path)
    return str(path)


def _reader(calls: list):
    def read(path):
        calls.append(path)
        with Image.open(path) as im:
            return im.convert("RGB")
    return read


def test_a_file_is_decoded_once_and_each_caller_gets_its_own_copy(tmp_path):
    cache, calls = DecodedCache(2**20), []
    path = _png(tmp_path / "a.png", 7)
    first = cache.get("rgb", (path,), lambda: _reader(calls)(path))
    second = cache.get("rgb", (path,), lambda: _reader(calls)(path))
    assert calls == [path] and cache.used == 4 * 5 * 3
    assert second is not first and np.array_equal(np.asarray(second), np.asarray(first))
    second.putpixel((0, 0), (1, 2, 3))  # a caller's change stays its own
    assert cache.get("rgb", (path,), lambda: _reader(calls)(path)).getpixel((0, 0)) == (7, 7, 7)


def test_a_changed_file_is_decoded_again(tmp_path):
    cache, calls = DecodedCache(2**20), []
    path = _png(tmp_path / "a.png", 7)
    cache.get("rgb", (path,), lambda: _reader(calls)(path))
    _png(path, 9)
    os.utime(path, ns=(1, 1))  # a new modification time even on a coarse clock
    assert cache.get("rgb", (path,), lambda: _reader(calls)(path)).getpixel((0, 0)) == (9, 9, 9)
    assert len(calls) == 2


def test_the_budget_and_dataloader_workers_add_nothing(tmp_path, monkeypatch):
    path = _png(tmp_path / "a.png", 7)
    small, calls = DecodedCache(10), []
    for _ in range(2):
        small.get("rgb", (path,), lambda: _reader(calls)(path))
    assert len(calls) == 2 and small.used == 0

    in_worker, calls = DecodedCache(2**20), []
    monkeypatch.setattr(torch.utils.data, "get_worker_info", lambda: object())
    for _ in range(2):
        in_worker.get("rgb", (path,), lambda: _reader(calls)(path))
    assert len(calls) == 2 and in_worker.used == 0


def test_the_budget_comes_from_the_environment_of_the_process_that_stores(tmp_path, monkeypatch):
    path = _png(tmp_path / "a.png", 7)
    cache = DecodedCache()  # as the module's, made before the job's environment is known
    monkeypatch.setenv("CLIPBENCH_DECODED_CACHE_MB", "0")
    cache.get("rgb", (path,), lambda: _reader([])(path))
    assert cache.budget == 0 and cache.used == 0
    monkeypatch.setenv("CLIPBENCH_DECODED_CACHE_MB", "1")
    assert decoded.budget_from_env() == 2**20


@pytest.mark.parametrize("raw", ["lots", "-5", "1.5", ""])
def test_a_bad_budget_is_named(raw, tmp_path, monkeypatch):
    path = _png(tmp_path / "a.png", 7)
    monkeypatch.setenv("CLIPBENCH_DECODED_CACHE_MB", raw)
    with pytest.raises(ValueError, match="CLIPBENCH_DECODED_CACHE_MB=.*whole number of MB"):
        DecodedCache().get("rgb", (path,), lambda: _reader([])(path))


def test_a_dataset_with_the_cached_loader_pickles(tiny_imagenet):
    """A DataLoader worker started by spawn or forkserver receives the dataset pickled."""
    import pickle

    val_set = build_task(classification_spec(), tiny_imagenet).val_set  # deterministic transforms
    copy = pickle.loads(pickle.dumps(val_set))
    assert torch.equal(copy[0][0], val_set[0][0])


def test_a_missing_file_is_named_as_before(tmp_path):
    cache = DecodedCache(2**20)
    with pytest.raises(FileNotFoundError, match="gone.png"):
        cache.get("rgb", (tmp_path / "gone.png",), lambda: Image.open(tmp_path / "gone.png"))


@pytest.mark.parametrize("task", ["classification", "segmentation"])
def test_the_samples_are_those_decoded_afresh(task, tiny_imagenet, tiny_voc, monkeypatch):
    spec, manifest = ((classification_spec(), tiny_imagenet) if task == "classification"
                      else (segmentation_spec(), tiny_voc))
    built = build_task(spec, manifest)

    def epoch(budget: int):
        monkeypatch.setattr(decoded, "CACHE", DecodedCache(budget))
        torch.manual_seed(0)
        return [built.train_set[i] for i in range(len(built.train_set))]

    afresh = epoch(0)
    assert decoded.CACHE.used == 0
    epoch(2**30)  # decodes, and fills the cache
    torch.manual_seed(0)
    again = [built.train_set[i] for i in range(len(built.train_set))]  # from the cache
    assert decoded.CACHE.used > 0
    for (x0, y0), (x1, y1) in zip(afresh, again, strict=True):
        assert torch.equal(x0, x1) and torch.equal(torch.as_tensor(y0), torch.as_tensor(y1))

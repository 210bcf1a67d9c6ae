"""Common random numbers: with the same seed, every method of a task starts from the same
weights and sees the same samples in the same order, so differences between methods are paired."""
import itertools

import torch

from clipbench.engine import distributed
from clipbench.engine.train import setup
from tests._specs import classification_spec

METHODS = {
    "sgd": {"lr": 0.01, "momentum": 0.9},
    "clipped_sgd": {"lr": 0.01, "momentum": 0.9, "clipping": "coordinate", "clip_level": 0.1},
    "sstm": {"a": 100, "L": 10, "batch_multiplier": 2},
    "adam": {"lr": 1e-3, "batch_multiplier": 4},
}


def _start(method, seed, manifest, tmp_path):
    spec = classification_spec(method, seed=seed, **METHODS[method])
    s = setup(spec, manifest, tmp_path / f"{method}{seed}", spec["engine"], torch.device("cpu"), distributed.Dist())
    s.sampler.set_epoch(0)
    order = [i for batch in s.sampler for _, i in batch]  # sample indices as the loader asks for them
    first = next(iter(s.train_loader))[0]  # the first micro-batch's augmented images
    return s.raw_model.state_dict(), order, first


def test_methods_share_initial_weights_and_batches(tiny_imagenet, tmp_path):
    runs = {m: _start(m, 0, tiny_imagenet, tmp_path) for m in METHODS}
    for (a, ra), (b, rb) in itertools.combinations(runs.items(), 2):
        assert ra[0].keys() == rb[0].keys()
        assert all(torch.equal(ra[0][k], rb[0][k]) for k in ra[0]), f"{a} and {b} start apart"
        n = min(len(ra[1]), len(rb[1]))  # a batch multiplier only drops the epoch's last samples
        assert n > 0 and ra[1][:n] == rb[1][:n], f"{a} and {b} see different samples"
        assert torch.equal(ra[2], rb[2]), f"{a} and {b} see differently augmented images"


def test_seeds_differ(tiny_imagenet, tmp_path):
    w0, order0, _ = _start("sgd", 0, tiny_imagenet, tmp_path)
    w1, order1, _ = _start("sgd", 1, tiny_imagenet, tmp_path)
    assert order0 != order1
    assert any(not torch.equal(w0[k], w1[k]) for k in w0 if w0[k].is_floating_point())

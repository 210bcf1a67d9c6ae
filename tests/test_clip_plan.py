"""Clip statistics at a method's own batch multiplier, and the clipping predicted before training.

A toy problem with known Gaussian noise checks that the statistics kept at multiplier m give
the quantiles of real means of m batches; cases with known answers check the prediction
(equal norms: 0 or 1 exactly; clipped-SSTM's falling level crossing them half-way: about 0.5;
the momentum buffer's build-up), and an arm predicted to clip in under 1% of its steps warns.
``python tests/test_clip_plan.py`` prints the toy problem's numbers."""
import json

import numpy as np
import pytest
import torch

from clipbench import files
from clipbench.diagnostics import clip_plan as cp
from clipbench.diagnostics import measure as ms
from clipbench.diagnostics import clip_levels

D1, D2, BATCH = 24, 40, 8
MU, SIGMA = 0.15, 1.0  # per-sample gradient: mu + sigma * N(0, I) in each of D1 + D2 coordinates


class Toy(torch.nn.Module):
    """Loss −mean over samples of ⟨w, x⟩: the batch gradient is −(the batch's mean x)."""

    def __init__(self):
        super().__init__()
        self.w1 = torch.nn.Parameter(torch.zeros(D1))
        self.w2 = torch.nn.Parameter(torch.zeros(D2))

    def forward(self, x):
        return (x[:, :D1] * self.w1).sum(1) + (x[:, D1:] * self.w2).sum(1)


def loss(out, target):
    return -out.mean()


def toy_init(n: int, multipliers, seed: int = 0) -> dict:
    """init.json's clip statistics of the toy, measured as clipbench measures a task."""
    gen = torch.Generator().manual_seed(seed)
    data = [(MU + SIGMA * torch.randn(BATCH, D1 + D2, generator=gen), None) for _ in range(n)]
    model = Toy()
    params = list(model.parameters())
    first = ms._first_pass(model, loss, data, params)
    second = ms._second_pass(model, loss, data, params, first["mean"], 16, seed, multipliers)
    return {**{k: first[k] for k in clip_levels.CLIP_KEYS}, "by_multiplier": second["by_multiplier"]}


def m_batch_means(m: int, draws: int = 40_000, seed: int = 1) -> np.ndarray:
    """The gradients a method with batch_multiplier m steps on: means of m batches of BATCH."""
    rng = np.random.default_rng(seed)
    return -(MU + SIGMA * rng.standard_normal((draws, D1 + D2)) / np.sqrt(m * BATCH))


@pytest.mark.parametrize("m", [2, 4])
def test_levels_at_the_arms_batch_match_real_m_batch_means(m):
    init = toy_init(400, [m])
    g = m_batch_means(m)
    truth = {"norm": np.linalg.norm(g, axis=1), "coordinate": np.abs(g).max(axis=1),
             "layer": np.concatenate([np.linalg.norm(g[:, :D1], axis=1), np.linalg.norm(g[:, D1:], axis=1)])}
    for clipping, x in truth.items():
        for q in (0.5, 0.9):
            level = clip_levels.level_from_quantile(init, clipping, q, m)
            assert level == pytest.approx(np.quantile(x, q), rel=0.05), (clipping, q)
    # ... and the statistics at batch_size alone would not (levels sqrt(m)-ish too high).
    assert clip_levels.level_from_quantile(init, "norm", 0.5, 1) > 1.3 * np.quantile(truth["norm"], 0.5)


def test_shrink_is_exact_in_expectation_with_few_batches():
    """With n = 8 batches, E‖h‖² = ‖μ‖² + tr Σ/m for c = shrink(n, m); 1/√m overshoots."""
    rng = np.random.default_rng(0)
    n, d, m, reps = 8, 64, 4, 4000
    g = 1.0 + rng.standard_normal((reps, n, d))  # batch gradients: mean 1, Σ = I
    gbar = g.mean(axis=1, keepdims=True)
    want = d * 1.0 + d / m

    def msq(c):
        return float((((gbar + c * (g - gbar)) ** 2).sum(axis=2)).mean())

    assert msq(ms.shrink(n, m)) == pytest.approx(want, rel=0.01)
    assert msq(m ** -0.5) > want * 1.03  # + d (m − 1)/(n m) = + 6 of 80
    assert ms.shrink(8, 1) == 1.0 and ms.shrink(4, 4) == 0.0 and ms.shrink(8, 2) == pytest.approx((6 / 14) ** 0.5)


def test_clip_statistics_of_the_measurement():
    mean = [torch.tensor([1.0, 0.0]), torch.tensor([0.0])]
    noise = [torch.tensor([2.0, 2.0]), torch.tensor([-4.0])]
    gn, tn, mx = ms.clip_statistics(mean, noise, 0.5)  # h = [2, 1], [-2]
    assert tn == pytest.approx([5 ** 0.5, 2.0]) and gn == pytest.approx(3.0) and mx == 2.0


def test_resolved_record_says_at_which_multiplier():
    init = toy_init(8, [2])
    cfg = {"a": 10, "L": 2, "clipping": "norm", "B": {"quantile": 0.5, "factor": 2}, "batch_multiplier": 2}
    out, res = clip_levels.resolve_levels("clipped_sstm", cfg, init)
    assert res["batch_multiplier"] == 2 and res["shrink"] == pytest.approx(ms.shrink(8, 2))
    assert "mean of 2 mini-batches" in res["measured"] and "full-gradient estimate" in res["measured"]
    assert res["lambda_1"] == pytest.approx(2 * np.median(init["by_multiplier"]["2"]["grad_norms"]))
    with pytest.raises(ValueError, match="clipped_sstm.B: batch_multiplier 4: init.json has no clip statistics"):
        clip_levels.resolve_levels("clipped_sstm", {**cfg, "batch_multiplier": 4}, init)
    _, res1 = clip_levels.resolve_levels("clipped_sgd", {"clipping": "norm", "clip_level": {"quantile": 0.5}}, init)
    assert res1["batch_multiplier"] == 1 and res1["value"] == pytest.approx(np.median(init["grad_norms"]))


def flat_init(norm=2.0, tensors=(1.0, 3.0), max_abs=1.0, n=8, m2=None) -> dict:
    init = {"grad_norms": [norm] * n, "tensor_norms": [list(tensors)] * n, "grad_max_abs": [max_abs] * n,
            "by_multiplier": {}}
    if m2 is not None:
        init["by_multiplier"]["2"] = {"grad_norms": [m2] * n, "tensor_norms": [list(tensors)] * n,
                                      "grad_max_abs": [max_abs] * n, "shrink": ms.shrink(n, 2)}
    return init


def test_which_methods_are_clipped():
    methods = {"sgd": {"lr": 0.1}, "adam": {"lr": 1e-3, "batch_multiplier": 4},
               "sstm": {"a": 1, "L": 1, "clipping": "none", "batch_multiplier": 8},
               "clipped_sgd": {"lr": 0.1, "clip_level": 1.0}, "clipped_sstm": {"a": 1, "L": 1, "B": 1.0},
               "mine": {"optimizer": "clipbench.optim:ClippedSGD", "lr": 0.1, "clip_level": 2.0},
               "mine_off": {"optimizer": "clipbench.optim:ClippedSGD", "clipping": "none", "clip_level": 2.0}}
    got = cp.clipped_methods(methods)
    assert sorted(got) == ["clipped_sgd", "clipped_sstm", "mine"] and "lr" not in got["clipped_sgd"]
    assert cp.multipliers(methods) == [1]  # adam's and sstm's 4 and 8 do not clip
    assert cp.optimizer_steps(1000, 10, 2, 3) == 3 * 50 and cp.optimizer_steps(1005, 10, 3, 1) == 33


def test_constant_level_with_equal_norms_is_all_or_nothing():
    init = flat_init(norm=2.0)
    shares, detail = cp.plan("t", {"clipped_sgd": {"clipping": "norm", "clip_level": 1.5},
                                   "hi": {"optimizer": "x:ClippedSGD", "clipping": "norm", "clip_level": 2.5},
                                   "at": {"optimizer": "x:ClippedSGD", "clipping": "norm", "clip_level": 2.0},
                                   "layer": {"optimizer": "x:ClippedSGD", "clipping": "layer", "clip_level": 2.0},
                                   "q": {"optimizer": "x:ClippedSGD", "clip_level": {"quantile": 0.5, "factor": 0.9}}},
                             init, n_train=100, batch_size=10, epochs=2)
    assert shares == {"clipped_sgd": 1.0, "hi": 0.0, "at": 0.0, "layer": 1.0, "q": 1.0}
    assert detail["methods"]["clipped_sgd"]["steps"] == 20 and detail["methods"]["q"]["level"] == pytest.approx(1.8)
    assert detail["methods"]["layer"]["statistic"] == "largest per-tensor gradient norm"  # max(1, 3) = 3 > 2
    assert json.loads(json.dumps(shares)) == shares  # the contract: a flat {method: share}


def test_sstm_level_crossing_the_norms_half_way_clips_half_the_steps():
    # lambda_k = lambda_1 * alpha_1 / alpha_k = 51 s * 2 / (k + 2): above s until k + 2 = 102, of 200 steps.
    cfg = {"a": 10, "L": 2, "clipping": "norm", "B": {"quantile": 0.5, "factor": 51}}
    shares, detail = cp.plan("t", {"clipped_sstm": cfg}, flat_init(norm=2.0), n_train=1000, batch_size=10, epochs=2)
    assert shares["clipped_sstm"] == pytest.approx(99 / 200)
    d = detail["methods"]["clipped_sstm"]
    assert d["level_first"] == pytest.approx(102.0) and d["level_last"] == pytest.approx(102.0 * 2 / 201)
    # At its own batch multiplier: 2 x 10 per step, half the steps, and the m = 2 norms (here 1.0).
    shares, detail = cp.plan("t", {"clipped_sstm": {**cfg, "batch_multiplier": 2}}, flat_init(norm=2.0, m2=1.0),
                             n_train=1000, batch_size=10, epochs=2)
    assert detail["methods"]["clipped_sstm"]["steps"] == 100 and shares["clipped_sstm"] == 0.0
    assert detail["methods"]["clipped_sstm"]["level_first"] == pytest.approx(51.0)
    # The authors' indexing: the first call only initializes (not counted), then B / alpha(k - 1) with
    # alpha = (j + 1) / (2aL): lambda_1 = B * 2aL = 51 s, so clipped once j + 1 > 51, of 199 counted steps.
    shares, detail = cp.plan("t", {"clipped_sstm": {**cfg, "indexing": "authors"}}, flat_init(norm=2.0),
                             n_train=1000, batch_size=10, epochs=2)
    assert detail["methods"]["clipped_sstm"]["counted_steps"] == 199 and shares["clipped_sstm"] == pytest.approx(148 / 199)


def test_momentum_buffer_builds_up():
    # |g| = 1, mu = 0.9, coordinate level 5: the buffer (1 - 0.9^k)/0.1 passes 5 from k = 7 on.
    cfg = {"clipping": "coordinate", "clip_level": 5.0, "clip_target": "momentum", "momentum": 0.9}
    shares, detail = cp.plan("t", {"clipped_sgd": cfg}, flat_init(max_abs=1.0), n_train=100, batch_size=10, epochs=2)
    assert shares["clipped_sgd"] == pytest.approx(14 / 20)
    assert any("g (1 - mu^k)/(1 - mu)" in n for n in detail["methods"]["clipped_sgd"]["notes"])
    # Norm clipping of the momentum buffer scales by the raw gradient's norm: no build-up.
    shares, _ = cp.plan("t", {"clipped_sgd": {**cfg, "clipping": "norm", "clip_level": 2.5}}, flat_init(norm=2.0),
                        n_train=100, batch_size=10, epochs=2)
    assert shares["clipped_sgd"] == 0.0


def test_empirical_share():
    assert cp.share_clipped([1, 2, 3, 4], [2.5]) == 0.5
    assert cp.share_clipped([1, 2, 3, 4], [0.5, 4.0]) == 0.5  # steps: all, then none
    assert cp.share_clipped([1, 2, 3, 4], [2.0]) == 0.5  # a norm equal to the level is not clipped


def test_an_arm_that_hardly_clips_warns(tmp_path, capsys):
    methods = {"clipped_sgd": {"clipping": "coordinate", "clip_level": 0.1, "clip_target": "momentum", "momentum": 0.0},
               "clipped_sstm": {"a": 10, "L": 2, "clipping": "norm", "B": 10.0}}
    init = {"grad_norms": [1.0, 2.0, 3.0], "tensor_norms": [[1.0]] * 3, "grad_max_abs": [0.01, 0.02, 0.03]}
    shares, detail = cp.plan("segmentation", methods, init, n_train=100, batch_size=10, epochs=1)
    assert shares == {"clipped_sgd": 0.0, "clipped_sstm": 0.0}
    w = detail["warnings"]
    assert len(w) == 2 and all(x.startswith("clipbench WARNING: segmentation/clipped_") for x in w)
    assert "predicted to clip in 0.00% of its 10 steps: its level is 0.1" in w[0]
    assert "ranges 0.01 to 0.03" in w[0]
    assert "its level falls from 200 to 36.36" in w[1] and "global gradient norm" in w[1]
    files.write_json(tmp_path / "d.json", detail)
    assert cp.main(["--warn", str(tmp_path / "d.json")]) == 0
    err = capsys.readouterr().err
    assert err.splitlines() == w
    # At 1% or above: no warning.
    _, detail = cp.plan("t", {"clipped_sgd": {"clipping": "norm", "clip_level": 1.5}}, init, 100, 10, 1)
    assert detail["warnings"] == []


if __name__ == "__main__":
    for m in (2, 4):
        init = toy_init(400, [m])
        g = m_batch_means(m)
        print(f"m = {m}: median norm at m {clip_levels.level_from_quantile(init, 'norm', 0.5, m):.4f}, "
              f"of real m-batch means {np.median(np.linalg.norm(g, axis=1)):.4f}, at batch_size "
              f"{clip_levels.level_from_quantile(init, 'norm', 0.5, 1):.4f}")

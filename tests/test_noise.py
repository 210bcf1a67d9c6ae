"""Gradient-noise diagnostics: the tail-index estimator on known alphas and on Gaussian noise of
mixed scales and correlated coordinates, the Gaussian reference for the noise norms, the claim
records, clip levels from quantiles, and the measurement on a real (tiny) task through the
command line. ``python tests/test_noise.py`` prints every case's numbers."""
import json

import numpy as np
import pytest
from scipy.stats import levy_stable

from clipbench import cli, files
from clipbench.diagnostics import noise as nz
from clipbench.diagnostics import clip_levels
from tests._specs import classification_spec

BATCHES, COORDS = 8, 4096


def stable_1d(alpha, seed):
    return levy_stable.rvs(alpha, 0.0, size=32_768, random_state=seed)


def as_measured(g):
    """Batch gradients (batches × coordinates) → the noise as the measurement gives it."""
    return g - g.mean(axis=0)


def stable_layout(alpha, seed, sigma=1.3):
    """α-stable batch gradients whose coordinates' scales are log-normal."""
    rng = np.random.default_rng(seed)
    g = levy_stable.rvs(alpha, 0.0, size=(BATCHES, COORDS), random_state=rng)
    return as_measured(g * np.exp(sigma * rng.standard_normal(COORDS)))


def gaussian_mixed_scales(seed, sigma=1.3):
    rng = np.random.default_rng(seed)
    return as_measured(rng.standard_normal((BATCHES, COORDS)) * np.exp(sigma * rng.standard_normal(COORDS)))


def gaussian_correlated(seed, p=COORDS, factors=5, n=BATCHES, rng=None):
    """Coordinates sharing a few random factors in each batch, plus their own noise (and
    log-normal scales): the n batch gradients, not yet centred."""
    rng = rng or np.random.default_rng(seed)
    loadings = rng.standard_normal((factors, p)) * np.exp(rng.standard_normal(p))
    own = 0.3 * np.exp(rng.standard_normal(p))
    return lambda draws=n: rng.standard_normal((draws, factors)) @ loadings + own * rng.standard_normal((draws, p))


def tail_case(x, seed=0):
    a, (lo, hi) = nz.tail_index_estimate(x, seed=seed)
    return a, lo, hi


def verdict_of(x, seed=0):
    a, lo, hi = tail_case(x, seed)
    point = {"label": "t", "subjects": ["t"], "alpha": a, "alpha_ci": [lo, hi], "n_coords": x.shape[-1],
             "n_batches": x.shape[0], "n_samples": x.size}
    return nz._tail_claim("t", "T", point)["verdict"], (a, lo, hi)


@pytest.mark.parametrize("alpha", [1.2, 1.5, 1.8])
def test_tail_index_recovers_known_alpha_from_plain_samples(alpha):
    a, lo, hi = tail_case(stable_1d(alpha, seed=0))
    assert abs(a - alpha) < 0.15 and lo <= a <= hi


@pytest.mark.parametrize("alpha", [1.2, 1.5, 1.8])
def test_tail_index_recovers_known_alpha_laid_out_as_measured(alpha):
    # Coordinates of scales spread over orders of magnitude: pooled, they would read heavier.
    a, lo, hi = tail_case(stable_layout(alpha, seed=1))
    assert abs(a - alpha) < 0.15 and lo <= a <= hi


def test_gaussian_noise_of_mixed_scales_is_not_heavy_tailed():
    x = gaussian_mixed_scales(seed=2)
    # What pooling the coordinates did before: the mixture of scales reads as heavy tails.
    assert nz.tail_index(np.random.default_rng(0).permutation(x.ravel())) < 1.5
    verdict, (a, lo, hi) = verdict_of(x)
    assert verdict == "not_heavy_tailed" and lo >= nz.HEAVY_TAIL_ALPHA
    assert abs(nz.excess_kurtosis(x)) < 0.1


def test_correlated_gaussian_noise_is_not_heavy_tailed():
    x = as_measured(gaussian_correlated(seed=3)())
    verdict, _ = verdict_of(x)
    assert verdict == "not_heavy_tailed"


def test_estimate_always_inside_its_interval():
    rng = np.random.default_rng(4)
    cases = [rng.standard_normal((8, 20)), rng.standard_normal((4, 300)), rng.standard_cauchy(400),
             levy_stable.rvs(1.5, 0.0, size=(8, 50), random_state=5)]
    for x in cases:
        for seed in range(3):
            a, (lo, hi) = nz.tail_index_estimate(x, seed=seed, n_boot=50)
            assert lo <= a <= hi


def test_coordinates_without_noise_or_with_ties_are_left_out():
    x = np.random.default_rng(6).standard_normal((8, 5))
    x[:, 1] = 0.0  # no noise
    x[:3, 2] = 0.25  # an atom: equal in three batches
    live, dead = nz.live_coordinates(x)
    assert live.tolist() == [True, False, False, True, True] and dead.tolist() == [False, True, False, False, False]


def reference_case(seed=7, n=BATCHES, p=2000, trials=40):
    """Correlated Gaussian batch gradients: the reference from each draw of n batches against
    the measured norms of that draw and against the true spread (many draws)."""
    rng = np.random.default_rng(seed)
    draw = gaussian_correlated(seed, p=p, factors=10, rng=rng)
    true_norms = np.linalg.norm(np.concatenate([as_measured(draw()) for _ in range(500)]), axis=1)
    ratios, sds, naive = [], [], []
    for _ in range(trials):
        xi = as_measured(draw())
        norms = np.linalg.norm(xi, axis=1)
        sum_var = (xi ** 2).sum() / (n - 1)
        mean, sd, _ = nz.gaussian_norm_reference(n, sum_var, xi @ xi.T)
        ratios.append(norms.mean() / mean)
        sds.append(sd)
        # The former reference: no (n−1)/n, and a spread for independent coordinates.
        var = (xi ** 2).sum(axis=0) / (n - 1)
        naive.append((norms.mean() / np.sqrt(var.sum()), np.sqrt(2 * (var ** 2).sum()) / (2 * np.sqrt(var.sum()))))
    return {"ratio_mean": float(np.mean(ratios)), "ratio_min": float(np.min(ratios)), "ratio_max": float(np.max(ratios)),
            "sd_median": float(np.median(sds)), "sd_true": float(true_norms.std()),
            "sd_within_1.5": float(np.mean([1 / 1.5 < s / true_norms.std() < 1.5 for s in sds])),
            "naive_ratio": float(np.mean([r for r, _ in naive])), "naive_sd": float(np.median([s for _, s in naive]))}


def test_gaussian_reference_for_correlated_noise():
    r = reference_case()
    assert abs(r["ratio_mean"] - 1) < 0.02 and 0.9 < r["ratio_min"] and r["ratio_max"] < 1.1
    assert 1 / 1.5 < r["sd_median"] / r["sd_true"] < 1.5 and r["sd_within_1.5"] >= 0.7


def test_norm_ratio_interval_and_isotropic_limit():
    mean, sd, k = nz.gaussian_norm_reference(8, 8 / 7 * 100.0, np.eye(8) * 100.0)  # orthogonal noise vectors
    assert mean == pytest.approx(10.0, rel=1e-3) and sd < 0.1 and k > 1e3
    ratio, (lo, hi) = nz.norm_ratio([9.0, 10.0, 11.0, 10.0, 9.5, 10.5, 10.0, 10.0], 10.0)
    assert lo <= ratio <= hi and ratio == pytest.approx(1.0)
    one = [10.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]  # one batch dominates
    ratio, (lo, hi) = nz.norm_ratio(one, np.sqrt(np.mean(np.square(one))))
    assert ratio < 0.6 and lo <= ratio < hi <= 1 + 1e-9


def point(**kw):
    base = {"label": "initialisation", "subjects": ["initialisation"], "step": 0, "alpha": 1.95, "alpha_ci": [1.91, 2.0],
            "n_coords": 4096, "n_samples": 32768, "n_batches": 8, "min_coords": 256, "kurtosis": 0.0,
            "norm_mean": 9.9, "norm_sd": 1.0, "gauss_norm_mean": 10.0, "gauss_norm_sd": 1.1, "norm_ratio": 0.99,
            "norm_ratio_ci": [0.95, 1.02]}
    return {**base, **kw}


def test_claims_from_points():
    from clipbench.report.claims import FIELDS

    end = point(label="end of training (sgd, seed 0)", subjects=["end of training", "sgd", "seed 0"], alpha=1.4,
                alpha_ci=[1.3, 1.5], norm_ratio=0.6, norm_ratio_ci=[0.45, 0.8])
    noise = nz.assemble("seg", "Segmentation", [point(n_coords=26, n_samples=208), end], {})
    cs = noise["claims"]
    assert [c["kind"] for c in cs] == ["tail_index", "noise_reference"] * 2 and all(set(FIELDS) <= set(c) for c in cs)
    assert [c["verdict"] for c in cs] == ["too_few", "consistent", "heavy_tailed", "inconsistent"]
    assert "26 coordinates" in cs[0]["sentence"] and "208 samples" in cs[0]["sentence"]
    assert "infinite variance" in cs[2]["sentence"] and "bounded-variance" in cs[2]["sentence"]
    assert cs[2]["subjects"] == ["end of training", "sgd", "seed 0"] and cs[2]["n"] == 32768
    assert cs[2]["detail"]["n_coords"] == 4096 and cs[2]["margin"] == 0.1
    assert noise["verdict"] == cs[0]["sentence"] + " " + cs[2]["sentence"] and noise["heavy_tailed"] is False
    assert nz.claims(noise, "seg") == cs
    straddle = nz.claims({"points": [point(alpha_ci=[1.85, 2.0], gauss_norm_sd=None, norm_ratio_ci=None)]}, "t")
    assert [c["verdict"] for c in straddle] == ["undecided", "too_few"] and "cannot tell" in straddle[0]["sentence"]
    assert nz.claims({"points": [point()]}, "t")[0]["verdict"] == "not_heavy_tailed"


def test_levels_from_quantiles():
    init = {"grad_norms": [1.0, 2.0, 3.0, 4.0, 5.0], "tensor_norms": [[1, 10], [2, 20]], "grad_max_abs": [0.1, 0.3]}
    cfg, res = clip_levels.resolve_levels("clipped_sgd", {"lr": 0.1, "clipping": "norm", "clip_level": {"quantile": 0.5}}, init)
    assert cfg["clip_level"] == 3.0 and res["value"] == 3.0
    cfg, _ = clip_levels.resolve_levels("clipped_sgd", {"clipping": "coordinate", "clip_level": {"quantile": 1.0, "factor": 2}}, init)
    assert cfg["clip_level"] == pytest.approx(0.6)
    # clipped-SSTM: B such that lambda_1 = B / alpha_1 is the level (alpha_1 = 2 / (2aL), thesis' indexing).
    cfg, res = clip_levels.resolve_levels("clipped_sstm", {"a": 10, "L": 2, "clipping": "norm", "B": {"quantile": 0.0}}, init)
    assert cfg["B"] == pytest.approx(1.0 * 2 / (2 * 10 * 2)) and res["lambda_1"] == 1.0
    assert clip_levels.resolve_levels("sgd", {"lr": 0.1}, None) == ({"lr": 0.1}, None)
    with pytest.raises(ValueError, match="needs the task's noise measurement"):
        clip_levels.resolve_levels("clipped_sgd", {"clip_level": {"quantile": 0.5}}, None)


def test_noise_command_at_init_and_after_training(tiny_imagenet, tmp_path):
    spec = {**classification_spec("sgd", epochs=1), "noise": {"batches": 4, "coords": 64}}
    data = tmp_path / "manifest.json"
    files.write_json(data, tiny_imagenet)
    out = tmp_path / "noise"
    # At initialisation with the task's methods: the clip statistics also at clipped-SSTM's
    # batch multiplier (2), and the clipping predicted before training for the clipped arms.
    plan_methods = {"sgd": {"lr": 0.1}, "sstm": {"a": 100, "L": 10, "clipping": "none", "batch_multiplier": 4},
                    "clipped_sgd": {"lr": 0.01, "clipping": "norm", "clip_level": {"quantile": 0.5}},
                    "clipped_sstm": {"a": 100, "L": 10, "clipping": "norm", "B": {"quantile": 0.5, "factor": 2},
                                     "batch_multiplier": 2}}
    assert cli.main(["noise", "--spec", json.dumps(spec), "--data", str(data), "--methods", json.dumps(plan_methods),
                     "--out", str(out)]) == 0
    init = files.read_json(out / "init.json")
    assert len(init["grad_norms"]) == 4 and len(init["tensor_norms"][0]) > 10 and len(init["grad_max_abs"]) == 4
    assert sorted(init["by_multiplier"]) == ["2"] and init["n_train"] == 32 and init["n_batches"] == 4
    at2 = init["by_multiplier"]["2"]
    assert len(at2["grad_norms"]) == 4 and at2["shrink"] == pytest.approx((2 / 6) ** 0.5)
    assert np.median(at2["grad_norms"]) < np.median(init["grad_norms"])  # less noise in a mean of 2 batches
    plan = files.read_json(out / "clip_plan.json")
    assert sorted(plan) == ["clipped_sgd", "clipped_sstm"] and all(0 <= v <= 1 for v in plan.values())
    detail = files.read_json(out / "clip_plan_detail.json")
    assert detail["methods"]["clipped_sstm"]["steps"] == 2 and detail["methods"]["clipped_sgd"]["steps"] == 4
    assert detail["methods"]["clipped_sstm"]["resolved"]["batch_multiplier"] == 2
    point = init["point"]
    assert point["n_coords"] + point["n_coords_without_noise"] + point["n_coords_tied"] == 64 and point["n_coords"] > 0
    assert 0.1 <= point["alpha"] <= 2 and point["alpha_ci"][0] <= point["alpha"] <= point["alpha_ci"][1]
    assert point["gauss_norm_sd"] is not None and point["n_samples"] == 4 * point["n_coords"]

    # A run whose level is a quantile resolves it from init.json and records it.
    run = tmp_path / "run"
    cspec = classification_spec("clipped_sgd", epochs=1, lr=0.01, clipping="norm", clip_level={"quantile": 0.5})
    assert cli.main(["train", "--spec", json.dumps(cspec), "--data", str(data), "--noise", str(out / "init.json"),
                     "--out", str(run)]) == 0
    m = files.read_json(run / "metrics.json")
    assert m["spec"]["resolved"]["value"] == pytest.approx(float(np.quantile(init["grad_norms"], 0.5)))
    assert m["spec"]["resolved"]["batch_multiplier"] == 1 and "measured" in m["spec"]["resolved"]

    methods = json.dumps({"clipped_sgd": cspec["method_config"]})
    assert cli.main(["noise", "--spec", json.dumps(spec), "--data", str(data), "--checkpoint", str(run / "checkpoint.pt"),
                     "--init", str(out / "init.json"), "--methods", methods, "--out", str(out)]) == 0
    final = files.read_json(out / "noise.json")
    assert [p["label"] for p in final["points"]][0] == "initialisation" and final["points"][1]["step"] > 0
    assert final["alpha"] == init["point"]["alpha"] and "clipped_sgd" in final["clip_levels"]
    assert final["clip_plan"] == plan and final["clip_plan_detail"]["methods"].keys() == plan.keys()
    assert [c["kind"] for c in final["claims"]] == ["tail_index", "noise_reference"] * 2
    assert final["claims"][0]["verdict"] == "too_few"  # 64 sampled coordinates < min_coords
    assert final["claims"][2]["subjects"] == ["end of training", "sgd", f"seed {spec['seed']}"]
    assert (out / "noise_init.png").stat().st_size > 0 and (out / "noise_final.png").stat().st_size > 0

    # The preferred run diverged (no usable checkpoint): measured at the next that finished, saying why.
    diverged = tmp_path / "diverged"
    files.write_json(diverged / "metrics.json", {"status": "diverged", "diverged_at_step": 3})
    base = ["noise", "--spec", json.dumps(spec), "--data", str(data), "--init", str(out / "init.json"),
            "--methods", methods, "--out", str(out), "--checkpoint-from"]
    assert cli.main([*base, str(diverged), str(run)]) == 0
    fallback = files.read_json(out / "noise.json")
    assert fallback["reference"]["skipped"] == [{"run": str(diverged), "why": "diverged at step 3"}]
    assert fallback["reference"]["run"].endswith("clipped_sgd/seed0") and len(fallback["points"]) == 2
    # No run finished: the point at initialisation only, and why, for the report to say.
    (run / "checkpoint.pt").unlink()
    assert cli.main([*base, str(diverged), str(run)]) == 0
    absent = files.read_json(out / "noise.json")
    assert len(absent["points"]) == 1 and absent["figures"] == ["noise_init.png"]
    assert f"{diverged} diverged at step 3; {run} its checkpoint.pt is gone" in absent["final_absent"]
    from clipbench.report.sections.diagnostics import _where

    assert _where(absent).startswith("No point at the end of training: no run finished")


if __name__ == "__main__":  # the numbers behind the tests
    rows = [(f"plain 1-D, alpha {a}", stable_1d(a, 0)) for a in (1.2, 1.5, 1.8)]
    rows += [(f"{BATCHES} x {COORDS}, alpha {a}", stable_layout(a, 1)) for a in (1.2, 1.5, 1.8)]
    rows += [("Gaussian, log-normal scales (sigma 1.3)", gaussian_mixed_scales(2)),
             ("Gaussian, correlated coordinates", as_measured(gaussian_correlated(3)()))]
    for name, x in rows:
        v, (a, lo, hi) = verdict_of(x) if x.ndim == 2 else ("", tail_case(x))
        print(f"{name:42s} alpha {a:.3f} [{lo:.3f}, {hi:.3f}] {v}")
    x = gaussian_mixed_scales(2)
    print(f"{'  the same, pooled (as before)':42s} alpha {nz.tail_index(np.random.default_rng(0).permutation(x.ravel())):.3f}")
    print("Gaussian reference, correlated noise:", json.dumps(reference_case(), indent=1))

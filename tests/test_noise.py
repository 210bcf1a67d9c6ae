"""Gradient-noise diagnostics: the tail-index estimator on known alphas, clip levels from
quantiles, and the measurement on a real (tiny) task through the command line."""
import json

import numpy as np
import pytest
from scipy.stats import levy_stable

from clipbench import cli, files
from clipbench.diagnostics import noise as nz
from tests.conftest import tiny_spec


@pytest.mark.parametrize("alpha", [1.2, 1.5, 1.8])
def test_tail_index_recovers_known_alpha(alpha):
    for seed in range(3):
        x = levy_stable.rvs(alpha, 0.0, size=100_000, random_state=seed)
        assert abs(nz.tail_index(x) - alpha) < 0.15


def test_gaussian_noise_reads_as_gaussian():
    x = np.random.default_rng(0).standard_normal(100_000)
    assert nz.tail_index(x) > 1.9
    lo, hi = nz.tail_index_interval(x[:20_000], n_boot=50)
    assert lo <= 2.0 <= hi + 1e-9 and "close to Gaussian" in nz.verdict("T", {
        "label": "init", "alpha": nz.tail_index(x), "alpha_ci": [max(lo, 1.9), hi]})
    assert abs(nz.excess_kurtosis(x)) < 0.1


def test_gaussian_reference_matches_sampled_norms():
    v = np.random.default_rng(1).uniform(0.5, 2.0, size=400)
    xi = np.random.default_rng(2).standard_normal((5000, 400)) * np.sqrt(v)
    norms = np.linalg.norm(xi, axis=1)
    mean, sd = nz.gaussian_norm_reference(v.sum(), (v * v).sum())
    assert mean == pytest.approx(norms.mean(), rel=0.01) and sd == pytest.approx(norms.std(), rel=0.1)


def test_levels_from_quantiles():
    init = {"grad_norms": [1.0, 2.0, 3.0, 4.0, 5.0], "tensor_norms": [[1, 10], [2, 20]], "grad_max_abs": [0.1, 0.3]}
    cfg, res = nz.resolve_levels("clipped_sgd", {"lr": 0.1, "clipping": "norm", "clip_level": {"quantile": 0.5}}, init)
    assert cfg["clip_level"] == 3.0 and res["value"] == 3.0
    cfg, _ = nz.resolve_levels("clipped_sgd", {"clipping": "coordinate", "clip_level": {"quantile": 1.0, "factor": 2}}, init)
    assert cfg["clip_level"] == pytest.approx(0.6)
    # clipped-SSTM: B such that lambda_1 = B / alpha_1 is the level (alpha_1 = 2 / (2aL), thesis' indexing).
    cfg, res = nz.resolve_levels("clipped_sstm", {"a": 10, "L": 2, "clipping": "norm", "B": {"quantile": 0.0}}, init)
    assert cfg["B"] == pytest.approx(1.0 * 2 / (2 * 10 * 2)) and res["lambda_1"] == 1.0
    assert nz.resolve_levels("sgd", {"lr": 0.1}, None) == ({"lr": 0.1}, None)
    with pytest.raises(ValueError, match="needs the task's noise measurement"):
        nz.resolve_levels("clipped_sgd", {"clip_level": {"quantile": 0.5}}, None)


def test_noise_command_at_init_and_after_training(tiny_imagenet, tmp_path):
    spec = {**tiny_spec("sgd", epochs=1), "noise": {"batches": 4, "coords": 64}}
    data = tmp_path / "manifest.json"
    files.write_json(data, tiny_imagenet)
    out = tmp_path / "noise"
    assert cli.main(["noise", "--spec", json.dumps(spec), "--data", str(data), "--out", str(out)]) == 0
    init = files.read_json(out / "init.json")
    assert len(init["grad_norms"]) == 4 and len(init["tensor_norms"][0]) > 10 and len(init["grad_max_abs"]) == 4
    point = init["point"]
    assert point["n_coords"] + point["n_coords_without_noise"] == 64 and point["n_coords"] > 0
    assert 0.1 <= point["alpha"] <= 2

    # A run whose level is a quantile resolves it from init.json and records it.
    run = tmp_path / "run"
    cspec = tiny_spec("clipped_sgd", epochs=1, lr=0.01, clipping="norm", clip_level={"quantile": 0.5})
    assert cli.main(["train", "--spec", json.dumps(cspec), "--data", str(data), "--noise", str(out / "init.json"),
                     "--out", str(run)]) == 0
    m = files.read_json(run / "metrics.json")
    assert m["spec"]["resolved"]["value"] == pytest.approx(float(np.quantile(init["grad_norms"], 0.5)))

    methods = json.dumps({"clipped_sgd": cspec["method_config"]})
    assert cli.main(["noise", "--spec", json.dumps(spec), "--data", str(data), "--checkpoint", str(run / "checkpoint.pt"),
                     "--init", str(out / "init.json"), "--methods", methods, "--out", str(out)]) == 0
    final = files.read_json(out / "noise.json")
    assert [p["label"] for p in final["points"]][0] == "initialisation" and final["points"][1]["step"] > 0
    assert final["alpha"] == init["point"]["alpha"] and "clipped_sgd" in final["clip_levels"]
    assert (out / "noise_init.png").stat().st_size > 0 and (out / "noise_final.png").stat().st_size > 0

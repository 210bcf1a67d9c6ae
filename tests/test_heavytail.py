"""The convex check: contract outputs, the theorems' parameters, and the effect it exists to show."""
import math

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("sklearn")

from clipbench import cli
from clipbench import config as cfgmod
from clipbench.diagnostics import heavytail as ht


def small(**over):
    return cfgmod.with_task_defaults("heavytail", {"runs": 48, "steps": 300, "points": 8, **over})


def test_cli_writes_the_contract_files(tmp_path):
    assert cli.main(["heavytail", "--json", '{"runs": 16, "steps": 50, "points": 5}', "--out", str(tmp_path)]) == 0
    q = pd.read_csv(tmp_path / "quantiles.csv")
    assert list(q.columns) == ["noise", "method", "step", "q50", "q90", "q99"]
    assert set(q["noise"]) == {"gaussian", "student_t"}
    assert set(q["method"]) == {"sgd", "clipped_sgd", "sstm", "clipped_sstm"}
    assert q["step"].max() == 50 and (q["q50"] <= q["q90"]).all() and (q["q90"] <= q["q99"]).all()
    assert (tmp_path / "quantiles.png").stat().st_size > 0


def test_settings_follow_the_theorems():
    p = ht.load_problem()
    s = ht.theorem_settings(p, small())
    ln = math.log(4 * 300 / 0.01)
    assert s.gamma == pytest.approx(1 / (80 * p.L * ln))
    assert s.lam == pytest.approx(p.L * p.R0) and s.B == pytest.approx(p.R0 / ln)
    assert s.a == pytest.approx(36 * (2 * ln + math.sqrt(4 * ln * ln + 2 * ln)))
    # f* is the least-squares optimum: the full gradient vanishes there.
    full = np.arange(len(p.b))[None]
    assert np.linalg.norm(p.batch_grad(p.x_star[None], full)) < 1e-10


def test_a_level_never_reached_makes_clipping_the_identity():
    p = ht.load_problem()
    cfg = small(multipliers={"lam": 1e12, "B": 1e12})
    s, rec = ht.theorem_settings(p, cfg), ht.log_steps(300, 8)
    for plain, clipped in (("sgd", "clipped_sgd"), ("sstm", "clipped_sstm")):
        a, _ = ht.run_method(p, plain, s, "student_t", 8, 3, rec)
        b, share = ht.run_method(p, clipped, s, "student_t", 8, 3, rec)
        assert share == 0 and np.array_equal(a, b)


def test_heavy_tails_are_where_clipping_wins():
    summary = ht.run(small(runs=64), "/tmp/clipbench-heavytail-test")
    heavy, gauss = summary["final"]["student_t"], summary["final"]["gaussian"]
    assert heavy["clipped_sstm"]["q99"] * 5 < heavy["sstm"]["q99"]
    assert heavy["clipped_sstm"]["clip_fraction"] > 0
    # Sentences are computed from these numbers.
    assert any("Student-t noise, clipped_sstm vs sstm: clipping lowered" in v for v in summary["verdicts"])
    assert gauss["clipped_sgd"]["q99"] == pytest.approx(gauss["sgd"]["q99"], rel=0.5)


def test_bad_settings_name_the_key():
    with pytest.raises(ValueError, match="tasks.heavytail: ln"):
        ht.theorem_settings(ht.load_problem(), {**small(), "steps": 1, "beta": 0.9})
    with pytest.raises(ValueError, match="tasks.heavytail.noises"):
        ht.sample_noise("cauchy", np.random.default_rng(0), (2, 2), 1.0, 1.5)

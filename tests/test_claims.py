"""Claims: a direction only when the interval excludes 0 and the effect reaches the margin,
"practically equivalent" when the 90% interval lies inside ±margin, "cannot tell" otherwise;
and the page states exactly the sentences of report/claims.json."""
import json
import re

import pytest

from clipbench.report import claims, render
from clipbench import spec as jobspec
from tests import _reportfixture as fx


def test_decide_separates_direction_equivalence_and_doubt():
    # A tiny but consistent difference: the interval excludes 0, yet far inside the margin.
    tiny = claims.decide([-0.0015, -0.0014, -0.0014], 0.05)
    assert tiny["interval"][1] < 0 and tiny["verdict"] == "equivalent"
    assert claims.decide([0.30, 0.20, 0.25], 0.05)["verdict"] == "positive"
    assert claims.decide([-0.30, -0.20, -0.25], 0.05)["verdict"] == "negative"
    assert claims.decide([0.3, -0.2, 0.25], 0.05)["verdict"] == "undecided"  # wide interval
    # Excludes 0 but below the margin, and not inside it either: no verdict.
    assert claims.decide([0.03, 0.05, 0.04], 0.05)["verdict"] == "undecided"
    assert claims.decide([0.1], 0.05)["verdict"] == "too_few"


def test_tost_uses_the_90_percent_interval():
    d = claims.decide([0.01, 0.02, 0.015, 0.012], 0.03)
    lo95, hi95 = d["interval"]
    lo90, hi90 = d["tost_interval"]
    assert lo95 < lo90 < hi90 < hi95


def test_a_claim_record_has_the_contract_fields_and_checks_its_verdict():
    c = claims.compare("paired", "superres", ["clipped_sgd", "sgd"], "psnr", [-0.0015, -0.0014, -0.0014], 0.05,
                       "higher", "val PSNR", "clipped-SGD", "SGD", " dB")
    assert set(claims.FIELDS) <= set(c)
    assert c["verdict"] == "equivalent" and "practically equivalent" in c["sentence"]
    assert c["estimate"] == pytest.approx(-0.001433333, rel=1e-6) and c["n"] == 3 and c["margin"] == 0.05
    with pytest.raises(ValueError, match="unknown verdict"):
        claims.make("paired", "t", [], "m", 0, None, 1, 0.1, "probably", "")


def test_margins_come_from_the_config_or_the_schema():
    section = claims.margins(None)
    assert section["margins"]["psnr"] == 0.05 and section["margins"]["top1"] == 0.01
    assert claims.metric_margin(section, "psnr") == 0.05
    assert claims.metric_margin(section, "q99", 3.0) == pytest.approx(0.3)  # relative to the reference
    with pytest.raises(ValueError, match="report.margins.q99"):
        claims.metric_margin(section, "q99")


def _runs(tmp_path, final):
    """The fixture's runs with other final values (``{task: {method: [per seed]}}``)."""
    saved = dict(fx.FINAL)
    fx.FINAL.clear()
    fx.FINAL.update(final)
    try:
        return fx.make_runs(tmp_path)
    finally:
        fx.FINAL.clear()
        fx.FINAL.update(saved)


def _render(tmp_path, final, margins=None):
    made = _runs(tmp_path, final)
    config = {**made["config"], **({"report": margins} if margins else {})}
    render.build_report(made["summary_csv"], tmp_path / "report", baselines=made["baselines"], config=config,
                        manifests=made["manifests"])
    records = json.loads((tmp_path / "report" / "claims.json").read_text())["claims"]
    html = (tmp_path / "report" / "index.html").read_text().replace("&#39;", "'")
    return records, re.sub(r"\s+", " ", html)


def _twin(records, task="classification"):
    return next(c for c in records if c["kind"] == "paired" and c["task"] == task
                and c["subjects"] == ["clipped_sgd", "sgd"])


BASE = [0.50, 0.52, 0.51]


def test_tiny_consistent_differences_render_as_practically_equivalent(tmp_path):
    # clipped-SGD ahead of SGD by 1e-4 of the metric, seed by seed: consistent, and negligible.
    final = {"classification": {"sgd": BASE, "clipped_sgd": [v * (1 + 1e-4) for v in BASE]}}
    records, html = _render(tmp_path, final)
    c = _twin(records)
    assert c["interval"][0] > 0  # the 95% interval excludes 0 ...
    assert c["verdict"] == "equivalent"  # ... and still no direction is stated
    assert c["sentence"] in html and "practically equivalent" in c["sentence"]
    assert "better than SGD" not in html


def test_a_large_difference_renders_its_direction(tmp_path):
    final = {"classification": {"sgd": BASE, "clipped_sgd": [v + 0.1 for v in BASE]}}
    records, html = _render(tmp_path, final)
    c = _twin(records)
    assert c["verdict"] == "better" and c["estimate"] == pytest.approx(0.1)
    assert c["sentence"].startswith("clipped-SGD is better than SGD") and c["sentence"] in html


def test_every_verdict_sentence_on_the_page_is_a_claim(tmp_path):
    records, html = _render(tmp_path, {"classification": fx.FINAL["classification"],
                                       "segmentation": fx.FINAL["segmentation"]})
    for c in records:
        assert set(claims.FIELDS) <= set(c) and c["verdict"] in claims.VERDICTS
        assert c["sentence"] in html, c["sentence"]
    kinds = {c["kind"] for c in records}
    assert {"paired", "stability", "baseline", "clipping", "target"} <= kinds
    # The summary answers first, the banner says the data are generated.
    top = html[:html.index('id="classification"')]
    assert "Not the thesis' data" in top and "Did clipping help?" in top and "Contents" in top


def test_declared_twins_pair_and_confounded_pairs_say_so(tmp_path):
    made = _runs(tmp_path, {"classification": {"sgd": BASE, "clipped_sgd": [v + 0.1 for v in BASE], "adam": BASE}})
    methods = {"sgd": {"lr": 1e-4, "momentum": 0.99}, "adam": {"lr": 1e-4},
               "clipped_sgd": {"lr": 1e-3, "momentum": 0.99, "clipping": "coordinate", "clip_level": 0.1}}
    config = {**made["config"], "tasks": {"classification": {"methods": methods}}}
    render.build_report(made["summary_csv"], tmp_path / "report", config=config, manifests=made["manifests"])
    records = json.loads((tmp_path / "report" / "claims.json").read_text())["claims"]
    c = _twin(records)
    assert c["detail"]["confounded"] == ["lr 0.001 vs 0.0001"]
    assert c["sentence"].startswith("Confounded: clipped-SGD and its twin SGD also differ in lr 0.001 vs 0.0001")
    html = (tmp_path / "report" / "index.html").read_text()
    assert "clipped-SGD − SGD (confounded)" in html
    # A declared twin replaces the default pairing.
    methods["clipped_sgd"]["twin"] = "adam"
    render.build_report(made["summary_csv"], tmp_path / "report2", config=config, manifests=made["manifests"])
    records = json.loads((tmp_path / "report2" / "claims.json").read_text())["claims"]
    twins = [r["subjects"] for r in records if r["kind"] == "paired" and r["detail"]["relation"] == "twin"]
    assert twins == [["clipped_sgd", "adam"]]


def test_a_twin_must_be_a_method_of_the_task():
    from clipbench import config as cfgmod

    cfg = cfgmod.load("config/config.yaml")
    cfg["tasks"]["classification"]["methods"]["clipped_sgd"]["twin"] = "sgdd"
    with pytest.raises(cfgmod.ConfigError, match="tasks.classification.methods.clipped_sgd.twin: 'sgdd'"):
        cfgmod.validate(cfg)
    cfg["tasks"]["classification"]["methods"]["clipped_sgd"]["twin"] = "sgd"
    spec = jobspec.run_spec(cfgmod.validate(cfg), "classification", "clipped_sgd", 0)
    assert "twin" not in spec["method_config"]  # the report's key: no run reruns for it

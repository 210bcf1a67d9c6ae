"""The report as a scientific result, on runs whose numbers are known (tests/_reportfixture.py):
intervals over seeds, paired differences, stability, time to target, baselines, flags,
provenance and the gradient-noise section."""
import re

import pytest

from clipbench.report import compare, dynamics, render
from tests._reportfixture import make_runs


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("science")
    fx = make_runs(root)
    render.build_report(fx["summary_csv"], root / "report", baselines=fx["baselines"], config=fx["config"],
                        manifests=fx["manifests"], noise=fx["noise"], heavytail=fx["heavytail"])
    return {**fx, "root": root, "out": root / "report",
            "html": (root / "report" / "index.html").read_text(), "tex": (root / "report" / "report.tex").read_text()}


def _text(html: str) -> str:
    """The page's visible text, roughly: tags dropped, whitespace collapsed."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def test_paired_table_pairs_twins_and_the_best_once(built):
    table = compare.paired_table(built["summary"], "classification")
    assert table["best"] == "clipped_sgd" and table["n_seeds"] == 3
    labels = [r["label"] for r in table["rows"]]
    assert labels == ["clipped-SGD − SGD", "clipped-SSTM − SSTM", "SSTM − clipped-SGD",
                      "clipped-SSTM − clipped-SGD", "Adam − clipped-SGD"]
    first = table["rows"][0]["claim"]
    assert first["estimate"] == pytest.approx(0.055) and first["interval"][0] > 0 and first["n"] == 3
    assert first["verdict"] == "better" and first["sentence"].startswith("clipped-SGD is better than SGD")
    assert "these seeds cannot tell" in table["rows"][1]["claim"]["sentence"]  # +0.003 with a wide interval
    assert "these seeds cannot tell" in table["rows"][4]["claim"]["sentence"]  # Adam's seeds spread widely


def test_page_states_intervals_power_and_the_sentences(built):
    for text in (_text(built["html"]), built["tex"]):
        assert "95% t interval" in text.replace(r"95\%", "95%")
        assert "little power" in text and "run.seeds" in text
    html = _text(built["html"])
    assert "0.565 ± 0.012" in html  # clipped-SGD's top-1: mean ± t half-width
    assert "40.0% 0.900 0.2% 3 ok" in html  # clipped-SGD's telemetry: steps clipped, scale, entries clamped
    assert "45.0% 40.0% (40.0%–40.0%)" in html  # predicted before training (clip_plan.json) beside measured
    for row in compare.paired_table(built["summary"], "segmentation")["rows"]:
        assert row["claim"]["sentence"] in html.replace("&#39;", "'")


def test_baseline_rows_and_flags(built):
    html = _text(built["html"])
    for label in ("chance (no training)", "background everywhere (no training)", "bicubic (no training)"):
        assert label in html
    rows = {r["method"]: r for r in _rows(built, "segmentation")}
    assert any("practically equivalent on val mIoU" in f and "predicting background" in f
               for f in rows["clipped_sstm"]["flags"])
    assert any("predicting background" in f for f in rows["sstm"]["flags"])
    assert not rows["sgd"]["flags"] and not rows["adam"]["flags"]
    assert any("behaved as its unclipped twin, SSTM" in f for f in rows["clipped_sstm"]["flags"])
    sr = {r["method"]: r for r in _rows(built, "superres")}
    assert any("bicubic" in f for f in sr["sstm"]["flags"]) and not sr["adam"]["flags"]
    assert "Adam is better than bicubic" in html
    assert "behaved as its unclipped twin" in html


def _rows(built, task):
    from clipbench.report import tables

    rows = tables.final_table(built["summary"], task)
    records = compare.baseline_claims(built["summary"], task, tables.baseline_rows(built["baselines"], task)) + \
        compare.clipping_claims(built["summary"], task)
    compare.flag_rows(rows, records)
    return rows


def test_stability_from_the_numbers(built):
    from clipbench.report.collect import load_histories

    history = load_histories(built["runs"])
    st = dynamics.stability(history, "classification")
    by = {r["method"]: r for r in st["rows"]}
    assert by["sgd"]["loss_sd"]["mean"] > by["clipped_sgd"]["loss_sd"]["mean"]  # the fixture's SGD is noisier
    sentences = [p["claim"]["sentence"] for p in st["pairs"]]
    assert len(sentences) == 4  # two twins x two measures
    loss = next(p["claim"] for p in st["pairs"] if p["a"] == "clipped_sgd" and p["measure"] == "loss_sd")
    assert loss["estimate"] < 0
    # The margin is a share of the twin's value (SGD's sd x 0.1), never below the loss's own margin.
    assert loss["margin"] == pytest.approx(max(0.1 * by["sgd"]["loss_sd"]["mean"], 0.01))
    tv = next(p["claim"] for p in st["pairs"] if p["a"] == "clipped_sgd" and p["measure"] == "total_variation")
    assert tv["margin"] >= 0.01  # top-1's margin: a curve that barely moves gives no direction
    assert loss["verdict"] in ("less", "undecided")
    assert loss["sentence"].startswith("clipped-SGD oscillates less than SGD" if loss["verdict"] == "less"
                                       else "clipped-SGD vs SGD")
    for s in sentences:
        assert s in built["html"].replace("&#39;", "'")
    assert (built["out"] / "figures" / "stability.png").stat().st_size > 1000
    assert "data:image/svg+xml;base64," in built["html"]  # the stability figure, inline


def test_time_to_target_shows_not_reached_and_wall_time(built):
    from clipbench.report.collect import epoch_wall_times, load_histories

    ttt = dynamics.time_to_target(load_histories(built["runs"]), built["summary"], epoch_wall_times(built["runs"]),
                                  "classification")
    assert ttt["best"] == pytest.approx(0.565) and ttt["target"] == pytest.approx(0.5 * 0.565)  # no baseline given
    with_base = dynamics.time_to_target(load_histories(built["runs"]), built["summary"],
                                        epoch_wall_times(built["runs"]), "classification", baseline=0.1)
    assert with_base["target"] == pytest.approx(0.1 + 0.5 * (0.565 - 0.1))
    ttt = dynamics.time_to_target(load_histories(built["runs"]), built["summary"], epoch_wall_times(built["runs"]),
                                  "classification", section={"target_share": 0.9, "relative_margin": 0.1})
    by = {r["method"]: r for r in ttt["rows"]}
    assert by["sstm"]["reached"] == 0 and by["clipped_sgd"]["reached"] == 3
    assert by["clipped_sgd"]["wall_time_s"]["mean"] == pytest.approx(2.0 * by["clipped_sgd"]["step"]["mean"] / 10)
    # Cost in training samples: Adam's steps carry 4 batches each.
    assert by["adam"]["samples"]["mean"] == pytest.approx(by["adam"]["step"]["mean"] * 4 * 8)
    verdicts = {c["subjects"][0]: c["verdict"] for c in ttt["claims"]}
    assert verdicts["sstm"] == "not_reached" and verdicts["clipped_sgd"] == "reached"
    assert "not reached" in built["html"] and "not reached" in built["tex"]


def test_figures_name_the_thesis_figure_they_regenerate(built):
    html = _text(built["html"])
    assert "Regenerates the thesis' Fig. 1" in html.replace("&#39;", "'")
    assert "Fig. 2" in html and "Fig. 3" in html and "super-resolution PSNR curves" in html
    assert "95% t band" in html
    assert "clipped-SSTM at x" not in html  # a legend entry lives in the figure, not the page
    assert "at x" in html  # SSTM's metric at x is a column


def test_thesis_unknowns_and_convention(built):
    for text in (_text(built["html"]), built["tex"]):
        assert "17,125" in text and "Batch size" in text and "Evaluation resolution" in text
        assert "unknown convention; below bicubic" in text


def test_provenance(built):
    from clipbench.report import provenance

    digest = provenance.config_digest(built["config"])
    for text in (built["html"], built["tex"]):
        assert digest in text
        for m in provenance.manifest_digests(built["manifests"]):
            assert m["sha256"] in text
        assert "2.14.1" in text  # torch, as the runs recorded it
    git = provenance.git_state()
    if git["commit"]:
        assert git["commit"] in built["html"] and ("tree dirty" in built["html"] or "tree clean" in built["html"])
    assert re.search(r"<details><summary>Resolved config</summary><pre>run:", built["html"])
    assert (built["out"] / "config.resolved.yaml").read_text().startswith("run:")
    with pytest.raises(FileNotFoundError, match="manifest not found"):
        provenance.manifest_digests([built["root"] / "nope" / "manifest.json"])


def test_gradient_noise_section(built):
    html = _text(built["html"])
    assert "Gradient noise" in html
    assert "The gradient noise of segmentation is heavy-tailed (alpha 1.4)." in html
    assert "clip_level" in html and "40.0% (40.0%–40.0%)" in html  # resolved level and measured share
    assert "Under heavy-tailed noise the q99 of clipped-SSTM is 10 times below that of SSTM." in html
    assert (built["out"] / "figures" / "noise" / "segmentation" / "norms.png").is_file()
    assert (built["out"] / "figures" / "heavytail_quantiles.png").is_file()
    assert r"\includegraphics[width=0.8\linewidth]{figures/noise/segmentation/norms.png}" in built["tex"]


def test_noise_section_absent_without_outputs(tmp_path):
    fx = make_runs(tmp_path)
    render.build_report(fx["summary_csv"], tmp_path / "report", baselines=fx["baselines"])
    html = (tmp_path / "report" / "index.html").read_text()
    assert "Gradient noise" not in html and "not given to the report" in html


def test_report_command_takes_config_manifests_and_noise(tmp_path):
    import json

    from clipbench import cli
    from clipbench.report import provenance

    fx = make_runs(tmp_path)
    out = tmp_path / "report"
    assert cli.main(["report", "--summary", str(fx["summary_csv"]), "--baselines", str(fx["baselines"]),
                     "--config-json", json.dumps(fx["config"]), "--manifests", *map(str, fx["manifests"]),
                     "--noise", str(fx["noise"]), "--heavytail", str(fx["heavytail"]), "--out", str(out)]) == 0
    html = (out / "index.html").read_text()
    assert provenance.config_digest(fx["config"]) in html and "Gradient noise" in html
    assert "The convex check" in html

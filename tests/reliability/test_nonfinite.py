"""Non-finite metrics and missing runs (issue 25, items 1 and 3): shown, counted, and kept out
of means, intervals and verdicts with the reason stated, by collect, the report and DVC's views."""
from __future__ import annotations

import json
import math
import re
import shutil

import pandas as pd
import pytest

from clipbench import cli, files
from clipbench.report import render
from tests._reportfixture import make_runs


def _set_final(run, split, metric, value) -> None:
    m = json.loads((run / "metrics.json").read_text())
    m["final"][split][metric] = value
    files.write_json(run / "metrics.json", m)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("nonfinite")
    fx = make_runs(root)
    runs = root / "runs"
    # SGD's seed 1 on super-resolution reports PSNR inf (e.g. an image matched exactly in float16):
    # counted in, it would make SGD the best method; clipped-SGD's seed 2 reports top-1 NaN.
    _set_final(runs / "superres/sgd/seed1", "val", "psnr", math.inf)
    _set_final(runs / "classification/clipped_sgd/seed2", "val", "top1", math.nan)
    shutil.rmtree(runs / "classification/adam/seed2")  # asked for by the config, never finished
    metrics = sorted(str(p) for p in runs.glob("*/*/seed*/metrics.json"))
    summary = root / "summary.csv"
    rc = cli.main(["collect", "--out", str(summary), "--dvc-metrics", str(root / "metrics.json"),
                   "--dvc-plots", str(root / "plots"), *metrics])
    assert rc == 0
    render.build_report(summary, root / "report", baselines=fx["baselines"], config=fx["config"],
                        manifests=fx["manifests"])
    return {"root": root, "summary": pd.read_csv(summary), "html": (root / "report/index.html").read_text(),
            "tex": (root / "report/report.tex").read_text(),
            "claims": json.loads((root / "report/claims.json").read_text())["claims"]}


def _text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def test_collect_keeps_the_values_and_warns(tmp_path, capsys):
    make_runs(tmp_path)
    _set_final(tmp_path / "runs/superres/sgd/seed1", "val", "psnr", math.inf)
    assert cli.main(["collect", "--out", str(tmp_path / "s.csv"), str(tmp_path / "runs/superres/sgd/seed1/metrics.json"),
                     str(tmp_path / "runs/superres/adam/seed1/metrics.json")]) == 0
    err = capsys.readouterr().err
    assert "warning: Non-finite value" in err and "SGD / seed 1: val psnr = inf" in err, err
    assert (pd.read_csv(tmp_path / "s.csv")["value"] == math.inf).any()  # shown as it was, in the data


def test_the_top_of_the_report_lists_each_value_and_run_left_out(built):
    top = _text(built["html"].split('id="summary"')[0])
    assert "Not in the numbers" in top
    assert "Super-resolution x4 (DIV2K) / SGD / seed 1: val psnr = inf" in top, top
    assert "Classification (ImageNet-100, ResNet-18) / clipped-SGD / seed 2: val top1 = nan" in top
    assert "without results, left out of every number: Classification (ImageNet-100, ResNet-18) / Adam / seed 2" in top
    assert "Not in the numbers" in built["tex"]


def test_a_non_finite_value_makes_no_method_best_and_no_mean_inf(built):
    paired = [c for c in built["claims"] if c["kind"] == "paired" and c["task"] == "superres"]
    assert paired and all(c["estimate"] is None or math.isfinite(c["estimate"]) for c in paired)
    best = {c["subjects"][1] for c in paired if (c.get("detail") or {}).get("relation") == "best"}
    assert best == {"adam"}, best  # adam's 28.9 mean, not SGD's inf
    sgd_twin = next(c for c in paired if c["subjects"] == ["clipped_sgd", "sgd"])
    assert sgd_twin["n"] == 2 and "Left out: SGD seed 1: val psnr = inf (non-finite)" in sgd_twin["sentence"]
    section = _text(built["html"].split('id="superres"')[1].split("<h2")[0])
    assert not re.search(r"(inf|nan) ±|± (inf|nan)|\(inf\)|i\.e\. inf", section), section


def test_rows_count_the_seeds_their_means_use(built):
    text = _text(built["html"])
    assert "2 of 3 seed 1: val psnr = inf (non-finite)" in text
    assert "2 of 3 seed 2: val top1 = nan (non-finite)" in text
    assert "2 of 3 seed 2: no results" in text  # classification Adam
    targets = [c for c in built["claims"] if c["kind"] == "target"]
    # The target comes from finite means, so no sentence reads "(inf), i.e. inf"; only the note says inf.
    assert targets and all(math.isfinite(c["detail"].get("step") or 0) for c in targets)
    assert not any(re.search(r"\(inf\)|i\.e\. inf", c["sentence"].split(" Left out:")[0]) for c in targets)


def test_dvc_views_hold_finite_numbers_only(built):
    text = (built["root"] / "metrics.json").read_text()
    assert "Infinity" not in text and "NaN" not in text
    assert json.loads(text)["superres"]["sgd"]["val_psnr"] == pytest.approx((28.5 + 28.4) / 2, rel=1e-9)

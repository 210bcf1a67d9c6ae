import json

import pandas as pd
import pytest

from clipbench.report import collect, render
from tests._reportfixture import fake_run


@pytest.fixture
def runs(tmp_path):
    root = tmp_path / "runs"
    made = [fake_run(root, "classification", m, s) for m in ("sgd", "clipped_sstm") for s in (0, 1)]
    made.append(fake_run(root, "segmentation", "adam", 0))
    made.append(fake_run(root, "segmentation", "clipped_sgd", 0, status="diverged"))
    return made


def test_collect_is_tidy(runs, tmp_path):
    df = collect.collect(runs, tmp_path / "summary.csv")
    assert list(df.columns[:6]) == ["task", "method", "seed", "split", "metric", "value"]
    assert len(df[(df.task == "classification") & (df.split == "val")]) == 4
    assert set(df[df.split == "run"].method) == {"clipped_sstm", "clipped_sgd"}
    diverged = df[(df.method == "clipped_sgd") & (df.split != "run")]
    assert len(diverged) == 1 and diverged.iloc[0]["status"] == "diverged" and pd.isna(diverged.iloc[0]["value"])
    assert pd.read_csv(tmp_path / "summary.csv").shape == df.shape


def test_dvc_views(runs, tmp_path):
    df = collect.collect(runs, tmp_path / "summary.csv")
    collect.dvc_views(df, collect.load_histories(runs), tmp_path / "metrics.json", tmp_path / "plots")
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["classification"]["sgd"]["val_top1"] == pytest.approx(0.62)
    # Long: one row per epoch and method, so dvc.yaml's plot spec names no method.
    long = pd.read_csv(tmp_path / "plots" / "classification_val_top1.csv")
    assert list(long.columns) == ["epoch", "method", "value"]
    assert sorted(set(long.method)) == ["clipped_sstm", "sgd"] and sorted(set(long.epoch)) == [1, 2]


def test_report_shows_runs_thesis_values_and_divergence(runs, tmp_path):
    collect.collect(runs, tmp_path / "summary.csv")
    written = render.build_report(tmp_path / "summary.csv", tmp_path / "report")
    html = (tmp_path / "report" / "index.html").read_text()
    assert "clipped-SSTM" in html and "0.620 ± 0.000" in html
    assert "1 diverged" in html
    assert "12.5%" in html and "0.750" in html  # clipping telemetry of the clipped methods
    assert "0.466" in html  # the thesis' Adam mIoU beside ours
    assert html.count("data:image/png;base64,") == 2  # one figure per (task, metric)
    tex = (tmp_path / "report" / "report.tex").read_text()
    assert r"clipped-SGD" in tex and r"\includegraphics" in tex and "val mIoU" in tex
    assert (tmp_path / "report" / "figures" / "classification_top1.png").stat().st_size > 1000
    assert tmp_path / "report" / "index.html" in written

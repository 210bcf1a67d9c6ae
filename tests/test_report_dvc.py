"""DVC's view of the results: a readable metrics table, params from the config, one line per method."""
import json
import os
import shutil
import subprocess

import pytest
import yaml

from clipbench.report import collect
from tests._reportfixture import make_runs

DVC = shutil.which("dvc")


def test_dvc_yaml_declares_metrics_params_and_plots(repo):
    spec = yaml.safe_load((repo / "dvc.yaml").read_text())
    train = spec["stages"]["train"]
    metrics = [next(iter(m)) for m in train["metrics"]]
    assert metrics == ["results/metrics.json", "results/metrics"]  # not the plot CSVs: they are outs
    assert "results/plots" in [next(iter(o)) for o in train["outs"]]
    # Which config runs is a param (params.yaml `configfile`); that file's keys are the params.
    for stage in ("prepare", "train", "report"):
        assert {"${configfile}": None} in spec["stages"][stage]["params"]
        assert "--configfile ${configfile}" in spec["stages"][stage]["cmd"]
    assert (repo / yaml.safe_load((repo / "params.yaml").read_text())["configfile"]).is_file()
    # The plots name no method: the template colours the lines by the data's `method` column.
    (plots,) = spec["plots"]
    assert plots["results/plots"] == {"template": ".dvc/plots/by_method.json", "x": "epoch", "y": "value"}
    text = (repo / "dvc.yaml").read_text()
    assert not any(f" {m}" in text or f"[{m}" in text for m in ("sgd", "clipped_sgd", "sstm", "clipped_sstm", "adam"))
    template = json.loads((repo / ".dvc/plots/by_method.json").read_text())
    assert template["encoding"]["color"]["field"] == "method"


def test_the_metrics_and_plots_dvc_compares_are_not_git_ignored(repo):
    """Committed with the code, they are what `dvc metrics diff` / `dvc exp show` read at a commit."""
    kept = ["results/metrics.json", "results/metrics/classification/sgd.json", "results/plots/classification_val_loss.csv"]
    ignored = ["results/summary.csv", "results/runs/classification/sgd/seed0/metrics.json", "report/index.html"]
    proc = subprocess.run(["git", "check-ignore", "--no-index", *kept, *ignored], cwd=repo, capture_output=True, text=True)
    assert proc.stdout.split() == ignored


def test_dvc_links_large_archives_instead_of_copying(repo):
    import configparser

    cfg = configparser.ConfigParser()
    cfg.read_string((repo / ".dvc/config").read_text())
    types = [t.strip() for t in cfg["cache"]["type"].strip('"').split(",")]
    assert types[:3] == ["reflink", "hardlink", "symlink"]  # copy only as the last resort


def test_plot_csvs_are_long_one_row_per_epoch_and_method(tmp_path):
    import pandas as pd

    fx = make_runs(tmp_path / "fx")
    collect.dvc_views(fx["summary"], collect.load_histories(fx["runs"]), tmp_path / "metrics.json", tmp_path / "plots")
    df = pd.read_csv(tmp_path / "plots/classification_val_top1.csv")
    assert list(df.columns) == ["epoch", "method", "value"]
    assert set(df["method"]) == {"sgd", "clipped_sgd", "sstm", "clipped_sstm", "adam"}
    assert not df.duplicated(["epoch", "method"]).any()
    # metrics.json: the main metric of each task per method, for `dvc exp show`'s columns.
    main = json.loads((tmp_path / "metrics.json").read_text())
    assert main["classification"]["sgd"].keys() == {"val_top1"}
    assert main["segmentation"]["sgd"].keys() == {"val_miou"}
    assert main["superres"]["sgd"].keys() == {"val_psnr"}


@pytest.mark.skipif(DVC is None, reason="dvc is not installed")
def test_dvc_metrics_show_is_one_row_per_task_and_method(repo, tmp_path):
    fx = make_runs(tmp_path / "fx")
    work = tmp_path / "work"
    work.mkdir()
    collect.dvc_views(fx["summary"], collect.load_histories(fx["runs"]), work / "results/metrics.json",
                      work / "results/plots", metrics_dir=work / "results/metrics")
    train = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]["train"]
    (work / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"train": {"cmd": "true", "metrics": train["metrics"]}}}))
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    for cmd in (["git", "init", "-q"], [DVC, "init", "-q"]):
        subprocess.run(cmd, cwd=work, check=True, env=env)
    proc = subprocess.run([DVC, "metrics", "show", "--json"], cwd=work, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    (shown,) = [rev["data"] for rev in json.loads(proc.stdout).values()]  # the workspace (key varies by version)
    assert set(shown) == {"results/metrics.json"} | {f"results/metrics/{t}/{m}.json"
                                                     for t in ("classification", "segmentation", "superres")
                                                     for m in ("sgd", "clipped_sgd", "sstm", "clipped_sstm", "adam")}
    values = shown["results/metrics/classification/clipped_sgd.json"]["data"]
    assert values == {"val_top1": pytest.approx(0.565), "val_loss": pytest.approx(1.435)}


@pytest.mark.skipif(DVC is None, reason="dvc is not installed")
def test_dvc_plots_show_draws_a_line_per_method_without_warnings(repo, tmp_path):
    """dvc.yaml's plots and template as they are, on the collected curves: no 'could not find
    provided field' warning, and every method of the data in each plot, by its `method` column."""
    fx = make_runs(tmp_path / "fx")
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    for cmd in (["git", "init", "-q"], [DVC, "init", "-q"]):
        subprocess.run(cmd, cwd=work, check=True, env=env)
    collect.dvc_views(fx["summary"], collect.load_histories(fx["runs"]), work / "results/metrics.json",
                      work / "results/plots")
    spec = yaml.safe_load((repo / "dvc.yaml").read_text())
    (work / "dvc.yaml").write_text(yaml.safe_dump({"plots": spec["plots"]}))
    (work / ".dvc/plots").mkdir()
    shutil.copy(repo / ".dvc/plots/by_method.json", work / ".dvc/plots/by_method.json")
    proc = subprocess.run([DVC, "plots", "show", "--json"], cwd=work, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "WARNING" not in proc.stderr and "could not find" not in proc.stderr + proc.stdout, proc.stderr
    plots = json.loads(proc.stdout)["data"]
    curve = plots["results/plots/classification_val_top1.csv"][0]["content"]
    assert curve["encoding"]["color"]["field"] == "method"
    assert {v["method"] for v in curve["data"]["values"]} == {"sgd", "clipped_sgd", "sstm", "clipped_sstm", "adam"}

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
    assert metrics == ["results/metrics"]  # not the plot CSVs: they are outs
    assert "results/plots" in [next(iter(o)) for o in train["outs"]]
    for stage in ("train", "report"):
        assert {"config/config.yaml": None} in spec["stages"][stage]["params"]
    (plots,) = spec["plots"]
    assert set(plots["results/plots"]["y"]) >= {"sgd", "clipped_sgd", "sstm", "clipped_sstm", "adam"}


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
    assert set(shown) == {f"results/metrics/{t}/{m}.json" for t in ("classification", "segmentation", "superres")
                          for m in ("sgd", "clipped_sgd", "sstm", "clipped_sstm", "adam")}
    values = shown["results/metrics/classification/clipped_sgd.json"]["data"]
    assert values == {"val_top1": pytest.approx(0.565), "val_loss": pytest.approx(1.435)}

"""A new task goes through train, collect and report with nothing in src/ or workflow/ edited:
one module (tests/_plugintask.py), its config block, and its schema block (in its INFO)."""
import json
import subprocess
from pathlib import Path

import pytest
import yaml

from clipbench import cli
from clipbench import config as cfgmod
from clipbench.tasks import registry

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def toy():
    from tests._plugintask import INFO

    registry.register(INFO)
    yield INFO
    registry.unregister(INFO.name)


def _config(tmp_path) -> Path:
    cfg = {
        "run": {"tasks": ["toy"], "methods": ["sgd", "clipped_sgd"], "seeds": [0]},
        "engine": {"device": "cpu", "threads": 1, "dvclive": False},
        "tasks": {"toy": {"epochs": 2, "batch_size": 8, "methods": {
            "sgd": {"lr": 0.1, "momentum": 0.9}, "clipped_sgd": {"lr": 0.1, "momentum": 0.9, "clip_level": 0.5}}}},
    }
    path = tmp_path / "toy.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_registered_task_is_known_everywhere(toy):
    assert "toy" in registry.names() and "toy" in registry.with_baseline()
    assert cfgmod.full_schema()["properties"]["tasks"]["properties"]["toy"] == toy.schema
    assert cfgmod.with_task_defaults("toy", {"epochs": 1})["dim"] == 6  # defaults from its schema block
    with pytest.raises(cfgmod.ConfigError, match=r"tasks\.toy: .*'dimm' was unexpected"):
        cfgmod.validate({"run": {"tasks": ["toy"], "methods": ["sgd"], "seeds": [0]},
                         "tasks": {"toy": {"epochs": 1, "batch_size": 2, "dimm": 3, "methods": {"sgd": {"lr": 1}}}}})


def test_unregistered_task_is_refused(default_config):
    default_config["run"]["tasks"] = ["toy"]
    with pytest.raises(cfgmod.ConfigError, match=r"run\.tasks\.0: 'toy' is not one of"):
        cfgmod.validate(default_config)


def test_new_task_trains_collects_and_reports(toy, tmp_path, capsys):
    from tests._torchstate import restore_torch_globals, torch_globals

    configfile = _config(tmp_path)
    runs = tmp_path / "results" / "runs"
    saved = torch_globals()
    try:
        for method in ("sgd", "clipped_sgd"):
            assert cli.main(["train", "--configfile", str(configfile), "--task", "toy", "--method", method,
                             "--seed", "0", "--out", str(runs / "toy" / method / "seed0")]) == 0
    finally:
        restore_torch_globals(saved)
    metrics = json.loads((runs / "toy/clipped_sgd/seed0/metrics.json").read_text())
    assert metrics["status"] == "ok" and metrics["main_metric"] == "top1"
    assert "clip_fraction" in metrics["telemetry"]

    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"root": str(tmp_path)}))
    baselines = tmp_path / "results" / "baselines"
    assert cli.main(["baseline", "toy", "--configfile", str(configfile), "--data", str(manifest),
                     "--out", str(baselines / "toy.json")]) == 0
    summary = tmp_path / "results" / "summary.csv"
    assert cli.main(["collect", "--runs", str(runs), "--out", str(summary)]) == 0
    assert cli.main(["report", "--summary", str(summary), "--baselines", str(baselines),
                     "--out", str(tmp_path / "report")]) == 0
    html = (tmp_path / "report" / "index.html").read_text()
    for shown in (toy.label, toy.notes[0], "chance (no training)", "clipped-SGD"):
        assert shown in html


def test_adding_it_edited_nothing_in_the_package_or_workflow():
    """The toy task lives in tests/ only: the package and the workflow never name it."""
    hits = subprocess.run(["git", "grep", "-l", "-w", "toy", "--", "src", "workflow", "Snakefile"], cwd=REPO,
                          capture_output=True, text=True).stdout.split()
    assert hits == []

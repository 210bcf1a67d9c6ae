"""The task registry: one list of tasks, read without torch, that everything else derives from."""
import subprocess
import sys

import pytest

from clipbench import cli
from clipbench import config as cfgmod
from clipbench.report import names, tables
from clipbench.tasks import registry


def test_package_tasks_are_one_literal_table():
    assert registry.names() == list(registry.TASKS) == ["classification", "segmentation", "superres"]
    assert all(name == info.name for name, info in registry.TASKS.items())
    sr = registry.get("superres")
    assert (sr.module, sr.dataset, sr.main_metric, sr.baseline) == ("clipbench.tasks.superres", "div2k", "psnr",
                                                                    "bicubic_baseline")
    assert registry.with_baseline() == ["classification", "segmentation", "superres"]


def test_report_cli_and_schema_derive_from_it():
    assert tables.metric_names([{"metrics": {"loss": 1, "miou": 2}}], "segmentation") == ["miou", "loss"]
    assert names.task_label("classification") == registry.get("classification").label
    assert names.task_notes("segmentation") == list(registry.get("segmentation").notes)
    assert names.task_label("unknown") == "unknown" and names.main_metric("unknown") is None
    assert cfgmod.full_schema()["properties"]["run"]["properties"]["tasks"]["items"]["enum"] == registry.names()
    with pytest.raises(SystemExit):
        cli.main(["baseline", "convex", "--data", "m.json", "--out", "b.json"])  # no such task


def test_a_registered_task_needs_its_module_and_schema():
    with pytest.raises(ValueError, match="needs module= and schema="):
        registry.register(registry.TaskInfo(name="half", label="h", main_metric="m"))
    with pytest.raises(ValueError, match="one of clipbench's own"):
        registry.unregister("superres")


def test_config_cli_and_report_import_no_torch():
    code = ("import sys, clipbench.config, clipbench.cli, clipbench.report.render, clipbench.tasks;"
            "clipbench.tasks.registry.names(); assert 'torch' not in sys.modules, 'torch imported'")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_task_defaults_are_the_schemas():
    """The code keeps no defaults of its own: a hand-written spec gets the schema's."""
    block = cfgmod.full_schema()["properties"]["tasks"]["properties"]["superres"]["properties"]
    filled = cfgmod.with_task_defaults("superres", {"epochs": 1})
    assert filled["repeat"] == block["repeat"]["default"] == 20
    assert filled["epochs"] == 1 and "methods" not in filled


def test_each_task_and_dataset_keeps_its_config_block_beside_its_code(repo):
    from clipbench.data.datasets import DATASETS

    assert sorted(p.stem for p in (repo / "src/clipbench/tasks/schemas").glob("*.yaml")) == sorted(registry.TASKS)
    assert cfgmod.dataset_names() == sorted(DATASETS)
    blocks = cfgmod.full_schema()["properties"]["tasks"]["properties"]
    for name, info in registry.TASKS.items():
        assert blocks[name]["properties"]["dataset"]["enum"] == [info.dataset]
    cfg = cfgmod.load(repo / "config/config.yaml")
    cfg["engine"]["loaders"] = {"segmentaton": {"num_workers": 2}}
    with pytest.raises(cfgmod.ConfigError, match="engine.loaders"):
        cfgmod.validate(cfg)
    cfg = cfgmod.load(repo / "config/config.yaml")
    cfg["tasks"]["superres"]["pach_size"] = 8
    with pytest.raises(cfgmod.ConfigError, match="src/clipbench/tasks/schemas/superres.yaml"):
        cfgmod.validate(cfg)


def test_the_workflow_names_no_task_model_or_dataset(repo):
    """Tasks, their models, datasets and weights are named in the package only; the workflow
    gets them from the config and the registry (docs/adding-a-task.md edits no workflow file)."""
    from clipbench.data.datasets import DATASETS

    blocks = cfgmod.full_schema()["properties"]["tasks"]["properties"]
    names = set(registry.TASKS) | set(DATASETS) | {"imagenet", "voc", "div2k", "vgg16", "resnet", "edsr", "fcn"}
    for block in blocks.values():
        names |= set(block["properties"]["model"]["enum"])
    for info in registry.TASKS.values():
        names |= set(info.weights.values())
    hits = subprocess.run(["git", "grep", "-n", "-i", "-E", r"\b(" + "|".join(sorted(names)) + r")", "--",
                           "workflow", "Snakefile"], cwd=repo, capture_output=True, text=True).stdout
    assert hits == "", hits

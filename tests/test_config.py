import copy

import pytest
import yaml

from clipbench import config as cfgmod
from clipbench import spec as jobspec


def test_default_config_is_valid_and_gets_defaults(default_config):
    cfg = cfgmod.validate(copy.deepcopy(default_config))
    assert cfg["engine"]["fail_on_divergence"] is False
    assert cfg["tasks"]["classification"]["methods"]["sgd"]["batch_multiplier"] == 1
    assert cfg["tasks"]["classification"]["methods"]["clipped_sstm"]["nu"] == 1.0


def test_thesis_config_overrides_default(repo):
    cfg = cfgmod.load(repo / "config/config.yaml", repo / "config/thesis.yaml")
    methods = cfg["tasks"]["classification"]["methods"]
    assert methods["sgd"] == {"lr": 1e-4, "momentum": 0.99, "nesterov": False, "weight_decay": 0.0, "batch_multiplier": 1}
    assert methods["clipped_sgd"]["clipping"] == "coordinate" and methods["clipped_sgd"]["clip_level"] == 0.1
    assert methods["clipped_sstm"]["a"] == 1e5 and methods["clipped_sstm"]["L"] == 10
    assert methods["clipped_sstm"]["batch_multiplier"] == 2
    assert methods["adam"]["batch_multiplier"] == 4
    assert cfg["tasks"]["classification"]["image_size"] == 224


@pytest.mark.parametrize("mutate, key", [
    (lambda c: c["run"]["methods"].append("lion"), "run.methods.5"),
    (lambda c: c["tasks"]["classification"]["methods"]["sgd"].update(lr=-0.1), "tasks.classification.methods.sgd.lr"),
    (lambda c: c["tasks"]["classification"]["methods"]["sgd"].update(lrr=0.1), "tasks.classification.methods.sgd"),
    (lambda c: c["tasks"]["classification"].update(epochz=3), "tasks.classification"),
    (lambda c: c["tasks"]["classification"].update(batch_size="32"), "tasks.classification.batch_size"),
    (lambda c: c["tasks"]["classification"]["methods"]["clipped_sgd"].update(clipping="global"),
     "tasks.classification.methods.clipped_sgd.clipping"),
    (lambda c: c["run"].update(seeds=[-1]), "run.seeds.0"),
    (lambda c: c.update(enigne={}), "<top level>"),
])
def test_bad_config_names_the_key(default_config, mutate, key):
    cfg = copy.deepcopy(default_config)
    mutate(cfg)
    with pytest.raises(cfgmod.ConfigError) as err:
        cfgmod.validate(cfg)
    assert key in str(err.value)


def test_typo_message_says_which_key(default_config):
    cfg = copy.deepcopy(default_config)
    cfg["tasks"]["classification"]["methods"]["sgd"]["lrr"] = 0.1
    with pytest.raises(cfgmod.ConfigError, match="'lrr' was unexpected"):
        cfgmod.validate(cfg)


def test_run_matrix_needs_settings(default_config):
    cfg = copy.deepcopy(default_config)
    del cfg["tasks"]["classification"]["methods"]["adam"]
    with pytest.raises(cfgmod.ConfigError, match=r"tasks\.classification\.methods\.adam"):
        cfgmod.validate(cfg)


def test_load_reports_missing_and_broken_files(tmp_path):
    with pytest.raises(cfgmod.ConfigError, match="not found"):
        cfgmod.load(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("run: [unclosed\n")
    with pytest.raises(cfgmod.ConfigError, match="bad.yaml is not valid YAML"):
        cfgmod.load(bad)


def test_run_spec_holds_only_the_run(default_config):
    cfg = cfgmod.validate(copy.deepcopy(default_config))
    spec = jobspec.run_spec(cfg, "classification", "adam", 3)
    assert spec["seed"] == 3 and spec["method"] == "adam"
    assert spec["method_config"]["lr"] == 1e-3
    assert "methods" not in spec["task_config"]
    assert spec["dataset"] == "imagenet100" and spec["dataset_config"]["source"] == "synthetic"
    # The engine's keys ride along in the method's config; the optimizer builder drops them.
    from clipbench.optim.build import ENGINE_KEYS

    assert {k: v for k, v in spec["method_config"].items() if k in ENGINE_KEYS} == {"batch_multiplier": 4}


def test_deep_merge_is_key_by_key():
    merged = cfgmod.deep_merge({"a": {"b": 1, "c": 2}, "d": [1]}, {"a": {"c": 3}, "d": [2]})
    assert merged == {"a": {"b": 1, "c": 3}, "d": [2]}


def test_schema_file_is_what_the_package_reads(repo):
    assert cfgmod.load_schema() == yaml.safe_load((repo / "workflow/schemas/config.schema.yaml").read_text())


def test_an_unknown_task_is_refused_naming_the_known_ones(default_config):
    cfg = copy.deepcopy(default_config)
    cfg["run"]["tasks"] = ["denoise"]
    with pytest.raises(cfgmod.ConfigError, match="run.tasks") as err:
        cfgmod.validate(cfg)
    assert "classification" in str(err.value)


@pytest.mark.parametrize("extra", [[], ["config/thesis.yaml"]])
def test_one_validation_fills_every_default_snakemake_would(repo, extra, tmp_path):
    """The Snakefile validates once, with clipbench's check; Snakemake's own validate (with
    set_default) would add nothing on top of it. The schema file's run.methods lists the
    thesis' methods only (clipbench's check adds the config's own arms, which name their
    optimizer class and have no schema defaults), so those arms are left out here."""
    snakemake_utils = pytest.importorskip("snakemake.utils")
    cfg = cfgmod.load(repo / "config/config.yaml", *[repo / e for e in extra])
    own = set(cfgmod.custom_methods(cfg))
    cfg["run"]["methods"] = [m for m in cfg["run"]["methods"] if m not in own]
    cfg["run"]["only"] = {m: t for m, t in (cfg["run"].get("only") or {}).items() if m not in own}
    for task in cfg["tasks"].values():
        if isinstance(task.get("methods"), dict):
            task["methods"] = {m: c for m, c in task["methods"].items() if m not in own}
    ours = copy.deepcopy(cfg)
    # The schema file with the tasks' and datasets' own blocks put in, the task names as the
    # registry's, and run.methods the thesis' (the file's list).
    schema = cfgmod.full_schema()
    schema["properties"]["run"]["properties"]["methods"] = cfgmod.load_schema()["properties"]["run"]["properties"]["methods"]
    (tmp_path / "schema.yaml").write_text(yaml.safe_dump(schema, sort_keys=False))  # keys in order: "type" before "properties"
    snakemake_utils.validate(cfg, str(tmp_path / "schema.yaml"), set_default=True)
    assert cfg == ours


def test_run_only_keeps_a_method_to_some_tasks():
    cfg = cfgmod.load("config/config.yaml")
    cfg["run"]["methods"].append("clipped_sgd_matched")
    cfg["run"]["only"] = {"clipped_sgd_matched": ["classification"]}
    cfg["tasks"]["classification"]["methods"]["clipped_sgd_matched"] = {
        "optimizer": "clipbench.optim:ClippedSGD", "twin": "sgd", "lr": 0.01, "clipping": "norm", "clip_level": 1.0}
    cfg = cfgmod.validate(cfg)  # no settings needed on the tasks it does not run on
    assert "clipped_sgd_matched" in cfgmod.task_methods(cfg, "classification")
    assert "clipped_sgd_matched" not in cfgmod.task_methods(cfg, "segmentation")
    cfg["run"]["only"] = {"clipped_sgd_matched": ["classificaton"]}
    with pytest.raises(cfgmod.ConfigError, match="run.only.clipped_sgd_matched: classificaton not in run.tasks"):
        cfgmod.validate(cfg)


def test_the_thesis_config_pairs_every_clipped_arm_with_a_twin_at_its_settings():
    """Each clip-active arm differs from its declared twin only by clipping (not confounded)."""
    from clipbench.report import compare

    cfg = cfgmod.validate(cfgmod.deep_merge(cfgmod.load("config/config.yaml"), cfgmod.load("config/thesis.yaml")))
    for task in ("classification", "segmentation", "superres"):
        methods = cfgmod.task_methods(cfg, task)
        pairs = compare.twins(cfg, task, methods)
        for arm in ("clipped_sgd_active", "clipped_sstm_active") + (("clipped_sgd_matched",) if task == "classification" else ()):
            assert arm in pairs, (task, arm)
            assert compare.confounds(cfg, task, arm, pairs[arm]) == [], (task, arm)
    # The thesis-literal classification pair stays, labelled for what it is.
    assert compare.confounds(cfg, "classification", "clipped_sgd", "sgd") == ["lr 0.001 vs 0.0001"]


@pytest.mark.parametrize("old", [{"run": {"tasks": ["classification", "heavytail"]}}, {"tasks": {"heavytail": {"runs": 200}}}])
def test_the_convex_check_as_a_task_is_said_to_have_moved(default_config, old):
    cfg = cfgmod.deep_merge(default_config, old)
    with pytest.raises(cfgmod.ConfigError, match="the convex check is no longer a task: remove heavytail from "
                                                 "run.tasks and move tasks.heavytail's settings to the top-level"):
        cfgmod.validate(cfg)


def test_the_convex_check_is_a_section_of_its_own(default_config):
    cfg = cfgmod.validate(copy.deepcopy(default_config))
    assert cfg["heavytail"]["enabled"] is True and "heavytail" not in cfg["run"]["tasks"]
    off = cfgmod.validate(cfgmod.deep_merge(default_config, {"heavytail": {"enabled": False}}))
    assert off["heavytail"]["enabled"] is False

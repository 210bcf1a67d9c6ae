"""Tuning: the trials drawn the same everywhere under one budget, a held-out split of the
training data, selection, the chosen setting in the seeds' runs, the sensitivity width, the
report's section, and the workflow's plan."""
from __future__ import annotations

import copy
import math
import re
import subprocess
import sys

import pytest
import yaml


from clipbench import config as cfgmod
from clipbench import files, tuning
from clipbench.tasks import holdout_items
from clipbench import spec as jobspec

SPACE = {"sgd": {"lr": {"log_uniform": [1.0e-3, 1.0]}, "momentum": {"values": [0.0, 0.9]}},
         "clipped_sgd": {"lr": {"log_uniform": [1.0e-3, 1.0]}}}


def _config(default_config, **task_tuning) -> dict:
    cfg = copy.deepcopy(default_config)
    cfg["run"] = {"tasks": ["classification"], "methods": ["sgd", "clipped_sgd"], "seeds": [0, 1]}
    cfg["tuning"] = {"tasks": {"classification": {"trials": 6, "space": copy.deepcopy(SPACE), **task_tuning}}}
    return cfgmod.validate(cfg)


def test_random_trials_are_seeded_stratified_and_the_same_budget(default_config):
    cfg = _config(default_config)
    a = tuning.trials(cfg, "classification", "sgd")
    assert a == tuning.trials(copy.deepcopy(cfg), "classification", "sgd") and len(a) == 6
    assert len(tuning.trials(cfg, "classification", "clipped_sgd")) == 6
    # One draw in each sixth of the three decades: a small budget spans the whole range.
    strata = sorted(int((math.log10(t["lr"]) + 3) / 0.5) for t in a)
    assert strata == [0, 1, 2, 3, 4, 5]
    assert {t["momentum"] for t in a} <= {0.0, 0.9}
    other = _config(default_config, seed=1)
    assert tuning.trials(other, "classification", "sgd") != a


def test_grid_must_fill_the_budget(default_config):
    space = {"sgd": {"lr": {"log_uniform": [1.0e-3, 1.0], "points": 3}, "momentum": {"values": [0.0, 0.9]}},
             "clipped_sgd": {"lr": {"values": [0.001, 0.01, 0.1, 1.0, 3.0, 10.0]}}}
    cfg = copy.deepcopy(default_config)
    cfg["run"] = {"tasks": ["classification"], "methods": ["sgd", "clipped_sgd"], "seeds": [0]}
    cfg["tuning"] = {"tasks": {"classification": {"trials": 6, "sampler": "grid", "space": space}}}
    cfgmod.validate(cfg)
    lrs = sorted({t["lr"] for t in tuning.trials(cfg, "classification", "sgd")})
    assert lrs == [0.001, 0.0316, 1.0]
    cfg["tuning"]["tasks"]["classification"]["trials"] = 5
    with pytest.raises(cfgmod.ConfigError, match=r"space\.sgd: the grid has 6 points.*budget"):
        cfgmod.validate(cfg)


@pytest.mark.parametrize("mutate, message", [
    (lambda t: t["space"].pop("clipped_sgd"), r"tuning\.tasks\.classification\.space\.clipped_sgd: no search space"),
    (lambda t: t["space"]["sgd"].update(momentum={"uniform": [0.5, 1.5]}), r"space\.sgd: trial \d .*momentum"),
    (lambda t: t["space"]["sgd"].update(lrr={"values": [0.1]}), r"space\.sgd: trial 0 .*'lrr' was unexpected"),
    (lambda t: t["space"]["sgd"].update(lr={"log_uniform": [0.0, 1.0]}), r"tuning\.tasks\.classification\.space\.sgd\.lr"),
])
def test_bad_tuning_names_the_key(default_config, mutate, message):
    cfg = _config(default_config)
    mutate(cfg["tuning"]["tasks"]["classification"])
    with pytest.raises(cfgmod.ConfigError, match=message):
        cfgmod.validate(cfg)


def test_holdout_is_seeded_disjoint_and_never_the_validation_set(default_config, tiny_imagenet):
    kept, held = holdout_items(40, 0.2, seed=0)
    assert (kept, held) == holdout_items(40, 0.2, seed=0) and len(held) == 8
    assert not set(kept) & set(held) and sorted(kept + held) == list(range(40))
    assert holdout_items(40, 0.2, seed=1) != (kept, held)

    from clipbench.tasks import build_task

    cfg = _config(default_config)
    spec = jobspec.trial_spec(cfg, "classification", "sgd", 2)
    assert spec["method_config"]["lr"] == tuning.trials(cfg, "classification", "sgd")[2]["lr"]
    assert spec["holdout"] == {"fraction": 0.2, "seed": 0} and spec["engine"]["fail_on_divergence"] is False
    task = build_task(spec, tiny_imagenet)  # 32 training images, 16 validation images
    files = [p for p, _ in task.train_eval_set.samples]
    train_files = {files[i] for i in task.train_set.indices}
    held_files = {task.val_set.dataset.samples[i][0] for i in task.val_set.indices}
    assert len(train_files) == 26 and len(held_files) == 6 and not train_files & held_files
    assert all("/train/" in f for f in held_files)  # held out of the training data, not val/
    assert task.val_set.dataset.transform is not task.train_set.dataset.transform  # scored without augmentation
    assert task.extra["holdout"]["held_out_items"] == 6


def _trial_metrics(task, method, trial, params, value, status="ok"):
    return {"task": task, "method": method, "status": status, "main_metric": "top1",
            "final": {"val": {"top1": value}} if status == "ok" else {}, "diverged_at_step": 3 if status != "ok" else None,
            "steps": 10, "timing": {"wall_time_s": 1.0}, "spec": {"trial": {"index": trial, "params": params}}}


def test_sensitivity_width_in_decades():
    rows = [{"params": {"lr": lr}, "value": v} for lr, v in
            [(1e-3, 0.50), (1e-2, 0.80), (1e-1, 0.82), (1.0, 0.79), (10.0, None), (100.0, 0.81)]]
    s = tuning.sensitivity(rows)
    # Best 0.82 at 0.1; within 5% (>= 0.779): 0.01 .. 1; the diverged 10 breaks the range.
    assert s["range"] == [1e-2, 1.0] and s["width_decades"] == pytest.approx(2.0)
    sstm = tuning.sensitivity([{"params": {"a": 10.0}, "value": 0.7}, {"params": {"a": 100.0}, "value": 0.69}])
    assert sstm["axis"] == "1/a" and sstm["width_decades"] == pytest.approx(1.0)


def test_select_apply_and_report_section(default_config, tmp_path):
    cfg = _config(default_config)
    chosen = {}
    for method, values in (("sgd", [0.3, 0.8, None, 0.5, 0.78, 0.2]), ("clipped_sgd", [0.79, 0.8, 0.78, 0.77, 0.6, 0.79])):
        settings = tuning.trials(cfg, "classification", method)
        metrics = [_trial_metrics("classification", method, i, p, v, "ok" if v is not None else "diverged")
                   for i, (p, v) in enumerate(zip(settings, values))]
        chosen[method] = tuning.select("classification", method, metrics)
        files.write_json(tmp_path / "tuning" / "classification" / method / "chosen.json", chosen[method])
    assert chosen["sgd"]["chosen"]["trial"] == 1 and chosen["sgd"]["trials"][2]["status"] == "diverged"
    assert chosen["clipped_sgd"]["sensitivity"]["width_decades"] > chosen["sgd"]["sensitivity"]["width_decades"]

    spec = jobspec.apply_chosen(jobspec.run_spec(cfg, "classification", "sgd", 1), chosen["sgd"])
    assert spec["method_config"]["lr"] == chosen["sgd"]["chosen"]["params"]["lr"] and spec["seed"] == 1
    assert spec["tuned"]["trial"] == 1 and "holdout" not in spec  # the seeds' runs use all the training data
    with pytest.raises(tuning.TuningError, match="for classification/sgd, not classification/clipped_sgd"):
        jobspec.apply_chosen(jobspec.run_spec(cfg, "classification", "clipped_sgd", 0), chosen["sgd"])

    from clipbench.report.sections.tuning import section

    (tmp_path / "report").mkdir()
    [t] = section(tmp_path / "tuning", tmp_path / "report" / "figures", tmp_path / "report")
    assert [r["method"] for r in t["rows"]] == ["sgd", "clipped_sgd"] and t["rows"][0]["diverged"] == 1
    assert (tmp_path / "report/figures/classification_tuning.png").is_file()
    [claim] = t["claims"]
    assert claim["kind"] == "tuning" and claim["subjects"] == ["clipped_sgd", "sgd"] and claim["metric"] == "width_decades"
    assert claim["verdict"] in ("wider", "narrower", "undecided") and claim["margin"] > 0
    assert re.search(r"Within 5% of the best: clipped-SGD over [\d.]+ decades, SGD over [\d.]+ decades", claim["sentence"])


def test_all_diverged_is_a_clear_error():
    with pytest.raises(tuning.TuningError, match="all 2 trials diverged.*widen tuning.tasks.classification.space.sgd"):
        tuning.select("classification", "sgd", [_trial_metrics("classification", "sgd", i, {"lr": 1.0}, None, "diverged")
                                                for i in range(2)])


def test_thesis_with_tuning_plans_trials_selection_and_runs(repo, tmp_path):
    from tests._checkout import scratch_checkout

    checkout = scratch_checkout(tmp_path / "checkout")
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--configfile", "config/thesis.yaml",
                           "config/tuning-thesis.yaml"], cwd=checkout, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    counts = {m.group(1): int(m.group(2)) for m in
              (re.match(r"^(\w+)\s+(\d+)$", line.strip()) for line in proc.stdout.splitlines()) if m}
    run = yaml.safe_load((repo / "config/thesis.yaml").read_text())["run"]
    tuned = yaml.safe_load((repo / "config/tuning-thesis.yaml").read_text())["tuning"]["tasks"]
    only = run.get("only") or {}
    per_task = {t: sum(m not in only or t in only[m] for m in run["methods"]) for t in run["tasks"]}
    pairs = sum(per_task.values())
    assert counts["tune_trial"] == sum(tuned[t]["trials"] * n for t, n in per_task.items())
    assert counts["tune_select"] == pairs and counts["train"] == pairs * len(run["seeds"])

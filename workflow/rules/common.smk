import json

import clipbench.config as cb_config
import clipbench.tuning as cb_tuning
from clipbench.tasks import registry

# One validation, clipbench's: its messages name the offending key, and it fills in the
# schema's defaults in place, as snakemake.utils.validate(set_default=True) would.
cb_config.validate(config, source="workflow config (config/config.yaml + --configfile)")

TASKS = config["run"]["tasks"]
# The tasks that train networks: the run matrix. Others (the convex check) have a rule of their own.
TRAINED = registry.training(TASKS)
METHODS = config["run"]["methods"]
SEEDS = config["run"]["seeds"]
ENGINE = config["engine"]


wildcard_constraints:
    task="|".join(registry.names()),
    method="|".join(cb_config.methods(config)),
    dataset="[a-z0-9]+",
    seed=r"\d+",


def run_dir(task, method, seed):
    return f"results/runs/{task}/{method}/seed{seed}"


def all_runs(name):
    return [
        f"{run_dir(t, m, s)}/{name}"
        for t in TRAINED
        for m in METHODS
        for s in SEEDS
    ]


def baselines():
    """The training-free baselines of the tasks in the run matrix that have one."""
    return [f"results/baselines/{t}.json" for t in TASKS if t in registry.with_baseline()]


def dataset_of(task):
    return config["tasks"][task].get("dataset")


def manifest_for(wildcards):
    ds = dataset_of(wildcards.task)
    return [f"prepared/{ds}/manifest.json"] if ds else []


def all_manifests():
    datasets = sorted({dataset_of(t) for t in TRAINED} - {None})
    return [f"prepared/{ds}/manifest.json" for ds in datasets]


def run_spec_json(wildcards):
    spec = cb_config.run_spec(config, wildcards.task, wildcards.method, int(wildcards.seed))
    return json.dumps(spec, sort_keys=True)


def task_json(task):
    """One task's settings without its methods, as the CLI's --json/--task-json takes them."""
    return json.dumps({k: v for k, v in config["tasks"][task].items() if k != "methods"}, sort_keys=True)


def dataset_json(wildcards):
    return json.dumps(config["datasets"].get(wildcards.dataset, {}), sort_keys=True)


def uses_archives():
    """Whether a dataset in use comes from archives in data/ (then data.dvc is kept current)."""
    for ds in {dataset_of(t) for t in TRAINED} - {None}:
        cfg = config["datasets"].get(ds, {})
        if not cfg.get("root") and cfg.get("source") in ("download", "archives"):
            return True
    return False


# -- tuning (tuning.smk; config `tuning:`) --
TUNED = cb_tuning.tuned_tasks(config)


def trial_count(task):
    return int(cb_tuning.task_tuning(config, task)["trials"])


def trial_spec_json(wildcards):
    spec = cb_tuning.trial_spec(config, wildcards.task, wildcards.method, int(wildcards.trial))
    return json.dumps(spec, sort_keys=True)


def tuned_input(wildcards):
    """The chosen setting a run of run.seeds trains with, when its task is tuned."""
    if wildcards.task in TUNED:
        return {"chosen": cb_tuning.chosen_path(wildcards.task, wildcards.method)}
    return {}


def all_chosen():
    return [cb_tuning.chosen_path(t, m) for t in TUNED for m in METHODS]

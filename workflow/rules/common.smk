import json
import re

import clipbench.config as cb_config
from clipbench.tasks import registry

# One validation, clipbench's: its messages name the offending key, and it fills in the
# schema's defaults in place, as snakemake.utils.validate(set_default=True) would.
cb_config.validate(config, source="workflow config (config/config.yaml + --configfile)")

TASKS = config["run"]["tasks"]
METHODS = config["run"]["methods"]
SEEDS = config["run"]["seeds"]
ENGINE = config["engine"]


wildcard_constraints:
    task="|".join(registry.names()),
    method="|".join(cb_config.METHODS),
    dataset="[a-z0-9]+",
    seed=r"\d+",


def run_dir(task, method, seed):
    return f"results/runs/{task}/{method}/seed{seed}"


def all_runs(name):
    return [
        f"{run_dir(t, m, s)}/{name}"
        for t in TASKS
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
    datasets = sorted({dataset_of(t) for t in TASKS} - {None})
    return [f"prepared/{ds}/manifest.json" for ds in datasets]


def run_spec_json(wildcards):
    spec = cb_config.run_spec(config, wildcards.task, wildcards.method, int(wildcards.seed))
    return json.dumps(spec, sort_keys=True)


def dataset_json(wildcards):
    return json.dumps(config["datasets"].get(wildcards.dataset, {}), sort_keys=True)


def uses_archives():
    """Whether a dataset in use comes from archives in data/ (then data.dvc is kept current)."""
    for ds in {dataset_of(t) for t in TASKS} - {None}:
        cfg = config["datasets"].get(ds, {})
        if not cfg.get("root") and cfg.get("source") in ("download", "archives"):
            return True
    return False


# What the report shows beside the runs, when the workflow makes it.
def _made_by_a_rule(pattern):
    """Whether some rule of the workflow writes ``pattern`` (the report then waits for it);
    wildcard constraints ("{task,a|b}") are left out of the comparison."""
    return any(re.sub(r"\{(\w+),[^}]*\}", r"{\1}", str(o)) == pattern for r in workflow.rules for o in r.output)


def noise_inputs(wildcards):
    """Each trained task's gradient-noise diagnostics (results/noise/{task}/noise.json), unless
    the config turns them off (noise.enabled: false)."""
    if not _made_by_a_rule("results/noise/{task}/noise.json") or not config.get("noise", {}).get("enabled", True):
        return []
    return [f"results/noise/{t}/noise.json" for t in TASKS if t != "heavytail"]


def heavytail_inputs(wildcards):
    """The convex check's outputs, when the run matrix includes it."""
    if "heavytail" not in TASKS or not _made_by_a_rule("results/heavytail/summary.json"):
        return []
    return ["results/heavytail/summary.json", "results/heavytail/quantiles.csv"]

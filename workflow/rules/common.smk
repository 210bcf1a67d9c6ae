import json

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


# --- Scheduler resources of the training jobs (workflow/profiles/slurm) ---------------------
# From `resources` and engine.gpus/threads, never from the run spec: asking a cluster for more
# memory or time must not rerun a finished run nor invalidate its checkpoint.

_unknown = sorted(set(config["resources"]["tasks"]) - set(registry.names()))
if _unknown:
    raise ValueError(f"invalid workflow config: resources.tasks: unknown task {', '.join(_unknown)} "
                     f"(tasks: {', '.join(registry.names())})")


def train_resources(task):
    """gpus, gpu_model, cpus_per_task, mem_mb, runtime of one training job of `task`
    (cpus_per_task None: the rule's threads for each GPU process, see train_cpus)."""
    res = config["resources"]
    out = {"gpus": ENGINE["gpus"], "gpu_model": res["gpu_model"], "cpus_per_task": res["cpus_per_task"],
           "mem_mb": res["mem_mb"], "runtime": res["runtime"]}
    out.update(res["tasks"].get(task, {}))
    return out


def train_resource(key):
    """A rule-resource callable; an unset gpu_model is "" (the SLURM plugin then asks for any GPU)."""
    return lambda wc: train_resources(wc.task)[key] or (0 if key == "gpus" else "")


def train_cpus(wildcards, threads):
    """Cores of a training job: as configured, or the rule's threads for each process
    (torchrun starts one per GPU, each with its own threads and loader workers)."""
    res = train_resources(wildcards.task)
    return res["cpus_per_task"] or threads * max(1, res["gpus"])


def train_launcher(wildcards):
    """`clipbench`, or torchrun with one process per GPU of the job's allocation (DDP)."""
    gpus = train_resources(wildcards.task)["gpus"]
    if gpus > 1:
        # --standalone: a rendezvous on a free local port, so jobs sharing a node never collide.
        return f"torchrun --standalone --nnodes=1 --nproc_per_node={gpus} -m clipbench.cli"
    return "clipbench"

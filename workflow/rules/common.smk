import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import clipbench.config as cb_config
import clipbench.jobserver as cb_jobserver
import clipbench.runfiles as cb_runfiles
import clipbench.tuning as cb_tuning
from clipbench.tasks import registry
import clipbench.data.weights as cb_weights
import clipbench.slurm as cb_slurm
import clipbench.spec as cb_spec

# One validation, clipbench's: its messages name the offending key, and it fills in the
# schema's defaults in place, as snakemake.utils.validate(set_default=True) would.
cb_config.validate(config, source="workflow config (config/config.yaml + --configfile)")

TASKS = config["run"]["tasks"]
METHODS = config["run"]["methods"]
SEEDS = config["run"]["seeds"]
ENGINE = config["engine"]


wildcard_constraints:
    task="|".join(registry.names()),
    method="|".join(cb_config.methods(config)),
    dataset="[a-z0-9]+",
    seed=r"\d+",


run_dir = cb_runfiles.run_dir


def all_runs(name):
    return [
        f"{run_dir(t, m, s)}/{name}"
        for t in TASKS
        for m in cb_config.task_methods(config, t)
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


# Each job reads its resolved settings from a file, results/specs/<kind>/<name>.<digest>.json
# (clipbench.spec): the plan's shell lines stay short, and as the digest is in the path, a
# changed setting is a changed param that reruns exactly the jobs it touches.
def run_spec_file(wildcards):
    spec = cb_spec.train_job(config, wildcards.task, wildcards.method, int(wildcards.seed))
    return cb_spec.write("train", spec, f"{wildcards.task}-{wildcards.method}-seed{wildcards.seed}")


# The engine settings that change no number reach the jobs in the environment, never in params:
# params are what Snakemake compares to decide a rerun, and changing threads or
# checkpoint_every_steps must not retrain a finished run. (A job on a cluster parses this file
# again, so it sets the same.)
os.environ[cb_spec.RUNTIME_ENV] = json.dumps(cb_spec.runtime(config), sort_keys=True)


def task_file(task):
    """One task's settings without its methods, as the CLI's --json/--task-json takes them."""
    return cb_spec.write("task", cb_spec.task_settings(config, task), task)


def noise_reference_run(task):
    """The run whose final checkpoint the noise is measured at: noise.method, first seed."""
    return run_dir(task, cb_spec.noise_method(config), SEEDS[0])


def noise_spec_file(task):
    return cb_spec.write("noise", cb_spec.noise_job(config, task), task)


def plan_methods_file(task):
    """The task's clipped methods, with only the settings the clip plan and the measurement's
    batch multipliers depend on (a learning rate's change must not remeasure the noise)."""
    import clipbench.diagnostics.clip_plan as cb_plan

    return cb_spec.write("methods", cb_plan.clipped_methods(config["tasks"][task]["methods"]), f"{task}-clipped")


def methods_file(task):
    return cb_spec.write("methods", config["tasks"][task]["methods"], task)


def clip_plan_for(wildcards):
    """With noise diagnostics on, a task's training runs wait for its predicted clipping
    (results/noise/{task}/clip_plan.json, written by noise_init before training)."""
    if not config["noise"]["enabled"] or wildcards.task not in TASKS:
        return []
    return [f"results/noise/{wildcards.task}/clip_plan.json"]


def noise_candidates(task):
    """The runs the end-of-training noise may be measured at, in order: noise.method's (first
    seed first), then the other methods'. The first that finished is used: a diverged or failed
    reference run must not leave the task without diagnostics."""
    first = cb_spec.noise_method(config)
    methods = [first] + [m for m in cb_config.task_methods(config, task) if m != first]
    return [run_dir(task, m, s) for m in methods for s in SEEDS]


def noise_final_inputs(wildcards):
    ins = {"init": f"results/noise/{wildcards.task}/init.json",
           "plan": f"results/noise/{wildcards.task}/clip_plan.json",
           "runs": [f"{d}/metrics.json" for d in noise_candidates(wildcards.task)]}
    ins.update({"manifest": m for m in manifest_for(wildcards)})
    return ins


def noise_init_for(wildcards):
    """A run whose clip level is {quantile: q} waits for its task's noise at initialisation."""
    cfg = config["tasks"][wildcards.task]["methods"][wildcards.method]
    quantile = any(isinstance(cfg.get(k), dict) for k in ("clip_level", "B"))
    return [f"results/noise/{wildcards.task}/init.json"] if quantile else []


def all_noise():
    return [f"results/noise/{t}/noise.json" for t in TASKS] if config["noise"]["enabled"] else []


def dataset_file(wildcards):
    return cb_spec.write("dataset", config["datasets"].get(wildcards.dataset, {}), wildcards.dataset)


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
    return [f"results/noise/{t}/noise.json" for t in TASKS]


def heavytail_inputs(wildcards):
    """The convex check's outputs, when the config runs it (heavytail.enabled)."""
    if not config["heavytail"]["enabled"] or not _made_by_a_rule("results/heavytail/summary.json"):
        return []
    return ["results/heavytail/summary.json", "results/heavytail/quantiles.csv"]


# -- what a training run needs besides its dataset: pretrained weights and CPU cores --
WEIGHTS_DIR = str(cb_weights.WEIGHTS_DIR)


wildcard_constraints:
    weights_file="|".join(cb_weights.file_name(n) for n in cb_weights.NAMES),


def weights_for(wildcards):
    """The weights files a run needs as input: what its task asks for (registry.required_weights)."""
    names = registry.required_weights(wildcards.task, config["tasks"][wildcards.task])
    return [f"{WEIGHTS_DIR}/{cb_weights.file_name(n)}" for n in names]


def weights_name(wildcards):
    return cb_weights.name_of(wildcards.weights_file)


def weights_config_file(wildcards):
    return cb_spec.write("weights", config.get("weights", {}), "weights")


# --- the order jobs run in (`priority:`, higher first among the jobs ready to run) -----------
# A task's runs go before the next task's, in run.tasks order, so that its end-of-training
# noise, which waits for all of them, runs while the next task trains instead of after the
# last run, where it would hold up the report; the noise jobs go before any run.
NOISE_PRIORITY = len(TASKS) + 1


def train_priority(wildcards):
    return len(TASKS) - TASKS.index(wildcards.task) if wildcards.task in TASKS else 0


def train_threads(wildcards):
    """Cores a run asks for: engine.threads, and one per loader worker of its task plus the
    training process (engine.loaders.<task>.num_workers over engine.num_workers)."""
    own = (ENGINE.get("loaders") or {}).get(wildcards.task) or {}
    workers = own.get("num_workers")
    workers = ENGINE["num_workers"] if workers is None else workers
    return max(ENGINE["threads"], workers + 1)

# --- GPUs of a local run -------------------------------------------------------------------
# Training and tuning jobs declare `gpu` (engine.gpus or resources.tasks.<task>.gpus). Snakemake
# counts a resource against a limit only when one is given, so on a workstation every job the
# cores allow would share one GPU. Unless the user gives one (--resources gpu=N; the SLURM profile
# gives the cluster's), the limit is the GPUs this machine has.
if "gpu" not in workflow.global_resources:
    _gpus = cb_slurm.local_gpus()
    if _gpus:
        workflow.global_resources["gpu"] = _gpus
        print(f"GPU jobs at once: {_gpus} (the GPUs of this machine; --resources gpu=N to change it)",
              file=sys.stderr)


# --- Scheduler resources of the training jobs (workflow/profiles/slurm) ---------------------
# From `resources` and engine.gpus/threads, never from the run spec: asking a cluster for more
# memory or time must not rerun a finished run nor invalidate its checkpoint.

def train_resources(task):
    """gpus, gpu_model, cpus_per_task, mem_mb, runtime of one training job of `task`
    (cpus_per_task None: the rule's threads for each GPU process, see train_cpus)."""
    res = config["resources"]
    out = {"gpus": ENGINE["gpus"], "gpu_model": res["gpu_model"], "cpus_per_task": res["cpus_per_task"],
           "mem_mb": res["mem_mb"], "runtime": res["runtime"]}
    out.update(res["tasks"].get(task, {}))
    return out


def job_resources(rule):
    """What one job (training aside) asks a scheduler for, from `resources.jobs.<rule>`
    over `resources.job` (a demo's prepare asks 1 CPU; the thesis' unpacks its 150 GB of archives on 8).
    cpus_per_task null: the rule's threads."""
    res = config["resources"]
    want = {**res["job"], **res["jobs"].get(rule, {})}
    return {k: v for k, v in want.items() if v is not None}


def check_slurm_requests():
    """Where jobs go to SLURM, a request no node of its partition can hold would pend forever
    (reason PartitionConfig) with Snakemake waiting in silence: stop before submitting any."""
    if workflow.executor_plugin is None or workflow.executor_plugin.name != "slurm":
        return
    problems = cb_slurm.check_jobs((job.rule.name, dict(job.resources)) for job in workflow.dag.needrun_jobs())
    if problems:
        raise WorkflowError("no job was submitted:\n" + "\n".join(problems))


def say_what_failed():
    """After a workflow that went on past failed runs: which they are, their logs, what next."""
    failed = []
    for path in all_runs(cb_runfiles.METRICS_JSON):
        try:
            m = json.loads(open(path).read())
        except (OSError, ValueError):
            continue
        if m.get("status") == "failed":
            f = m.get("failure") or {}
            failed.append(f"  {os.path.dirname(path)}: {f.get('error')} (log: {f.get('log')})")
    if failed:
        print(f"\n{len(failed)} training run(s) FAILED; the report was made from the others and lists them:\n"
              + "\n".join(failed) + "\nRun `snakemake` again to retry them (each resumes from its last checkpoint).",
              file=sys.stderr)


def prune_checkpoints():
    """engine.keep_checkpoints: needed. Once every rule is done, only the checkpoints a later
    step needs stay: the run each task's end-of-training noise was measured at (noise.json's
    reference), and failed runs'."""
    if ENGINE["keep_checkpoints"] != "needed":
        return
    keep = set()
    runs = {Path(p).parent for p in all_runs(cb_runfiles.METRICS_JSON)}
    for t in TASKS:
        try:
            ref = json.loads(open(f"results/noise/{t}/noise.json").read()).get("reference") or {}
        except (OSError, ValueError):
            if config["noise"]["enabled"]:
                # Its noise is still to be measured (this run asked for other targets), at
                # whichever of its runs finished: every one of them is still needed.
                keep |= {r for r in runs if Path(cb_runfiles.RUNS_DIR) / t in r.parents}
            continue
        if ref.get("run"):
            keep.add(Path(cb_runfiles.RUNS_DIR) / ref["run"])
    freed = cb_runfiles.prune_checkpoints(sorted(runs), keep)
    if freed:
        print(f"engine.keep_checkpoints: needed: deleted the checkpoints no later step needs ({freed / 1e6:.0f} MB; "
              f"kept: {', '.join(map(str, sorted(keep))) or 'none'})", file=sys.stderr)


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


# -- tuning (tuning.smk; config `tuning:`) --
TUNED = cb_tuning.tuned_tasks(config)


def trial_count(task):
    return int(cb_tuning.task_tuning(config, task)["trials"])


def trial_spec_file(wildcards):
    spec = cb_spec.trial_job(config, wildcards.task, wildcards.method, int(wildcards.trial))
    return cb_spec.write("trial", spec, f"{wildcards.task}-{wildcards.method}-trial{wildcards.trial}")


def config_file():
    """The resolved workflow config the report records (its hash and text), less neutral keys."""
    return cb_spec.write("config", cb_spec.without_neutral(config), "config")


def tuned_input(wildcards):
    """The chosen setting a run of run.seeds trains with, when its task is tuned."""
    if wildcards.task in TUNED:
        return {"chosen": cb_tuning.chosen_path(wildcards.task, wildcards.method)}
    return {}


def all_chosen():
    return [cb_tuning.chosen_path(t, m) for t in TUNED for m in cb_config.task_methods(config, t)]


def start_jobserver():
    """On a local run, one process imports torch and torchvision once and forks each job's
    `clipbench` command (clipbench.jobserver): ~8 s of imports saved per job on a 2-core
    machine. Jobs elsewhere (SLURM) run as plain processes; engine.jobserver: false turns it off."""
    exe = shutil.which("clipbench")
    if not (workflow.local_exec and config["engine"]["jobserver"] and exe):
        return
    path = cb_jobserver.socket_path(os.getcwd())
    os.makedirs("results/logs", exist_ok=True)
    with open("results/logs/jobserver.log", "a") as log:
        subprocess.Popen([exe, "jobserver", "serve", "--socket", path, "--idle", "300"], stdin=subprocess.DEVNULL,
                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    os.environ[cb_jobserver.ENV] = path


def stop_jobserver():
    path = os.environ.pop(cb_jobserver.ENV, None)
    if path:
        cb_jobserver.shutdown(path)

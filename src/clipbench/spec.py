"""A job's resolved settings: the one place a validated config becomes what a job runs with.

``config`` loads, merges and validates; ``tuning`` samples and selects; this module turns the
result into each job's spec: a training run's (``run_spec``), a tuning trial's
(``trial_spec``), the noise measurement's (``noise_spec``), a baseline's (``task_settings``),
with a tuned choice (``apply_chosen``) and measured clip levels (``with_levels``) put in, and
the settings that change no number split off (``without_neutral``, ``runtime``).

The workflow writes each job's spec to ``results/specs/<kind>/<name>.<digest>.json`` (``write``)
and passes the path, so the plan shows short shell lines. The digest of the content is in the
name: a changed setting is a new path, which Snakemake sees as a changed param and reruns
exactly the jobs it touches, while a finished job's own file is never rewritten (the file a job
read stays what it read). ``clipbench spec`` prints any job's spec; the shell line replays it.
"""
from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

from clipbench import files
from clipbench.config import ConfigError, with_task_defaults
from clipbench.tuning import TuningError, task_tuning, trials

# Engine keys that change how fast a run goes, or what it does on failure, but not its numbers.
# The workflow keeps them out of every rule's params (a change reruns nothing) and the checkpoint
# hash leaves them out (a change keeps a checkpoint valid); jobs get them through --runtime.
NEUTRAL_ENGINE_KEYS = ("threads", "num_workers", "gpus", "fail_on_divergence", "checkpoint_every_steps", "dvclive",
                       "tensorboard", "loaders", "keep_checkpoints", "jobserver")
# Top-level sections that change no number at all: what a scheduler is asked for.
NEUTRAL_SECTIONS = ("resources",)


def run_spec(config: dict, task: str, method: str, seed: int) -> dict[str, Any]:
    """Everything one training run needs, and nothing else.

    The workflow hands it to ``clipbench train`` as a file named by its digest (``write``), so a
    run is redone exactly when its own settings change; the run folder records what it ran with.
    """
    task_cfg = copy.deepcopy(config["tasks"][task])
    if method not in task_cfg.get("methods", {}):
        raise ConfigError(f"tasks.{task}.methods.{method}: no settings for method {method!r} in the config")
    # Which method is its unclipped twin is the report's business: it changes no number of the run.
    method_cfg = {k: v for k, v in task_cfg.pop("methods")[method].items() if k != "twin"}
    dataset = task_cfg.get("dataset")
    spec = {
        "task": task,
        "method": method,
        "seed": int(seed),
        "task_config": task_cfg,
        "method_config": method_cfg,
        "engine": copy.deepcopy(config.get("engine", {})),
    }
    if dataset is not None:
        spec["dataset"] = dataset
        spec["dataset_config"] = copy.deepcopy(config.get("datasets", {}).get(dataset, {}))
    return spec


def without_neutral(spec_or_config: dict, keep: tuple[str, ...] = ()) -> dict:
    """A copy without the settings that change no number (engine's neutral keys but ``keep``,
    and for a whole config its neutral sections): what decides whether a job is redone."""
    out = {k: v for k, v in spec_or_config.items() if k not in NEUTRAL_SECTIONS}
    if "engine" in out:
        out["engine"] = {k: v for k, v in out["engine"].items() if k in keep or k not in NEUTRAL_ENGINE_KEYS}
    return copy.deepcopy(out)


def runtime(config: dict, **overrides) -> dict:
    """The config's neutral engine settings (``--runtime`` of the commands that run a job)."""
    eng = config.get("engine", {})
    return {**{k: copy.deepcopy(eng[k]) for k in NEUTRAL_ENGINE_KEYS if k in eng}, **overrides}


# How the workflow hands a job its neutral engine settings: in the environment, not on the
# shell line or in params, which Snakemake compares to decide a rerun (common.smk sets it).
RUNTIME_ENV = "CLIPBENCH_RUNTIME"


def with_runtime(spec: dict, runtime_settings: dict | None, where: str = "--runtime", over_spec: bool = True) -> dict:
    """``spec`` with neutral engine settings put back: over the spec's own (``over_spec``, an
    explicit --runtime) or under them (the workflow's environment: a spec that sets one, as a
    tuning trial's fail_on_divergence: false, keeps it)."""
    if not runtime_settings:
        return spec
    unknown = sorted(set(runtime_settings) - set(NEUTRAL_ENGINE_KEYS))
    if unknown:
        raise ConfigError(f"{where}: {', '.join(unknown)} would change a run's numbers; only "
                          f"{', '.join(NEUTRAL_ENGINE_KEYS)} may be given there (the rest belongs in the spec)")
    eng = spec.get("engine", {})
    return {**spec, "engine": {**eng, **runtime_settings} if over_spec else {**runtime_settings, **eng}}


def trial_spec(config: dict, task: str, method: str, trial: int) -> dict:
    """The run spec of one trial: the method's settings with the trial's, trained on the
    training data less the held-out split, and evaluated on that split."""
    tt = task_tuning(config, task)
    settings = trials(config, task, method)
    if not 0 <= trial < len(settings):
        raise TuningError(f"{task}/{method}: no trial {trial} (the budget is {len(settings)})")
    spec = run_spec(config, task, method, int(tt.get("train_seed", 0)))
    spec["method_config"].update(settings[trial])
    if tt.get("epochs"):
        spec["task_config"]["epochs"] = int(tt["epochs"])
    # A diverged trial is a result (the worst), not a failed job.
    spec["engine"]["fail_on_divergence"] = False
    spec["holdout"] = dict(tt["split"])
    spec["trial"] = {"index": trial, "params": settings[trial]}
    return spec


def apply_chosen(spec: dict, chosen: dict) -> dict:
    """``spec`` with the setting ``chosen`` (a ``select`` result) for its task and method."""
    if (chosen["task"], chosen["method"]) != (spec["task"], spec["method"]):
        raise TuningError(f"the chosen setting is for {chosen['task']}/{chosen['method']}, "
                          f"not {spec['task']}/{spec['method']}")
    out = copy.deepcopy(spec)
    out["method_config"].update(chosen["chosen"]["params"])
    out["tuned"] = {"trial": chosen["chosen"]["trial"], "params": chosen["chosen"]["params"],
                    "metric": chosen["metric"], "value": chosen["chosen"]["value"]}
    return out


def noise_method(config: dict) -> str:
    """The method whose run the end-of-training noise is measured at first: noise.method, or
    the first of run.methods when that one is not run."""
    methods = config["run"]["methods"]
    return config["noise"]["method"] if config["noise"]["method"] in methods else methods[0]


def noise_spec(config: dict, task: str) -> dict:
    """The noise measurement's spec: noise.method's first-seed run, with the noise section."""
    spec = run_spec(config, task, noise_method(config), config["run"]["seeds"][0])
    return {**spec, "noise": config["noise"]}


def complete(spec: dict) -> dict:
    """``spec`` with the schema's defaults in its task_config: a spec written by hand runs as
    one from the config (whose validation filled them in)."""
    return {**spec, "task_config": with_task_defaults(spec["task"], spec.get("task_config", {}))}


def task_settings(config: dict, task: str) -> dict:
    """One task's settings without its methods: what a baseline and the convex check run with."""
    return {k: copy.deepcopy(v) for k, v in config["tasks"][task].items() if k != "methods"}


def heavytail_settings(config: dict) -> dict:
    """The convex check's settings (the config's ``heavytail`` section, less its switch)."""
    return {k: copy.deepcopy(v) for k, v in config["heavytail"].items() if k != "enabled"}


def with_levels(spec: dict, init: dict | None) -> dict:
    """``spec`` with a ``{quantile: q}`` clip level resolved from the task's noise at
    initialisation (``init.json``), and what was resolved recorded as ``resolved``."""
    from clipbench.diagnostics.clip_levels import resolve_levels

    try:
        cfg, resolved = resolve_levels(spec["method"], spec["method_config"], init)
    except ValueError as exc:
        raise ConfigError(f"tasks.{spec['task']}.methods.{exc}") from None
    return {**spec, "method_config": cfg, "resolved": resolved} if resolved else spec


# -- what each workflow job reads: the spec less the settings that change no number --------------

def train_job(config: dict, task: str, method: str, seed: int) -> dict:
    return without_neutral(run_spec(config, task, method, seed))


def trial_job(config: dict, task: str, method: str, trial: int) -> dict:
    # trial_spec's fail_on_divergence: false stays in the job's spec (the workflow's environment
    # does not override it), so a diverged trial is a result, not a failed job.
    return without_neutral(trial_spec(config, task, method, trial), keep=("fail_on_divergence",))


def noise_job(config: dict, task: str) -> dict:
    return without_neutral(noise_spec(config, task))


# -- the files ----------------------------------------------------------------------------------

SPEC_DIR = Path("results/specs")


def text(value) -> str:
    """The one serialisation: sorted keys, so the same settings give the same digest."""
    return json.dumps(value, sort_keys=True, indent=1) + "\n"


def write(kind: str, value, name: str = "", root: str | Path = SPEC_DIR) -> str:
    """The path of a file holding ``value``, written once (atomically) if not there yet."""
    body = text(value)
    digest = hashlib.sha256(body.encode()).hexdigest()[:12]
    path = Path(root) / kind / (f"{name}.{digest}.json" if name else f"{digest}.json")
    if not path.is_file():
        # A cluster job parses the workflow again and may race another: both write the same
        # bytes, each through its own temporary file and a rename.
        files.write_text(path, body)
    return str(path)

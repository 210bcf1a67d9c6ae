"""Loading, validating and resolving the clipbench configuration.

The schema in ``workflow/schemas/config.schema.yaml`` is the single source of truth for keys,
types and defaults (the code holds no defaults of its own); the task registry adds which task
names exist, and each task and dataset keeps its own block beside its code
(``clipbench/tasks/schemas/``, ``clipbench/data/schemas/``). This module is the one validator: the Snakefile and the command line both call
``validate``, so both fill in the same defaults and reject the same mistakes.
"""
from __future__ import annotations

import copy
import functools
from importlib import resources
from pathlib import Path

import jsonschema
import yaml

from clipbench.errors import ClipbenchError
from clipbench.tasks import registry


class ConfigError(ClipbenchError, ValueError):
    """A configuration that cannot run; the message names the offending key."""


# libyaml's parser where PyYAML has it: the schema (~50 KB) takes 0.5 s in pure Python, and
# every job reads it.
_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@functools.lru_cache(maxsize=1)
def _schema() -> dict:
    text = resources.files("clipbench").joinpath("resources/config.schema.yaml").read_text()
    return yaml.load(text, Loader=_SafeLoader)


def load_schema() -> dict:
    """The schema file as it is (a fresh copy: callers may extend it)."""
    return copy.deepcopy(_schema())


def methods(config: dict | None = None) -> tuple[str, ...]:
    """The method names ``run.methods`` accepts: the schema's list (the thesis' methods), and
    with ``config`` also its own methods (those naming an optimizer class) in ``run.methods``."""
    builtin = tuple(load_schema()["properties"]["run"]["properties"]["methods"]["items"]["enum"])
    extra = [m for m in ((config or {}).get("run") or {}).get("methods", []) if m not in builtin]
    return builtin + tuple(extra)


def custom_methods(config: dict) -> list[str]:
    """The names in ``run.methods`` that are methods of the user's own (not the schema's)."""
    return [m for m in config["run"]["methods"] if m not in methods()]


@functools.lru_cache(maxsize=None)
def _blocks(folder: str) -> dict[str, dict]:
    """The config blocks the package keeps beside their code, ``clipbench/<folder>/schemas/<name>.yaml``
    (a task's or a dataset's settings), by name."""
    files = sorted(resources.files("clipbench").joinpath(folder, "schemas").iterdir(), key=lambda f: f.name)
    return {f.name.removesuffix(".yaml"): yaml.load(f.read_text(), Loader=_SafeLoader)
            for f in files if f.name.endswith(".yaml")}


def dataset_names() -> list[str]:
    """The datasets whose ``datasets.<name>`` block the config takes."""
    return list(_blocks("data"))


def full_schema() -> dict:
    """What ``validate`` checks against: the schema file plus what the tasks and datasets own,
    the task names ``run.tasks``, ``resources.tasks`` and ``engine.loaders`` accept, each task's
    ``tasks.<name>`` block (``clipbench/tasks/schemas/<name>.yaml``, or the ``schema`` of a task
    registered from outside) and each dataset's ``datasets.<name>`` block
    (``clipbench/data/schemas/<name>.yaml``)."""
    schema = load_schema()
    props = schema["properties"]
    props["run"]["properties"]["tasks"]["items"]["enum"] = registry.names()
    for per_task in (props["resources"]["properties"]["tasks"], props["engine"]["properties"]["loaders"]):
        per_task["propertyNames"] = {"enum": registry.names()}
    # Beside the thesis' methods, run.methods takes methods of the user's own, whose names
    # _check_methods checks against the tasks' method blocks (with a message for typos).
    run_methods = props["run"]["properties"]["methods"]["items"]
    run_methods.pop("enum")
    run_methods["pattern"] = schema["definitions"]["methods"]["propertyNames"]["pattern"]
    own = _blocks("tasks")
    for name in registry.names():
        block = registry.get(name).schema or own.get(name)
        if block is None:
            raise ConfigError(f"task {name!r} has no config block: add src/clipbench/tasks/schemas/{name}.yaml")
        props["tasks"]["properties"][name] = copy.deepcopy(block)
    props["datasets"]["properties"] = copy.deepcopy(_blocks("data"))
    return schema


def _with_defaults(validator_class):
    validate_props = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for key, sub in properties.items():
                if isinstance(sub, dict) and "default" in sub and key not in instance:
                    instance[key] = copy.deepcopy(sub["default"])
        yield from validate_props(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


def _message(err: jsonschema.ValidationError) -> str:
    """For a value that may take several forms (oneOf), why each form refused it."""
    if err.validator in ("oneOf", "anyOf") and err.context:
        return f"{err.instance!r} fits none of its forms: " + "; or ".join(dict.fromkeys(e.message for e in err.context))
    return err.message


def _key_path(error: jsonschema.ValidationError) -> str:
    path = ".".join(str(p) for p in error.absolute_path)
    return path or "<top level>"


# A clipbench config holds a few hundred values (the thesis' about two thousand). YAML
# aliases nested in each other expand a 1 KB file to billions, which the validator's
# messages and every job's settings would then walk: refuse those before anything reads them.
MAX_CONFIG_VALUES = 200_000


def check_expanded_size(config, source: str = "config") -> None:
    """ConfigError when ``config`` expands (aliases counted as often as they are used) to more
    than MAX_CONFIG_VALUES values."""
    stack, count = [config], 0
    while stack:
        item = stack.pop()
        count += 1
        if count > MAX_CONFIG_VALUES:
            raise ConfigError(
                f"{source}: expands to more than {MAX_CONFIG_VALUES:,} values, which no clipbench "
                f"config needs (YAML anchors and aliases repeated inside each other?); remove the "
                f"aliases and write the values out")
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)


def _schema_file(err: jsonschema.ValidationError) -> str:
    """Where the block an error is about is described."""
    path = list(err.absolute_path)
    if len(path) >= 2 and path[0] in ("tasks", "datasets"):
        return f"src/clipbench/{'tasks' if path[0] == 'tasks' else 'data'}/schemas/{path[1]}.yaml"
    return "workflow/schemas/config.schema.yaml"


def validate(config: dict, source: str = "config") -> dict:
    """Validate ``config`` in place (filling defaults) and return it.

    Raises ConfigError naming the key, e.g. ``tasks.classification.methods.sgd.lr``.
    """
    check_expanded_size(config, source)
    _check_moved(config, source)
    schema = full_schema()
    cls = _with_defaults(jsonschema.validators.validator_for(schema))
    errors = sorted(cls(schema).iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        lines = []
        for err in errors:
            if err.validator == "additionalProperties":
                allowed = ", ".join(sorted(err.schema.get("properties", {}))) or "none"
                lines.append(f"{_key_path(err)}: {err.message} (allowed: {allowed}; check the spelling, "
                             f"see {_schema_file(err)})")
            elif err.validator == "required" and "'optimizer'" in err.message:
                lines.append(f"{_key_path(err)}: {err.message}: {err.absolute_path[-1]!r} is not one of the "
                             f"thesis' methods ({', '.join(methods())}; check the spelling), and a method of "
                             f"your own names its class, e.g. optimizer: 'torch.optim:AdamW'")
            else:
                lines.append(f"{_key_path(err)}: {_message(err)}")
        raise ConfigError(f"invalid {source}:\n  " + "\n  ".join(lines))
    _check_only(config, source)
    _check_methods(config, source)
    _check_matrix(config, source)
    _check_twins(config, source)
    _check_schedules(config, source)
    _check_tuning(config, source)
    return config


def _check_moved(config: dict, source: str) -> None:
    """Keys a config of an older clipbench has where they no longer are: said as such, not as a typo."""
    if "heavytail" in ((config.get("run") or {}).get("tasks") or []) or "heavytail" in (config.get("tasks") or {}):
        raise ConfigError(f"invalid {source}: the convex check is no longer a task: remove heavytail from run.tasks "
                          "and move tasks.heavytail's settings to the top-level section `heavytail` "
                          "(heavytail.enabled: false turns it off)")


def _with_block_defaults(path: tuple[str, ...], cfg: dict) -> dict:
    """A copy of ``cfg``, the config block at ``path`` of the schema, with the schema's defaults."""
    schema = full_schema()
    block = schema
    for key in path:
        block = block["properties"][key]
    block = copy.deepcopy(block)
    block["definitions"] = schema.get("definitions", {})  # its $refs point there
    block.pop("required", None)  # a partial block (e.g. no methods) only gets its defaults
    out = copy.deepcopy(cfg)
    cls = _with_defaults(jsonschema.validators.validator_for(schema))
    for err in cls(block).iter_errors(out):
        raise ConfigError(f"invalid {'.'.join(path)}.{_key_path(err)}: {err.message}")
    return out


def with_task_defaults(task: str, task_cfg: dict) -> dict:
    """A copy of one task's settings with the schema's defaults filled in."""
    return _with_block_defaults(("tasks", task), task_cfg)


def with_section_defaults(section: str, cfg: dict) -> dict:
    """A copy of a top-level section's settings (e.g. ``heavytail``) with the schema's defaults."""
    return _with_block_defaults((section,), cfg)


def task_methods(config: dict, task: str) -> list[str]:
    """The methods ``task`` trains: run.methods, less those ``run.only`` keeps to other tasks."""
    only = (config.get("run") or {}).get("only") or {}
    return [m for m in config["run"]["methods"] if m not in only or task in only[m]]


def _check_methods(config: dict, source: str) -> None:
    """A name in run.methods that is not the thesis' must be a method of the user's own in every
    task run (else it is most likely a typo)."""
    trained = [t for t in config["run"]["tasks"] if t in registry.names()]
    for method in custom_methods(config):
        index = config["run"]["methods"].index(method)
        lacking = [t for t in trained if method in task_methods(config, t)
                   and "optimizer" not in ((config.get("tasks", {}).get(t) or {}).get("methods") or {}).get(method, {})]
        if lacking:
            raise ConfigError(
                f"invalid {source}:\n  run.methods.{index}: {method!r} is not one of the thesis' methods "
                f"({', '.join(methods())}; check the spelling); a method of your own needs "
                f"tasks.<task>.methods.{method}.optimizer ('package.module:Class', e.g. 'torch.optim:AdamW') "
                f"in every task run, and it is missing in: {', '.join(f'tasks.{t}' for t in lacking)}")


def _check_twins(config: dict, source: str) -> None:
    """A declared twin must be a method of the same task, and not the method itself."""
    for task, task_cfg in (config.get("tasks") or {}).items():
        methods = (task_cfg or {}).get("methods") or {}
        if not isinstance(methods, dict):
            continue  # the convex check lists its methods; it pairs them itself
        for method, cfg in methods.items():
            twin = (cfg or {}).get("twin")
            if twin is not None and (twin == method or twin not in methods):
                raise ConfigError(f"invalid {source}: tasks.{task}.methods.{method}.twin: {twin!r} is not another "
                                  f"method of tasks.{task} (its methods: {', '.join(methods)})")


def _check_only(config: dict, source: str) -> None:
    """run.only names methods of run.methods and tasks of run.tasks."""
    for method, tasks in ((config.get("run") or {}).get("only") or {}).items():
        if method not in config["run"]["methods"]:
            raise ConfigError(f"invalid {source}: run.only.{method}: not a method of run.methods "
                              f"({', '.join(config['run']['methods'])})")
        unknown = [t for t in tasks if t not in config["run"]["tasks"]]
        if unknown:
            raise ConfigError(f"invalid {source}: run.only.{method}: {', '.join(unknown)} not in run.tasks "
                              f"({', '.join(config['run']['tasks'])})")


def _check_matrix(config: dict, source: str) -> None:
    """Every (task, method) in the run matrix must have settings."""
    missing = []
    for task in config["run"]["tasks"]:
        task_cfg = config.get("tasks", {}).get(task)
        if task_cfg is None:
            missing.append(f"tasks.{task}")
            continue
        for method in task_methods(config, task):
            if method not in task_cfg.get("methods", {}):
                missing.append(f"tasks.{task}.methods.{method}")
    if missing:
        raise ConfigError(
            f"invalid {source}: the run matrix (run.tasks x run.methods) needs settings for: "
            + ", ".join(missing)
        )


def _check_schedules(config: dict, source: str) -> None:
    """clipped-SSTM has no learning rate: a schedule on it could only silently do nothing."""
    for task, task_cfg in config.get("tasks", {}).items():
        methods = task_cfg.get("methods", {})
        if not isinstance(methods, dict):
            continue  # a task without per-method settings (the convex check lists method names)
        sched = methods.get("clipped_sstm", {}).get("schedule")
        if sched and sched.get("name", "constant") != "constant":
            raise ConfigError(
                f"invalid {source}: tasks.{task}.methods.clipped_sstm.schedule: clipped-SSTM has no "
                f"learning rate to schedule (its steps follow alpha_k from a and L); "
                f"remove the schedule or use name: constant"
            )


def _check_tuning(config: dict, source: str) -> None:
    """Every method run on a tuned task has a search space, every trial's settings are valid
    settings of its method, and grids match the budget (the trials are drawn here, cheaply)."""
    from clipbench import tuning

    blocks = (config.get("tuning") or {}).get("tasks") or {}
    for task in blocks:
        if task not in registry.names():
            raise ConfigError(f"invalid {source}: tuning.tasks.{task}: not a task "
                              f"(tasks: {', '.join(registry.names())})")
    schema = full_schema()
    builtin = schema["definitions"]
    for task in tuning.tuned_tasks(config):
        for method in task_methods(config, task):
            try:
                settings = tuning.trials(config, task, method)
            except tuning.TuningError as exc:
                raise ConfigError(f"invalid {source}: {exc}") from None
            if method not in builtin:
                continue  # a method of the user's own: its class checks its arguments
            base = config["tasks"][task]["methods"][method]
            for i, params in enumerate(settings):
                check = {**builtin[method], "definitions": builtin}
                err = jsonschema.exceptions.best_match(
                    jsonschema.validators.validator_for(schema)(check).iter_errors({**base, **params}))
                if err is not None:
                    raise ConfigError(f"invalid {source}: tuning.tasks.{task}.space.{method}: trial {i} "
                                      f"({params}) is not a valid setting: {_key_path(err)}: {err.message}")


def deep_merge(base: dict, override: dict) -> dict:
    """Merge key by key, as Snakemake merges several --configfile files."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load(*paths: str | Path) -> dict:
    """Load and merge config files (later ones win), then validate."""
    if not paths:
        raise ConfigError("no config file given")
    config: dict = {}
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"config file {path} must hold a mapping at the top level")
        config = deep_merge(config, data)
    return validate(config, source=" + ".join(str(p) for p in paths))

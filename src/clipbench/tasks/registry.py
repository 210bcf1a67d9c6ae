"""Every task clipbench knows, by name, without importing torch.

Each task module in ``clipbench/tasks/`` declares ``INFO = TaskInfo(...)`` with literal
values; the registry reads those declarations from the module's source (it does not import
the module), so the config check, the command line, the Snakefile and the report can list
tasks, labels and metrics quickly and without torch. A task from outside the package (a
plug-in, a test) is added with :func:`register`; its ``schema`` then supplies its
``tasks.<name>`` block of the config schema.
"""
from __future__ import annotations

import ast
import importlib
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class TaskInfo:
    name: str
    label: str  # how the report titles it
    main_metric: str  # split "val"; decides "best" and is reported first
    higher_is_better: bool = True
    dataset: str | None = None  # the datasets.<name> block it reads, if any
    notes: tuple[str, ...] = ()  # how its numbers are computed, stated beside its table
    # Name of a function in the module, (task_cfg, manifest) -> {"method", "label", "metrics"}:
    # a training-free score on the same validation data (superres: bicubic).
    baseline: str | None = None
    module: str | None = None  # importable module with build(spec, manifest) -> Task
    implemented: bool = True
    # False for a task that trains no network (the convex check): no run matrix, a rule of its own.
    trains: bool = True
    schema: dict | None = field(default=None, compare=False)  # only for tasks registered from outside


# Names the contract reserves before their task exists: refused by the config check.
RESERVED: tuple[TaskInfo, ...] = ()

_registry: dict[str, TaskInfo] = {}


def _declared(path: Path) -> TaskInfo | None:
    """The module's ``INFO = TaskInfo(...)``, read from its source (literal keywords only)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in tree.body:
        if (isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["INFO"]
                and isinstance(node.value, ast.Call) and getattr(node.value.func, "id", None) == "TaskInfo"):
            try:
                kwargs = {kw.arg: ast.literal_eval(kw.value) for kw in node.value.keywords}
            except ValueError as exc:
                raise ValueError(f"{path}: INFO = TaskInfo(...) must use literal values only ({exc})") from exc
            if "notes" in kwargs:
                kwargs["notes"] = tuple(kwargs["notes"])
            return TaskInfo(module=f"clipbench.tasks.{path.stem}", **kwargs)
    return None


def _discover() -> None:
    if _registry:
        return
    found = []
    for path in sorted(Path(__file__).parent.glob("*.py")):
        info = None if path.stem.startswith("_") or path.stem == "registry" else _declared(path)
        if info is not None:
            found.append(info)
    # The thesis' tasks first, then checks that train no network (the report's order).
    for info in sorted(found, key=lambda i: not i.trains):
        _registry[info.name] = info
    for info in RESERVED:
        _registry.setdefault(info.name, info)


def register(info: TaskInfo) -> TaskInfo:
    """Add a task defined outside ``clipbench/tasks`` (it needs ``module`` and ``schema``)."""
    _discover()
    if info.implemented and not (info.module and info.schema):
        raise ValueError(f"task {info.name!r}: a registered task needs module= and schema= (its config block)")
    _registry[info.name] = info
    return info


def unregister(name: str) -> None:
    _discover()
    _registry.pop(name, None)


def names(implemented_only: bool = False) -> list[str]:
    """Task names in report order: the package's, then reserved ones, then registered ones."""
    _discover()
    return [n for n, i in _registry.items() if i.implemented or not implemented_only]


def get(name: str) -> TaskInfo:
    _discover()
    if name not in _registry:
        raise ValueError(f"unknown task {name!r} (known: {', '.join(_registry)})")
    return _registry[name]


def training(tasks) -> list[str]:
    """Those of ``tasks`` that train networks (and so have a run matrix)."""
    return [t for t in tasks if get(t).trains]


def with_baseline() -> list[str]:
    return [n for n in names(implemented_only=True) if get(n).baseline]


def load_module(name: str):
    info = get(name)
    if not info.implemented:
        raise ValueError(f"task {name!r} is a reserved name, not implemented yet")
    return importlib.import_module(info.module)


def baseline_function(name: str):
    info = get(name)
    if not info.baseline:
        raise ValueError(f"no baseline for task {name!r} (tasks with one: {', '.join(with_baseline()) or 'none'})")
    return getattr(load_module(name), info.baseline)

"""Every task clipbench knows, by name, without importing torch: a literal table (``TASKS``).

The config check, the command line, the Snakefile and the report list tasks, labels and
metrics from here, quickly and without torch; a task's module (``module``) is imported only to
build it. A task from outside the package (a plug-in, a test) is added with :func:`register`;
its ``schema`` then supplies its ``tasks.<name>`` block of the config schema.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field


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
    # Pretrained weights the workflow fetches before training (its `weights` rule), by model:
    # {tasks.<task>.model: a name of clipbench.data.weights}, used with `pretrained: imagenet`.
    weights: dict[str, str] = field(default_factory=dict, compare=False)
    schema: dict | None = field(default=None, compare=False)  # only for tasks registered from outside


# The tasks, in the report's order. ``notes`` say how the numbers are computed; the report
# states them beside the task's table. (The convex check is not a task: it trains no network;
# see clipbench.diagnostics.heavytail and the config's top-level `heavytail` section.)
TASKS: dict[str, TaskInfo] = {
    "classification": TaskInfo(
        name="classification",
        label="Classification (ImageNet-100, ResNet-18)",
        dataset="imagenet100",
        main_metric="top1",
        baseline="chance_baseline",
        module="clipbench.tasks.classification",
    ),
    "segmentation": TaskInfo(
        name="segmentation",
        label="Segmentation (Pascal VOC 2012, FCN-32s)",
        dataset="voc2012",
        main_metric="miou",
        weights={"fcn32s_vgg16": "vgg16_imagenet"},
        baseline="background_baseline",
        notes=(
            "mIoU from one confusion matrix accumulated over every validation pixel; void pixels (label 255) are "
            "ignored; the mean is over the classes present in the ground truth or the prediction (a class absent "
            "from both is left out). Pixel accuracy from the same matrix.",
        ),
        module="clipbench.tasks.segmentation",
    ),
    "superres": TaskInfo(
        name="superres",
        label="Super-resolution x4 (DIV2K)",
        dataset="div2k",
        main_metric="psnr",
        notes=(
            "PSNR as EDSR's evaluation (its calc_psnr) scores DIV2K: the output clamped to [0, 1] and rounded to 8 "
            "bits, scale + 6 px (10 px at x4) shaved at each border (EDSR shaves only scale px on the benchmark sets, "
            "not DIV2K; tasks.superres.shave sets another border), PSNR per image then averaged over the images; the "
            "bicubic row is scored the same way. PSNR (the thesis' metric) is "
            "on RGB with data range 1; PSNR-Y on BT.601 luma Y = 16 + 65.481 R + 128.553 G + 24.966 B (RGB in "
            "[0, 1]) with data range 255.",
            "The bicubic row is the validation score of plain bicubic upsampling of the LR inputs (torch's bicubic, "
            "a = -0.75, no antialiasing; close to but not identical with MATLAB's imresize), with no training. On "
            "the real DIV2K validation set x4 bicubic scores about 26.7 dB, while the thesis reports about 18 dB for "
            "its trained models (Table 2): below this trivial baseline.",
        ),
        baseline="bicubic_baseline",
        module="clipbench.tasks.superres",
    ),
}
_registry: dict[str, TaskInfo] = dict(TASKS)  # plus the tasks registered from outside


def register(info: TaskInfo) -> TaskInfo:
    """Add a task defined outside ``clipbench/tasks`` (it needs ``module`` and ``schema``)."""
    if not (info.module and info.schema):
        raise ValueError(f"task {info.name!r}: a registered task needs module= and schema= (its config block)")
    _registry[info.name] = info
    return info


def unregister(name: str) -> None:
    if name in TASKS:
        raise ValueError(f"task {name!r} is one of clipbench's own; only a registered task can be removed")
    _registry.pop(name, None)


def names() -> list[str]:
    """Task names in report order: the package's, then registered ones."""
    return list(_registry)


def get(name: str) -> TaskInfo:
    if name not in _registry:
        raise ValueError(f"unknown task {name!r} (known: {', '.join(_registry)})")
    return _registry[name]


def with_baseline() -> list[str]:
    return [n for n in names() if get(n).baseline]


def required_weights(name: str, task_cfg: dict) -> list[str]:
    """The pinned weights a run of ``name`` with ``task_cfg`` needs as input: its model's, when it
    starts from them (``pretrained: imagenet``) and must not train from scratch without them
    (``if_pretrained_missing: fail``; with ``scratch`` they are used when there, never fetched)."""
    weights = get(name).weights.get(task_cfg.get("model"))
    if not weights or task_cfg.get("pretrained") != "imagenet" or task_cfg.get("if_pretrained_missing", "fail") != "fail":
        return []
    return [weights]


def load_module(name: str):
    info = get(name)
    if info.module is None:
        raise ValueError(f"task {name!r} has no module to build (it trains no network)")
    return importlib.import_module(info.module)


def baseline_function(name: str):
    info = get(name)
    if not info.baseline:
        raise ValueError(f"no baseline for task {name!r} (tasks with one: {', '.join(with_baseline()) or 'none'})")
    return getattr(load_module(name), info.baseline)

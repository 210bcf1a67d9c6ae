"""Live tracking (engine/tracking.py): DVCLive and TensorBoard hold exactly the history's rows,
epoch by epoch, through a crash and a resume, and a run changes no Git or DVC repository."""
from __future__ import annotations

import copy
import csv
import json
import math
import os
import subprocess
import sys
import time

import pytest
import torch

from tests._kills import DieAfterSaves, Killed
from tests._tensortask import tensor_task_spec, use_tensor_task
from clipbench.engine import checkpoint, tracking, train as T

pytest.importorskip("dvclive")
pytest.importorskip("tensorboard")

BOTH = {"dvclive": True, "tensorboard": True}


@pytest.fixture(autouse=True)
def _keep_torch_globals():
    """train() sets torch's threads and deterministic mode process-wide: put them back."""
    saved = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(), \
        torch.is_deterministic_algorithms_warn_only_enabled()
    yield
    torch.set_num_threads(saved[0])
    torch.use_deterministic_algorithms(saved[1], warn_only=saved[2])


def history(run) -> dict[str, list[tuple[int, float]]]:
    """history.csv's finite rows: ``split/metric`` -> [(step, value)]."""
    out: dict[str, list[tuple[int, float]]] = {}
    with open(run / "history.csv") as f:
        for row in csv.DictReader(f):
            value = float(row["value"])
            if math.isfinite(value):
                out.setdefault(f"{row['split']}/{row['metric']}", []).append((int(row["step"]), value))
    return out


def dvclive_rows(run) -> dict[str, list[tuple[int, float]]]:
    root = run / "dvclive" / "plots" / "metrics"
    out = {}
    for tsv in sorted(root.rglob("*.tsv")):
        with open(tsv, newline="") as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
        out[tsv.relative_to(root).with_suffix("").as_posix()] = [(int(r["step"]), float(r[tsv.stem])) for r in rows]
    return out


def tensorboard_rows(run) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def assert_same(view: dict, expected: dict, what: str) -> None:
    assert sorted(view) == sorted(expected), what
    for name, rows in expected.items():
        got = view[name]
        assert [s for s, _ in got] == [s for s, _ in rows], f"{what} {name}: steps"
        for (step, a), (_, b) in zip(got, rows):
            assert a == pytest.approx(b, rel=1e-6), f"{what} {name} at step {step}"


def assert_views_hold_the_history(run, dvclive=True, tensorboard=True) -> None:
    expected = history(run)
    assert expected and "train_step/loss" in expected and "val/top1" in expected
    if dvclive:
        assert_same(dvclive_rows(run), expected, "dvclive")
    if tensorboard:
        assert_same(tensorboard_rows(run), expected, "tensorboard")


def test_dvclive_and_tensorboard_hold_the_history(monkeypatch, tmp_path):
    use_tensor_task(monkeypatch)
    monkeypatch.chdir(tmp_path)
    spec = tensor_task_spec(epochs=3, engine=BOTH, lr=0.1, momentum=0.9)
    T.train(spec, None, tmp_path / "run")
    assert_views_hold_the_history(tmp_path / "run")
    live = tmp_path / "run" / "dvclive"
    summary = json.loads((live / "metrics.json").read_text())
    last = history(tmp_path / "run")["val/top1"][-1]
    assert summary["step"] == last[0] and summary["val"]["top1"] == pytest.approx(last[1])
    import yaml

    params = yaml.safe_load((live / "params.yaml").read_text())
    assert params == {"task": "classification", "method": "sgd", "seed": 0,
                      "optimizer": {"lr": 0.1, "momentum": 0.9}}
    assert not (tmp_path / ".dvc").exists() and not (tmp_path / "dvc.yaml").exists()


def test_a_diverged_run_logs_its_rows_up_to_the_divergence(monkeypatch, tmp_path):
    use_tensor_task(monkeypatch, nan_at_step=6)
    monkeypatch.chdir(tmp_path)
    r = T.train(tensor_task_spec(epochs=3, engine=BOTH), None, tmp_path / "run")
    assert r["status"] == "diverged"
    assert_views_hold_the_history(tmp_path / "run")
    assert max(s for s, _ in history(tmp_path / "run")["train_step/loss"]) > 4  # rows of the diverged epoch


def test_non_finite_values_are_left_out(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    with tracking.Tracker(tmp_path, {"task": "t"}, ("dvclive", "tensorboard")) as tracker:
        tracker.start(resumed=False)
        tracker.log([{"step": 1, "epoch": 1, "split": "train", "metric": "loss", "value": 0.5},
                     {"step": 1, "epoch": 1, "split": "val", "metric": "top1", "value": math.nan},
                     {"step": 2, "epoch": 2, "split": "train", "metric": "loss", "value": math.inf},
                     {"step": 2, "epoch": 2, "split": "val", "metric": "top1", "value": 0.25}])
    expected = {"train/loss": [(1, 0.5)], "val/top1": [(2, 0.25)]}
    assert_same(dvclive_rows(tmp_path), expected, "dvclive")
    assert_same(tensorboard_rows(tmp_path), expected, "tensorboard")


@pytest.mark.parametrize("crash", [
    "checkpoint 4",   # the end of epoch 1 checkpointed, its rows in neither history.csv nor the views
    "checkpoint 6",   # mid epoch 2 (epoch 1 logged, steps 5-6 in the checkpoint only)
    "checkpoint 8",   # the end of epoch 2 checkpointed, the views still at epoch 1
    "dvclive write",  # killed half-way through DVCLive's rows of epoch 2's last step
])
def test_a_resumed_run_continues_the_views(monkeypatch, tmp_path, crash):
    use_tensor_task(monkeypatch)
    monkeypatch.chdir(tmp_path)
    spec = tensor_task_spec(epochs=3, engine={**BOTH, "checkpoint_every_steps": 1}, lr=0.1, momentum=0.9)
    T.train(copy.deepcopy(spec), None, tmp_path / "ref")

    # A kill ends nothing: DVCLive's end() and the TensorBoard writer's close() never run.
    monkeypatch.setattr(tracking.Tracker, "close", lambda self: None)
    if crash.startswith("checkpoint"):
        DieAfterSaves(monkeypatch, int(crash.split()[1]))
    else:
        real_write, calls = tracking._DVCLive.write, []

        def write_then_die(self, step, values):
            calls.append(step)
            if step == 8:  # epoch 2's end: one metric written, then the kill
                first = dict([next(iter(values.items()))])
                real_write(self, step, first)
                raise Killed
            real_write(self, step, values)

        monkeypatch.setattr(tracking._DVCLive, "write", write_then_die)
    with pytest.raises(Killed):
        T.train(copy.deepcopy(spec), None, tmp_path / "run")
    assert not (tmp_path / "run" / "metrics.json").exists()
    monkeypatch.undo()
    use_tensor_task(monkeypatch)
    monkeypatch.chdir(tmp_path)
    time.sleep(1.1)  # TensorBoard orders a run's event files by their names: the second they were opened

    resumed = T.train(copy.deepcopy(spec), None, tmp_path / "run")
    assert resumed["timing"]["resumed_at_steps"]
    assert (tmp_path / "run" / "history.csv").read_text() == (tmp_path / "ref" / "history.csv").read_text()
    assert_views_hold_the_history(tmp_path / "run")
    assert dvclive_rows(tmp_path / "run") == dvclive_rows(tmp_path / "ref")


def test_a_failing_view_costs_the_run_nothing(monkeypatch, tmp_path, capsys):
    use_tensor_task(monkeypatch)
    monkeypatch.chdir(tmp_path)

    def full_disk(self, step, values):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tracking._DVCLive, "write", full_disk)
    r = T.train(tensor_task_spec(engine=BOTH), None, tmp_path / "run")
    assert r["status"] == "ok"
    assert capsys.readouterr().out.count("dvclive: stopped logging (OSError") == 1
    assert_views_hold_the_history(tmp_path / "run", dvclive=False)


def _git(repo, *args) -> str:
    return subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
                          check=True, capture_output=True, text=True).stdout


@pytest.mark.parametrize("dvc", [False, True], ids=["git-without-dvc", "git-with-dvc"])
def test_a_run_changes_no_repository(monkeypatch, tmp_path, capsys, dvc):
    """DVCLive in a Git repository without DVC would `dvc init` it and stage .dvc/: the run leaves
    DVCLive closed there and says so; in a DVC repository it logs, and `dvc plots show -x step`
    reads the history's rows from it."""
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "README").write_text("a user's project\n")
    (repo / ".gitignore").write_text("/results/\n")  # as this project keeps its runs out of Git
    if dvc:
        from dvc.repo import Repo

        Repo.init(str(repo)).close()
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "start")
    before = _git(repo, "status", "--porcelain", "--untracked-files=all")
    use_tensor_task(monkeypatch)
    monkeypatch.chdir(repo)
    run = repo / "results" / "run"
    T.train(tensor_task_spec(engine=BOTH), None, run)
    assert _git(repo, "status", "--porcelain", "--untracked-files=all") == before
    assert _git(repo, "diff", "--cached", "--name-only") == ""
    assert (repo / ".dvc").exists() == dvc and not (repo / "dvc.yaml").exists()
    assert_views_hold_the_history(run, dvclive=dvc)
    if not dvc:
        assert not (run / "dvclive").exists()
        assert "Git repository without DVC" in capsys.readouterr().out
        return
    # `dvc plots` and DVCLive agree: DVC's own reading of the files gives the history's rows.
    out = subprocess.run([sys.executable, "-m", "dvc", "plots", "show", "--json", "-x", "step",
                          str(run / "dvclive" / "plots" / "metrics")], cwd=repo, check=True,
                         capture_output=True, text=True, env={**os.environ, "DVC_NO_ANALYTICS": "1"}).stdout
    plots = json.loads(out)["data"]
    root = str(run / "dvclive" / "plots" / "metrics") + os.sep
    seen = {}
    for path, renders in plots.items():
        name = os.path.relpath(path, root) if os.path.isabs(path) else os.path.relpath(os.path.join(repo, path), root)
        name = name[:-len(".tsv")].replace(os.sep, "/")
        values = renders[0]["content"]["data"]["values"]
        seen[name] = [(int(v["step"]), float(v[name.rsplit("/", 1)[1]])) for v in values]
    assert_same(seen, history(run), "dvc plots")


def test_tensorboard_missing_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(RuntimeError, match=r"engine\.tensorboard is true .*pip install tensorboard"):
        tracking.tensorboard_enabled({"tensorboard": True})
    assert tracking.tensorboard_enabled({}) is False and tracking.tensorboard_enabled({"tensorboard": False}) is False


def test_tensorboard_is_a_neutral_key(repo):
    import yaml

    assert "tensorboard" in checkpoint.NEUTRAL_ENGINE_KEYS
    spec = tensor_task_spec()
    assert checkpoint.spec_hash(spec) == checkpoint.spec_hash({**spec, "engine": {**spec["engine"], **BOTH}})
    schema = yaml.safe_load((repo / "workflow/schemas/config.schema.yaml").read_text())
    assert schema["properties"]["engine"]["properties"]["tensorboard"]["default"] is False
    assert yaml.safe_load((repo / "config/thesis.yaml").read_text())["engine"]["dvclive"] is True

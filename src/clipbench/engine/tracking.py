"""Live tracking: a run's history, epoch by epoch, in DVCLive and (optionally) TensorBoard.

``history.csv`` is the record; these are views of it for watching a run. The training loop
hands :meth:`Tracker.log` the history each time it writes ``history.csv`` (every epoch end,
and once more at a divergence), and each view appends the rows it does not have yet: the
same ``split/metric`` names and the history's ``step``. Nothing is logged per optimizer step,
and non-finite values are left out. Only the main process tracks.

* DVCLive (``engine.dvclive``): ``<run>/dvclive``, opened once per session through its public
  API with ``resume=True`` when the run resumes from its checkpoint. A resumed session reads
  which steps each metric already has from DVCLive's own ``plots/metrics/<name>.tsv`` (what
  ``dvc plots`` reads), so a crash anywhere (even between the checkpoint and the DVCLive write
  of an epoch end) neither loses nor repeats a row. ``save_dvc_exp=False, dvcyaml=None``: no
  experiment, no ``dvc.yaml``. DVCLive has no public switch for one more side effect: opened
  in a Git repository that has no DVC repository, it runs ``dvc init`` there and stages
  ``.dvc/`` in Git. A run must not change the user's repository, so in that one case DVCLive
  is not opened (the run says so once and trains on); inside a DVC repository (this project)
  or outside Git it is.
* TensorBoard (``engine.tensorboard``): ``<run>/tensorboard``, through
  ``torch.utils.tensorboard.SummaryWriter``. Each session opens its writer with
  ``purge_step=0`` (TensorBoard's own mechanism for a restarted run: it hides what earlier
  sessions wrote) and its first write is the whole history so far, so a resumed run shows
  exactly the history, once.

A view that fails (a full disk, a broken install) costs the run nothing: one line in the log,
and that view is dropped for the rest of the session.
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Callable

from clipbench import runfiles
from clipbench.progress import tqdm


def dvclive_enabled(eng: dict) -> bool:
    """``engine.dvclive``: true, false, or null (when dvclive is installed)."""
    want = eng.get("dvclive")
    if want is False:
        return False
    try:
        import dvclive  # noqa: F401
    except ImportError:
        if want:
            raise RuntimeError("engine.dvclive is true but dvclive is not installed (pip install dvclive)") from None
        return False
    return True


def tensorboard_enabled(eng: dict) -> bool:
    """``engine.tensorboard`` (default false); true needs the ``tensorboard`` package."""
    if not eng.get("tensorboard", False):
        return False
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError:
        raise RuntimeError("engine.tensorboard is true but tensorboard is not installed "
                           "(pip install tensorboard)") from None
    return True


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _last_step(tsv: Path) -> int:
    """The last step a DVCLive metric file holds (-1: none)."""
    last = -1
    try:
        with open(tsv, newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f, delimiter="\t"):
                try:
                    last = max(last, int(row["step"]))
                except (KeyError, TypeError, ValueError):
                    pass  # a line cut short by a crash
    except FileNotFoundError:
        pass
    return last


def dvc_init_would_happen() -> bool:
    """Whether DVCLive, opened in the working directory, would ``dvc init`` a Git repository
    (the repository lookup of ``dvclive.dvc.get_dvc_repo``: a DVC repository around the working
    directory, else the Git repository there, which it then initialises)."""
    from dvc.exceptions import NotDvcRepoError
    from dvc.repo import Repo
    from scmrepo.exceptions import SCMError
    from scmrepo.git import Git

    try:
        Repo.find_root()
        return False
    except NotDvcRepoError:
        pass
    try:
        Git().close()
    except SCMError:
        return False
    return True


class _Skip(Exception):
    """A view that is not opened, for a reason the log states."""


class _DVCLive:
    name = "dvclive"

    def __init__(self, run_dir: Path, params: dict, resumed: bool) -> None:
        if dvc_init_would_happen():
            raise _Skip(f"not logging: the working directory ({Path.cwd()}) is in a Git repository without "
                        f"DVC, and DVCLive would run `dvc init` there and stage .dvc/ in Git (it has no "
                        f"switch against that). `dvc init` that repository, run from elsewhere, or set "
                        f"engine.dvclive: false")
        from dvclive import Live

        self.live = Live(dir=str(Path(run_dir, runfiles.DVCLIVE_DIR).absolute()), resume=resumed, report=None,
                         save_dvc_exp=False, dvcyaml=None)
        self.live.log_params(params)
        self.last: dict[str, int] = {}

    def logged_through(self, name: str) -> int:
        if name not in self.last:  # a fresh session's files were removed by Live(resume=False)
            self.last[name] = _last_step(Path(self.live.plots_dir) / "metrics" / f"{name}.tsv")
        return self.last[name]

    def write(self, step: int, values: dict[str, float]) -> None:
        self.live.step = step
        for name, value in values.items():
            self.live.log_metric(name, value)
            self.last[name] = step

    def flush(self) -> None:
        self.live.next_step()  # writes the summary, metrics.json

    def close(self) -> None:
        self.live.end()


class _TensorBoard:
    name = "tensorboard"

    def __init__(self, run_dir: Path, params: dict, resumed: bool) -> None:
        from torch.utils.tensorboard import SummaryWriter

        # purge_step=0: what earlier sessions wrote is hidden; this session writes it all again.
        self.writer = SummaryWriter(log_dir=str(Path(run_dir, runfiles.TENSORBOARD_DIR)), purge_step=0)
        self.writer.add_text("params", "```\n" + json.dumps(params, indent=2, sort_keys=True, default=str) + "\n```", 0)
        self.last: dict[str, int] = {}

    def logged_through(self, name: str) -> int:
        return self.last.get(name, -1)

    def write(self, step: int, values: dict[str, float]) -> None:
        for name, value in values.items():
            self.writer.add_scalar(name, value, step)
            self.last[name] = step

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


_VIEWS = {"dvclive": _DVCLive, "tensorboard": _TensorBoard}


class Tracker:
    """The run's live views. ``start(resumed)`` opens them, ``log(history)`` appends to them,
    ``close()`` (or leaving a ``with`` block) ends them; a tracker with no views does nothing."""

    def __init__(self, run_dir: Path, params: dict, views: tuple[str, ...] = (),
                 log: Callable[[str], None] = tqdm.write) -> None:
        self.run_dir, self.params, self.wanted, self.print = Path(run_dir), params, tuple(views), log
        self.views: list = []
        self.started = False

    @classmethod
    def for_run(cls, eng: dict, run_dir: Path, params: dict, main: bool = True) -> Tracker:
        """The views ``eng`` asks for (raising if one is asked for and not installed); none off the main process."""
        if not main:
            return cls(run_dir, params)
        views = tuple(name for name, on in (("dvclive", dvclive_enabled(eng)),
                                            ("tensorboard", tensorboard_enabled(eng))) if on)
        return cls(run_dir, params, views)

    def start(self, resumed: bool) -> None:
        """Open the views; ``resumed``: the run continues from its checkpoint (its views go on)."""
        if self.started:
            return
        self.started = True
        for name in self.wanted:
            try:
                self.views.append(_VIEWS[name](self.run_dir, self.params, resumed))
            except _Skip as exc:
                self.print(f"{name}: {exc}")
            except Exception as exc:  # a side channel: it must never cost a training run
                self.print(f"{name}: not logging ({type(exc).__name__}: {exc})")

    def log(self, history: list[dict]) -> None:
        """Append the history's rows each view lacks (finite values only), in step order.

        Before :meth:`start`, the tracker starts as resumed: only a run restored from its
        checkpoint writes a history before training (a complete checkpoint writing its results).
        """
        if not self.wanted:
            return
        self.start(resumed=True)
        for view in list(self.views):
            try:
                new: dict[int, dict[str, float]] = {}
                for row in history:
                    name, step, value = f"{row['split']}/{row['metric']}", int(row["step"]), row["value"]
                    if _finite(value) and step > view.logged_through(name):
                        new.setdefault(step, {})[name] = float(value)
                for step in sorted(new):
                    view.write(step, new[step])
                if new:
                    view.flush()
            except Exception as exc:  # a side channel: it must never cost a training run
                self.print(f"{view.name}: stopped logging ({type(exc).__name__}: {exc})")
                self.views.remove(view)
                self._close(view)

    def close(self) -> None:
        for view in self.views:
            self._close(view)
        self.views = []

    def _close(self, view) -> None:
        try:
            view.close()
        except Exception as exc:
            self.print(f"{view.name}: not closed cleanly ({type(exc).__name__}: {exc})")

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

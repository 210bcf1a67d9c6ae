"""A simulated kill of a training run right after its n-th checkpoint is written: the crash a
resume must survive (tests of the engine, of live tracking, of an optimizer of the user's own)."""
from clipbench.engine import checkpoint


class Killed(BaseException):
    """A kill: not an Exception, so no handler in the run (a side channel's) swallows it."""


class DieAfterSaves:
    """Patches ``checkpoint.save``: the n-th save is written, then the run raises Killed.
    ``saves``: the steps saved so far; ``disarm()`` puts the real save back (for the resume)."""

    def __init__(self, monkeypatch, n: int) -> None:
        self.monkeypatch, self.n, self.real, self.saves = monkeypatch, n, checkpoint.save, []
        monkeypatch.setattr(checkpoint, "save", self._save)

    def _save(self, path, state) -> None:
        self.real(path, state)
        self.saves.append(state["step"])
        if len(self.saves) == self.n:
            raise Killed

    def disarm(self) -> None:
        self.monkeypatch.setattr(checkpoint, "save", self.real)

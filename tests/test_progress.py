"""Progress bars on a terminal, plain lines in log files (every Snakemake job writes to one)."""
from __future__ import annotations

import io

from clipbench import progress
from clipbench.progress import tqdm


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_log_file_gets_plain_lines_not_redrawn_bars(monkeypatch):
    monkeypatch.setattr(progress, "PLAIN_EVERY", 0.0)  # every update a line, to count them
    log = io.StringIO()
    with tqdm(total=3, desc="train", unit="step", file=log, leave=False, mininterval=0) as bar:
        for _ in range(3):
            bar.update(1)
    text = log.getvalue()
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    assert lines[0].startswith("train:   0%") and lines[-1].startswith("train: 100%") and "3/3" in lines[-1]
    assert len(lines) == len(set(lines)) == 4  # 0, 1, 2, 3: one line each, none repeated at close


def test_a_log_file_gets_a_line_every_half_minute_at_most():
    log = io.StringIO()
    for _ in tqdm(range(10_000), desc="decode", file=log):
        pass
    assert log.getvalue().count("\n") == 2  # the start and the end


def test_a_terminal_gets_tqdm_s_own_bar():
    term = Terminal()
    for _ in tqdm(range(3), desc="train", file=term, mininterval=0):
        pass
    assert "\r" in term.getvalue()

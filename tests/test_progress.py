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


def test_a_bar_collected_after_an_error_leaves_the_traceback_last():
    import gc

    log = io.StringIO()

    def crash():
        bar = tqdm(total=4, desc="train", file=log, leave=False)
        bar.update(1)
        log.write("RuntimeError: CUDA out of memory\n")  # what the interpreter prints on the way out
        raise RuntimeError

    try:
        crash()
    except RuntimeError:
        pass
    gc.collect()
    assert log.getvalue().splitlines()[-1] == "RuntimeError: CUDA out of memory"


def test_a_failure_record_quotes_the_exception_not_the_last_line(tmp_path):
    from clipbench import runfiles

    log = tmp_path / "train.log"
    log.write_text("Traceback (most recent call last):\n  File \"x\", line 1\ntorch.OutOfMemoryError: CUDA out of "
                   "memory.\ntrain:  25%|##5       | 1/4 [00:03<00:09,  3.11s/step]\n")
    m = runfiles.record_failure(tmp_path / "run", "classification", "sgd", 0, 1, log)
    assert m["failure"]["error"] == "torch.OutOfMemoryError: CUDA out of memory."
    killed = runfiles.record_failure(tmp_path / "run2", "classification", "sgd", 0, 137, None)
    assert killed["failure"]["error"].startswith("killed by SIGKILL")

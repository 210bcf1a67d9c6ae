"""Smoke test of the optimizer benchmark's command line (timings are not asserted)."""

import pytest

from clipbench.bench import optim as bench


def test_bench_main_runs(capsys):
    assert bench.main(["--rounds", "1", "--warmup", "0", "--methods", "clipped_sgd:coordinate:momentum"]) == 0
    out = capsys.readouterr().out
    assert "sgd" in out and "clipped_sgd:coordinate:momentum" in out and "x SGD" in out


def test_bench_rejects_unknown_method():
    with pytest.raises(SystemExit):
        bench.main(["--methods", "nope"])

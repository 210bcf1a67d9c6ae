"""The report's statistics, on numbers worked out by hand."""
import math

import pandas as pd
import pytest

from clipbench.report import stats


def test_t_interval_of_three_values():
    ci = stats.t_interval([1.0, 2.0, 3.0])
    half = 4.302652729911275 * 1.0 / math.sqrt(3)  # t_{0.975, 2} · sd / √n
    assert ci["mean"] == 2.0 and ci["sd"] == 1.0 and ci["n"] == 3
    assert ci["lo"] == pytest.approx(2 - half) and ci["hi"] == pytest.approx(2 + half) and ci["half"] == pytest.approx(half)
    assert stats.t_interval([5.0, None, float("nan")]) == {"mean": 5.0, "lo": None, "hi": None, "half": None, "n": 1, "sd": None}
    assert stats.t_interval([])["mean"] is None


def test_paired_difference_uses_common_seeds_and_says_when_it_excludes_zero():
    a = pd.Series({0: 0.60, 1: 0.62, 2: 0.61, 3: 0.9})
    b = pd.Series({0: 0.50, 1: 0.51, 2: 0.52})
    d = stats.paired_difference(a, b)
    assert d["n"] == 3 and d["seeds"] == [0, 1, 2] and d["mean"] == pytest.approx(0.1)
    assert d["excludes_zero"] and d["lo"] > 0
    same = stats.paired_difference(b, b + pd.Series({0: 0.01, 1: -0.01, 2: 0.0}))
    assert not same["excludes_zero"]


def test_total_variation_and_detrended_sd():
    assert stats.total_variation([0.1, 0.3, 0.2, 0.4]) == pytest.approx(0.2 + 0.1 + 0.2)
    assert stats.total_variation([0.5]) is None
    steps = list(range(100))
    assert stats.detrended_sd(steps, [2.0 - 0.01 * s for s in steps]) == pytest.approx(0.0, abs=1e-12)
    zigzag = [1.0 + (0.1 if s % 2 else -0.1) for s in steps]  # last quarter: ±0.1 around a flat line
    assert stats.detrended_sd(steps, zigzag) == pytest.approx(0.1, rel=0.05)
    assert stats.detrended_sd([1, 2], [1.0, 2.0]) is None


def test_time_to_target_and_the_target():
    epochs = pd.DataFrame({"epoch": [1, 2, 3], "step": [10, 20, 30], "value": [0.2, 0.5, 0.45],
                           "wall_time_s": [1.0, 2.0, 3.0]})
    assert stats.time_to_target(epochs, 0.45, True) == {"epoch": 2, "step": 20, "wall_time_s": 2.0}
    assert stats.time_to_target(epochs, 0.9, True) == {"epoch": None, "step": None, "wall_time_s": None}
    assert stats.time_to_target(epochs.drop(columns="wall_time_s"), 0.3, False)["step"] == 10
    # Above the baseline: the baseline plus a share of the best method's gain over it.
    assert stats.target_value(0.5, 0.1, 0.5, True) == pytest.approx(0.3)
    assert stats.target_value(28.8, 28.3, 0.5, True) == pytest.approx(28.55)  # PSNR over bicubic
    assert stats.target_value(0.5, None, 0.9, True) == pytest.approx(0.45)
    assert stats.target_value(0.9, None, 0.9, False) == pytest.approx(1.0)

"""Bad config: each mistake stops before any job, naming the key and what it allows.

(At the Snakemake level for a wrong method name, a negative lr and misspelt keys:
tests/test_workflow.py::test_bad_config_stops_before_any_job; for the kinds below:
test_workflow_faults.py::test_bad_config_stops_snakemake_before_any_job.)
"""
from __future__ import annotations

import pytest

from clipbench import config as cfgmod

CASES = {
    "unknown key": ({"tasks": {"classification": {"methods": {"sgd": {"lrr": 0.1}}}}},
                    "tasks.classification.methods.sgd", ["'lrr' was unexpected", "allowed: batch_multiplier, lr,"]),
    "unknown top-level key": ({"egnine": {"device": "cpu"}}, "<top level>",
                              ["'egnine' was unexpected", "allowed: datasets, engine, heavytail, noise, report, resources, run, tasks, tuning, weights"]),
    "wrong type": ({"tasks": {"classification": {"epochs": "four"}}}, "tasks.classification.epochs",
                   ["is not of type 'integer'"]),
    "impossible value": ({"tasks": {"classification": {"methods": {"sgd": {"lr": -0.1}}}}},
                         "tasks.classification.methods.sgd.lr", ["less than or equal to the minimum of 0"]),
    "impossible clip level": ({"tasks": {"classification": {"methods": {"clipped_sgd": {"clip_level": 0}}}}},
                              "tasks.classification.methods.clipped_sgd.clip_level", ["minimum of 0"]),
    "unknown task": ({"run": {"tasks": ["classification", "detection"]}}, "run.tasks.1",
                     ["'detection' is not one of ['classification', 'segmentation', 'superres']"]),
    "unknown method": ({"run": {"methods": ["sgd", "lion"]}}, "run.methods.1",
                       ["'lion' is not one of the thesis' methods (sgd, adam, clipped_sgd, clipped_sstm, sstm"]),
    "unknown clipping": ({"tasks": {"classification": {"methods": {"clipped_sgd": {"clipping": "abs"}}}}},
                         "tasks.classification.methods.clipped_sgd.clipping",
                         ["'abs' is not one of ['norm', 'layer', 'coordinate', 'none']"]),
    "duplicate seeds": ({"run": {"seeds": [0, 1, 0]}}, "run.seeds", ["has non-unique elements"]),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_config_names_the_key_and_what_it_allows(default_config, case):
    override, key, words = CASES[case]
    with pytest.raises(cfgmod.ConfigError) as err:
        cfgmod.validate(cfgmod.deep_merge(default_config, override))
    line = next(li for li in str(err.value).splitlines() if li.strip().startswith(key + ":"))
    for word in words:
        assert word in line, line


BOMB = """\
a: &a [x, x, x, x, x, x, x, x, x, x]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]
h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g, *g]
i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h, *h]
"""


def test_alias_bomb_is_refused_at_once(tmp_path):
    """A 400-byte config whose aliases expand to 10^9 values (under an unknown key, whose error
    message would print it): refused by its size before the validator walks it."""
    import time

    path = tmp_path / "bomb.yaml"
    path.write_text("tasks:\n  classification:\n    epochs: 2\nbomb:\n" + "".join("  " + ln + "\n" for ln in BOMB.splitlines()))
    assert path.stat().st_size < 1024
    t0 = time.monotonic()
    with pytest.raises(cfgmod.ConfigError) as err:
        cfgmod.load(path)
    assert time.monotonic() - t0 < 10
    assert "expands to more than 200,000 values" in str(err.value) and "aliases" in str(err.value)
    assert str(path) in str(err.value)


def test_the_thesis_config_is_far_below_the_size_limit():
    import yaml

    from pathlib import Path

    thesis = yaml.safe_load((Path(__file__).resolve().parents[2] / "config/thesis.yaml").read_text())
    cfgmod.check_expanded_size(thesis)  # no error
    count, stack = 0, [thesis]
    while stack:
        item = stack.pop()
        count += 1
        stack.extend(item.values() if isinstance(item, dict) else item if isinstance(item, list) else [])
    assert count * 50 < cfgmod.MAX_CONFIG_VALUES, count

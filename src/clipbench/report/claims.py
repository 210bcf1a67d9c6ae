"""Every verdict the report states, as data: ``report/claims.json``.

A claim is one record: what kind of comparison (``kind``), on which task, about which
``subjects``, on which ``metric``; its ``estimate`` and ``interval`` (full precision), the
number ``n`` of independent units behind them (seeds, runs, samples), the ``margin`` of
practical relevance it was judged against, the ``verdict`` (a word from :data:`VERDICTS`)
and the ``sentence`` the page prints. The page renders sentences only from these records,
so a reader can check each one against its numbers.

Directions follow the practical-equivalence logic of Schuirmann's two one-sided tests
(Schuirmann 1987, *J. Pharmacokinet. Biopharm.* 15:657; Lakens 2017, *Soc. Psychol.
Personal. Sci.* 8:355): a difference is

- a direction (``better``/``worse``, ``less``/``more``) only when its 95% interval excludes 0
  *and* its estimate reaches the margin;
- ``equivalent`` ("practically equivalent") when its 90% interval (the two one-sided tests
  at 5% each) lies inside ±margin;
- ``undecided`` ("these seeds cannot tell") otherwise, and ``too_few`` below two paired units.
"""
from __future__ import annotations

import math

import numpy as np
from scipy import stats as st

LEVEL = 0.95  # a direction: the two-sided interval excludes 0
TOST_LEVEL = 0.90  # equivalence: two one-sided tests at 5% each

VERDICTS = {
    "better", "worse",  # paired differences, baselines (a method against what it is compared with)
    "less", "more",  # stability (oscillates less / more)
    "equivalent", "undecided", "too_few",
    "heavy_tailed", "not_heavy_tailed",  # tail index
    "consistent", "inconsistent",  # noise against its Gaussian reference
    "reached", "not_reached",  # time to target
    "wider", "narrower",  # tuning: the range of good settings
    "above", "within", "below",  # against a trivial baseline
}
FIELDS = ("kind", "task", "subjects", "metric", "estimate", "interval", "n", "margin", "verdict", "sentence")


def _num(x):
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def make(kind: str, task: str | None, subjects, metric: str | None, estimate, interval, n: int,
         margin, verdict: str, sentence: str, **detail) -> dict:
    """One claim record (see the module's docstring); ``detail`` holds anything else a reader may
    want (the equivalence interval, a reason), kept apart from the contract's fields."""
    if verdict not in VERDICTS:
        raise ValueError(f"claim {kind}/{task}: unknown verdict {verdict!r} (known: {', '.join(sorted(VERDICTS))})")
    lo, hi = (interval or (None, None))
    return {"kind": kind, "task": task, "subjects": list(subjects), "metric": metric,
            "estimate": _num(estimate), "interval": [_num(lo), _num(hi)] if interval is not None else None,
            "n": int(n), "margin": _num(margin), "verdict": verdict, "sentence": sentence,
            **({"detail": detail} if detail else {})}


def t_interval(values, level: float = LEVEL) -> dict:
    """Mean and ``level`` t interval of the finite ``values``; no interval for n < 2."""
    x = np.asarray([float(v) for v in values if v is not None and np.isfinite(float(v))], dtype=float)
    n = len(x)
    if n == 0:
        return {"mean": None, "lo": None, "hi": None, "n": 0}
    mean = float(x.mean())
    if n < 2:
        return {"mean": mean, "lo": None, "hi": None, "n": 1}
    half = float(st.t.ppf((1 + level) / 2, n - 1)) * float(x.std(ddof=1)) / math.sqrt(n)
    return {"mean": mean, "lo": mean - half, "hi": mean + half, "n": n}


def decide(diffs, margin: float) -> dict:
    """The practical verdict on the per-unit differences ``diffs`` (a − b) against ±``margin``.

    Returns ``verdict`` ∈ {"positive", "negative", "equivalent", "undecided", "too_few"} (the
    sign of a direction, not yet its meaning), the 95% interval and the 90% (TOST) one.
    """
    ci, tost = t_interval(diffs, LEVEL), t_interval(diffs, TOST_LEVEL)
    out = {"estimate": ci["mean"], "interval": (ci["lo"], ci["hi"]), "tost_interval": (tost["lo"], tost["hi"]),
           "n": ci["n"]}
    if ci["n"] < 2:
        return {**out, "verdict": "too_few"}
    if (ci["lo"] > 0 or ci["hi"] < 0) and abs(ci["mean"]) >= margin:
        return {**out, "verdict": "positive" if ci["mean"] > 0 else "negative"}
    if -margin < tost["lo"] and tost["hi"] < margin:
        return {**out, "verdict": "equivalent"}
    return {**out, "verdict": "undecided"}


def fmt(x, digits: int = 3) -> str:
    """A number as a sentence shows it: enough significant digits to see its size."""
    if x is None or not math.isfinite(float(x)):
        return "–"
    x = float(x)
    if x != 0 and (abs(x) < 10 ** -(digits - 1) or abs(x) >= 10 ** 5):
        return f"{x:.{digits - 1}e}"
    return f"{x:.{digits}g}" if abs(x) >= 1 else f"{x:.{digits}f}".rstrip("0").rstrip(".") if x else "0"


def span(d: dict, digits: int = 3, unit: str = "") -> str:
    """"+0.012 [−0.003, +0.027] over 3 seeds", the 95% interval of a :func:`decide` result."""
    lo, hi = d["interval"]
    if lo is None:
        return f"{_signed(d['estimate'], digits)}{unit} from {d['n']} unit(s), no interval"
    return f"{_signed(d['estimate'], digits)}{unit}, 95% interval [{_signed(lo, digits)}, {_signed(hi, digits)}]"


def _signed(x, digits: int) -> str:
    return "–" if x is None else ("+" if x >= 0 else "−") + fmt(abs(x), digits)

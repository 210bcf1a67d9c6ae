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

from clipbench.report.stats import t_interval

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
    "active", "inactive",  # whether a clipped method's clipping changed its steps
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
    """A number as a sentence shows it: ``digits`` decimals, scientific when that would hide it,
    whole numbers from 1000 on (counts of samples, steps)."""
    if x is None or not math.isfinite(float(x)):
        return "–"
    x = float(x)
    if x == 0:
        return "0"
    if abs(x) < 10 ** -(digits - 1):
        return f"{x:.{digits - 1}e}"
    return f"{x:.0f}" if abs(x) >= 1000 else f"{x:.{digits}f}"


def span(d: dict, digits: int = 3, unit: str = "") -> str:
    """"+0.012 [−0.003, +0.027] over 3 seeds", the 95% interval of a :func:`decide` result."""
    lo, hi = d["interval"]
    if lo is None:
        return f"{_signed(d['estimate'], digits)}{unit} from {d['n']} unit(s), no interval"
    return f"{_signed(d['estimate'], digits)}{unit}, 95% interval [{_signed(lo, digits)}, {_signed(hi, digits)}]"


def _signed(x, digits: int) -> str:
    return "–" if x is None else ("+" if x >= 0 else "−") + fmt(abs(x), digits)


def margins(config: dict | None) -> dict:
    """The ``report`` section of a validated config, or the schema's defaults without one."""
    section = (config or {}).get("report")
    if section is None:
        from clipbench import config as cfgmod

        props = cfgmod.load_schema()["properties"]["report"]["properties"]
        section = {k: v.get("default") for k, v in props.items()}
    return section


def metric_margin(section: dict, metric: str, reference: float | None = None) -> float:
    """A metric's margin: its configured value, else ``relative_margin`` × |reference|."""
    fixed = (section.get("margins") or {}).get(metric)
    if fixed is not None:
        return float(fixed)
    if reference is None or not math.isfinite(reference) or reference == 0:
        raise ValueError(f"report.margins.{metric}: no margin configured for {metric!r} and no reference value "
                         f"to take relative_margin of; add report.margins.{metric} to the config")
    return float(section["relative_margin"]) * abs(reference)


# How a decided sign reads, per kind of comparison: (positive, negative) verdicts.
_SIGNS = {"higher": ("better", "worse"), "lower": ("worse", "better"), "oscillation": ("more", "less"),
          "baseline_higher": ("above", "below"), "baseline_lower": ("below", "above")}


def compare(kind: str, task: str | None, subjects, metric: str, diffs, margin: float, reading: str,
            what: str, a: str, b: str, unit: str = "", digits: int = 3, **detail) -> dict:
    """A claim on the paired differences ``diffs`` (a − b per seed) against ±``margin``.

    ``reading`` names how a sign reads (a key of ``_SIGNS``); ``what`` is the measure in words
    ("val top-1 accuracy"); ``a`` and ``b`` are the two sides as the sentence names them.
    """
    d = decide(diffs, margin)
    pos, neg = _SIGNS[reading]
    verdict = {"positive": pos, "negative": neg}.get(d["verdict"], d["verdict"])
    if verdict == "equivalent" and reading.startswith("baseline"):
        verdict = "within"
    m = f"±{fmt(margin, digits)}{unit}"
    if d["verdict"] == "too_few":
        sentence = (f"{a} vs {b}, {what}: {d['n']} paired seed(s), too few for an interval; "
                    f"these seeds cannot tell.")
    elif d["verdict"] in ("positive", "negative"):
        word = {"better": "is better than", "worse": "is worse than", "more": "oscillates more than",
                "less": "oscillates less than", "above": "is better than", "below": "is worse than"}[verdict]
        sentence = (f"{a} {word} {b} on {what}: {a} − {b} = {span(d, digits, unit)} over {d['n']} seeds, "
                    f"which excludes 0 and reaches the practical margin of {m}.")
    elif d["verdict"] == "equivalent":
        lo, hi = d["tost_interval"]
        sentence = (f"{a} and {b} are practically equivalent on {what}: {a} − {b} = {_signed(d['estimate'], digits)}{unit}, "
                    f"and its 90% interval [{_signed(lo, digits)}, {_signed(hi, digits)}] lies inside {m} "
                    f"(two one-sided tests, Schuirmann 1987), over {d['n']} seeds.")
    else:
        sentence = (f"{a} vs {b} on {what}: {a} − {b} = {span(d, digits, unit)} over {d['n']} seeds; "
                    f"these seeds cannot tell (they show neither a difference of at least {fmt(margin, digits)}{unit} "
                    f"nor equivalence within {m}).")
    return make(kind, task, subjects, metric, d["estimate"], d["interval"], d["n"], margin, verdict, sentence,
                tost_interval=list(d["tost_interval"]), **detail)


def write(records: list[dict], path) -> None:
    """``claims.json``: every record, checked for the contract's fields."""
    from clipbench import files

    for r in records:
        missing = [f for f in FIELDS if f not in r]
        if missing:
            raise ValueError(f"claim {r.get('kind')}/{r.get('task')}: missing field(s) {', '.join(missing)}")
    files.write_json(path, {"claims": records})

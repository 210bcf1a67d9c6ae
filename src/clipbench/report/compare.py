"""Comparisons the report states in words: method against method (paired by seed), method
against its task's trivial baseline, and whether a clipped method's clipping was active.

Every verdict is a claim record (:mod:`clipbench.report.claims`) made here from the numbers,
judged against the metric's practical margin, so the page never says more than they do.
"""
from __future__ import annotations

import pandas as pd

from clipbench.report import claims, stats
from clipbench.report.names import METRIC_LABEL, TWIN, main_metric, method_label, ordered_methods
from clipbench.tasks import registry

# A clipped run that clipped in fewer than this share of its steps was its unclipped twin.
INACTIVE_CLIPPING = 0.01
# Settings that make a method clip: the only ones a clipped method and its twin may differ in.
CLIP_KEYS = frozenset({"clipping", "clip_level", "clip_target", "B", "twin", "optimizer"})


def _method_configs(config: dict | None, task: str) -> dict[str, dict]:
    return ((((config or {}).get("tasks") or {}).get(task) or {}).get("methods")) or {}


def twins(config: dict | None, task: str, methods) -> dict[str, str]:
    """Each clipped method of ``task`` and the method it is compared with: its declared
    ``twin``, else the default pairs (clipped-SGD/SGD, clipped-SSTM/SSTM); both must have run."""
    present = set(methods)
    declared = {m: c["twin"] for m, c in _method_configs(config, task).items() if (c or {}).get("twin")}
    pairs = {**{m: t for m, t in TWIN.items() if m not in declared}, **declared}
    return {m: t for m, t in pairs.items() if m in present and t in present}


def _defaults() -> dict:
    """Every thesis method setting's schema default: a key one config leaves out has this value."""
    from clipbench import config as cfgmod
    from clipbench.optim.build import METHODS

    definitions = cfgmod.load_schema()["definitions"]
    return {key: prop["default"] for name in METHODS
            for key, prop in definitions[name]["properties"].items() if "default" in prop}


def confounds(config: dict | None, task: str, a: str, b: str) -> list[str]:
    """The settings other than clipping in which ``a`` and ``b`` differ ("lr 0.001 vs 0.0001")."""
    cfgs = _method_configs(config, task)
    ca, cb = cfgs.get(a), cfgs.get(b)
    if ca is None or cb is None:
        return []
    default = _defaults()
    out = []
    for key in sorted((set(ca) | set(cb)) - CLIP_KEYS):
        va, vb = ca.get(key, default.get(key)), cb.get(key, default.get(key))
        if va != vb:
            out.append(f"{key} {'–' if va is None else va} vs {'–' if vb is None else vb}")
    return out


def higher_is_better(task: str) -> bool:
    try:
        return registry.get(task).higher_is_better
    except ValueError:
        return True


def _by_seed(summary: pd.DataFrame, task: str, metric: str, split: str = "val") -> dict[str, pd.Series]:
    d = summary[(summary["task"] == task) & (summary["split"] == split) & (summary["metric"] == metric)]
    return {m: g.groupby("seed")["value"].mean() for m, g in d.groupby("method")}


def _what(metric: str) -> str:
    return f"val {METRIC_LABEL.get(metric, metric)}".replace(" (dB)", "")


def _unit(metric: str) -> str:
    return " dB" if "(dB)" in METRIC_LABEL.get(metric, "") else ""


def paired_diffs(a: pd.Series, b: pd.Series) -> tuple[list[float], list]:
    """a − b over the seeds both have (finite values only), and those seeds."""
    d = stats.paired_difference(a, b)
    return [float(a[s]) - float(b[s]) for s in d["seeds"]], d["seeds"]


def paired_table(summary: pd.DataFrame, task: str, section: dict | None = None, config: dict | None = None) -> dict:
    """Clipped method − its twin, and every method − the task's best, on the val main metric,
    each a ``paired`` claim against the metric's margin. A twin pair whose settings differ in
    more than clipping (``config``) is labelled confounded, naming the keys."""
    section = section or claims.margins(None)
    metric, hib = main_metric(task), higher_is_better(task)
    series = _by_seed(summary, task, metric)
    means = {m: s.mean() for m, s in series.items() if s.notna().any()}
    if not means:
        return {"metric": metric, "best": None, "rows": [], "n_seeds": 0}
    best = (max if hib else min)(means, key=means.get)
    methods = ordered_methods(means)
    # Every twin pair of the task, also one whose side has no value (every seed diverged before
    # its first evaluation, or failed): "too few to tell" says so where the question is asked.
    twin_of = twins(config, task, summary.loc[summary["task"] == task, "method"].dropna().unique())
    pairs = list(twin_of.items())
    # Against the best: each method once (a twin pair that includes the best already says it).
    pairs += [(m, best) for m in methods if m != best and (m, best) not in pairs and (best, m) not in pairs]
    rows = []
    none = pd.Series(dtype=float)
    for a, b in pairs:
        diffs, seeds = paired_diffs(series.get(a, none), series.get(b, none))
        la, lb = method_label(a), method_label(b)
        relation = "twin" if twin_of.get(a) == b else "best"
        mixed = confounds(config, task, a, b) if relation == "twin" else []
        reference = means.get(b, means.get(a, means[best]))
        claim = claims.compare("paired", task, [a, b], metric, diffs, claims.metric_margin(section, metric, reference),
                               "higher" if hib else "lower", _what(metric), la, lb, _unit(metric),
                               relation=relation, seeds=[int(s) for s in seeds], confounded=mixed)
        if mixed:
            claim["sentence"] = (f"Confounded: {la} and its twin {lb} also differ in {'; '.join(mixed)}, so this "
                                 f"compares more than clipping. " + claim["sentence"])
        label = f"{la} − {lb}" + (" (confounded)" if mixed else "")
        rows.append({"a": a, "b": b, "label": label, "kind": relation, "confounded": mixed, "claim": claim})
    return {"metric": metric, "best": best, "best_label": method_label(best), "rows": rows,
            "n_seeds": max(int(s.notna().sum()) for s in series.values())}


def baseline_claims(summary: pd.DataFrame, task: str, baselines: list[dict], section: dict | None = None) -> list[dict]:
    """Each method against each training-free baseline: is it practically better than it?"""
    section = section or claims.margins(None)
    metric, hib = main_metric(task), higher_is_better(task)
    out = []
    for method, series in _by_seed(summary, task, metric).items():
        for b in baselines:
            value = (b["metrics"].get(metric) or {}).get("mean")
            if value is None:
                continue
            diffs = [float(v) - float(value) for v in series.dropna()]
            claim = claims.compare("baseline", task, [method, b["label"]], metric, diffs,
                                   claims.metric_margin(section, metric, value),
                                   "baseline_higher" if hib else "baseline_lower", _what(metric), method_label(method),
                                   b["phrase"], _unit(metric), baseline=float(value))
            out.append(claim)
    return out


def clipping_claims(summary: pd.DataFrame, task: str, twin_of: dict[str, str] | None = None) -> list[dict]:
    """Per clipped method: the share of steps its clipping changed, and whether that was ever
    enough for it to differ from its unclipped twin."""
    runs = summary[(summary["task"] == task) & (summary["split"] == "run") & (summary["metric"] == "clip_fraction")]
    twin_of = TWIN if twin_of is None else twin_of
    out = []
    for method, g in runs.groupby("method"):
        twin = twin_of.get(method)
        fractions = g["value"].dropna()
        if not twin or fractions.empty:
            continue
        idle = int((fractions < INACTIVE_CLIPPING).sum())
        lo, hi, mean = float(fractions.min()), float(fractions.max()), float(fractions.mean())
        share = f"{100 * mean:.1f}% of steps (runs: {100 * lo:.1f}–{100 * hi:.1f}%)"
        if idle:
            verdict = "inactive"
            sentence = (f"{method_label(method)}: clipping changed {share}; in {idle} of {len(fractions)} run(s) it was "
                        f"active in under {100 * INACTIVE_CLIPPING:g}% of steps, so there it behaved as its unclipped "
                        f"twin, {method_label(twin)}.")
        else:
            verdict = "active"
            sentence = f"{method_label(method)}: clipping changed {share}, in every run above {100 * INACTIVE_CLIPPING:g}%."
        out.append(claims.make("clipping", task, [method, twin], "clip_fraction", mean, (lo, hi), len(fractions),
                               INACTIVE_CLIPPING, verdict, sentence))
    return out


def flag_rows(rows: list[dict], records: list[dict]) -> None:
    """Add ``flags`` to ``tables.final_table`` rows: the sentences of the claims that warn
    about the method (no better than a baseline; clipping that was not active)."""
    for row in rows:
        row["flags"] = [c["sentence"] for c in records
                        if c["subjects"] and c["subjects"][0] == row["method"]
                        and ((c["kind"] == "baseline" and c["verdict"] != "above")
                             or (c["kind"] == "clipping" and c["verdict"] == "inactive"))]

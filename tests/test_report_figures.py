"""The report's figures: bands inside the metric's range, the stability panels titled and labelled,
and the one way a figure is inlined in the page."""
from __future__ import annotations

import base64

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PolyCollection

from clipbench.report import figures
from clipbench.report.dynamics import MEASURES
from clipbench.report.names import task_label


def test_bands_are_clipped_to_the_metric_range():
    near_one = [0.99, 0.80, 1.0]  # 3 seeds: the t interval reaches far past 1
    lo, hi = figures.t_band(near_one)
    assert hi > 1  # unclipped
    lo, hi = figures.t_band(near_one, *figures.metric_range("top1"))
    assert 0 <= lo <= hi == 1.0
    assert figures.band_within(0.0, 1.0)([0.01, 0.2, 0.0])[0] == 0.0
    for metric in ("top5", "miou", "pixel_acc", "iou_cat"):
        assert figures.metric_range(metric) == (0, 1)
    assert figures.metric_range("psnr") == figures.metric_range("loss") == (0, None)
    assert figures.clip_band((-3.0, 2.0), 0.0, None) == (0.0, 2.0)
    assert figures.clip_band((-3.0, 2.0)) == (-3.0, 2.0)  # an unbounded metric keeps its band
    assert figures.t_band([0.5]) == (0.5, 0.5)  # one seed: no band


def _history(metric="top1", seeds=(0.99, 0.75, 1.0)):
    rows = []
    for method in ("sgd", "clipped_sgd"):
        for seed, top in enumerate(seeds):
            for epoch in (1, 2, 3):
                for split in ("train", "val"):
                    rows.append({"task": "classification", "method": method, "seed": seed, "epoch": epoch,
                                 "step": epoch, "split": split, "metric": metric, "value": top})
    return pd.DataFrame(rows)


def test_accuracy_curve_band_never_passes_one():
    grid = figures.curve_grid("classification", "top1", _history())
    try:
        tops = [poly.get_paths()[0].vertices[:, 1].max() for ax in grid.axes.flat
                for poly in ax.collections if isinstance(poly, PolyCollection)]
        assert tops and max(tops) == pytest.approx(1.0)  # the band is there, and stops at 1
        for split, ax in grid.axes_dict.items():
            assert ax.get_title() == figures.SPLIT_TITLE[split] and ax.get_xlabel() == "epoch"
        assert grid.axes_dict["train"].get_ylabel() == "top-1 accuracy"
    finally:
        plt.close(grid.figure)


def _runs(task, rng):
    return pd.DataFrame([{"method": m, "seed": s, "total_variation": rng.uniform(0.01, 0.2),
                          "loss_sd": rng.uniform(0.0, 0.05)} for m in ("sgd", "clipped_sgd", "adam") for s in range(3)])


def test_stability_panels_are_titled_and_their_axes_named(tmp_path):
    rng = np.random.default_rng(0)
    per_run = {t: _runs(t, rng) for t in ("classification", "segmentation", "superres")}
    fig = figures.stability_grid(per_run)
    try:
        axes = np.asarray(fig.axes).reshape(len(MEASURES), len(per_run))
        for j, task in enumerate(per_run):
            for i, key in enumerate(MEASURES):
                ax = axes[i, j]
                title = ax.get_title()
                assert title.startswith(task_label(task))  # which task
                assert MEASURES[key].split(" ")[0] in title  # which measure
                assert ax.get_xlabel() == "method" and "(" in ax.get_ylabel()  # a unit in the y label
                assert [t.get_text() for t in ax.get_xticklabels()] == ["SGD", "clipped-SGD", "Adam"]
                assert ax.get_ylim()[0] == 0  # both measures are >= 0
                # Text a reader can read: nothing smaller than 9 pt.
                assert min(t.get_fontsize() for t in [ax.title, ax.xaxis.label, ax.yaxis.label,
                                                      *ax.get_xticklabels(), *ax.get_yticklabels()]) >= 9
        assert "dB" in axes[0, 2].get_ylabel() and "0-1" in axes[0, 0].get_ylabel()
        assert "nats" in axes[1, 0].get_ylabel() and "MSE" in axes[1, 2].get_ylabel()
    finally:
        plt.close(fig)
    path = figures.stability_figure(per_run, tmp_path)
    assert path.stat().st_size > 1000 and path.with_suffix(".svg").is_file()
    assert figures.stability_figure({"superres": _runs("superres", rng).iloc[:0]}, tmp_path / "none") is None


def test_figures_are_the_same_files_however_drawn(tmp_path):
    """Curves drawn by two processes or by one, and the stability figure drawn twice (its dots'
    jitter is seeded, its SVG undated with fixed ids), are byte for byte the same files."""
    history = pd.concat([_history(), _history("loss", (0.5, 0.4, 0.3))])
    one = figures.curve_figures(history, tmp_path / "one")
    two = figures.curve_figures(history, tmp_path / "two", workers=2)
    assert [p.name for p in one["classification"]] == [p.name for p in two["classification"]] == \
        ["classification_top1.png", "classification_loss.png"]
    for a, b in zip(one["classification"], two["classification"]):
        assert a.read_bytes() == b.read_bytes()
    rng = np.random.default_rng(0)
    per_run = {t: _runs(t, rng) for t in ("classification", "superres")}
    np.random.seed(123)
    paths = [figures.stability_figure(per_run, tmp_path / d) for d in ("a", "b")]
    assert np.random.randint(1000) == np.random.RandomState(123).randint(1000)  # the global generator left alone
    for suffix in (".png", ".svg"):
        assert paths[0].with_suffix(suffix).read_bytes() == paths[1].with_suffix(suffix).read_bytes()


def test_embed_inlines_a_figure_and_prefers_its_svg(tmp_path):
    png = tmp_path / "figures" / "curve.png"
    png.parent.mkdir()
    png.write_bytes(b"\x89PNG fake")
    uri = figures.embed(png)
    assert uri == "data:image/png;base64," + base64.b64encode(b"\x89PNG fake").decode()
    shown = figures.figure(png, tmp_path, caption="a curve")
    assert shown == {"path": "figures/curve.png", "name": "curve", "caption": "a curve", "uri": uri}
    assert figures.figure(png, tmp_path / "elsewhere", name="other")["path"] == png.as_posix()  # outside: as given
    png.with_suffix(".svg").write_text("<svg/>")  # the page shows the SVG beside the PNG; the .tex the PNG
    assert figures.embed(png) == "data:image/svg+xml;base64," + base64.b64encode(b"<svg/>").decode()
    assert figures.figure(png, tmp_path)["path"] == "figures/curve.png"

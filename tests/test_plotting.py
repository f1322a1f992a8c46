"""The shared figure style: plain log ticks, 'none' for all-zero shares, maps with one colour bar,
and a smoke banner that covers no label."""
from __future__ import annotations

from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from regstudy import plotting  # noqa: E402

SMOKE = SimpleNamespace(smoke=True, label="SMOKE RUN (tiny CPU models, not a result)")


@pytest.fixture(autouse=True)
def _close():
    plotting.style()
    yield
    plt.close("all")


def tick_labels(ax, axis="x"):
    ax.figure.canvas.draw()
    lo, hi = sorted(ax.get_xlim() if axis == "x" else ax.get_ylim())
    a = ax.xaxis if axis == "x" else ax.yaxis
    return [t.get_text() for t, v in zip(a.get_ticklabels(), a.get_ticklocs()) if lo <= v <= hi and t.get_text()]


@pytest.mark.parametrize("lo, hi", [(0.6, 7.0), (2.5, 3.2), (0.003, 3.0)])
def test_log_axis_has_plain_labels(lo, hi):
    fig, ax = plt.subplots()
    ax.plot([lo, hi], [1, 2])
    plotting.log_axis(ax, "x")
    ax.set_xlim(lo, hi)
    labels = tick_labels(ax)
    assert 2 <= len(labels) <= 8
    assert all("times" not in t and "^" not in t for t in labels), labels


def test_log_axis_writes_thousands_and_millions_with_k_and_m():
    fig, ax = plt.subplots()
    ax.plot([1e5, 3e6], [1, 2])
    plotting.log_axis(ax, "x")
    ax.set_xlim(1e5, 3e6)
    labels = tick_labels(ax)
    assert "1M" in labels and "200k" in labels, labels
    assert not any("e+" in t for t in labels), labels
    assert [plotting.plain_number(v) for v in (0.5, 20, 1500, 2.5e6)] == ["0.5", "20", "1.5k", "2.5M"]


def test_share_axis_says_none_for_all_zero():
    fig, ax = plt.subplots()
    ax.plot([0, 1, 2], [0, 0, 0])
    plotting.share_axis(ax, [0.0, 0.0, None])
    assert ax.get_ylim() == (0.0, 1.0)
    assert any(t.get_text().startswith("none") for t in ax.texts)


def test_min_span_widens_a_narrow_axis_only():
    fig, ax = plt.subplots()
    ax.set_ylim(93.25, 95.0)
    plotting.min_span(ax, 10)
    lo, hi = ax.get_ylim()
    assert hi - lo == pytest.approx(10) and lo <= 93.25 and hi >= 95.0
    ax.set_ylim(20, 60)
    plotting.min_span(ax, 10)
    assert ax.get_ylim() == (20, 60)


def test_relative_attention_is_one_on_average():
    m = plotting.relative_attention(np.random.default_rng(0).random((3, 7, 7)))
    assert np.allclose(m.mean((-2, -1)), 1.0)


def test_map_grid_one_colour_bar_and_marks(tmp_path):
    n = 10
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (n, 28, 28))
    maps = [rng.random((n, 7, 7)), rng.random((n, 7, 7))]
    marks = [maps[0] > 0.9, None]
    fig = plt.figure(figsize=plotting.grid_figsize(n, 3), layout="constrained")
    axes = plotting.map_grid(fig, images, maps, ["image", "a", "b"], marks=marks, cbar_label="x")
    assert axes.shape == (6, 8)                       # 10 images wrap into two bands of 3 rows
    assert len(fig.axes) == axes.size + 1             # one colour bar
    assert sum(len(ax.patches) for ax in axes.ravel()) == int(marks[0].sum())
    assert "(none flagged here)" in plotting.marks_note([None])
    fig = plt.figure(figsize=plotting.grid_figsize(3, 4, transpose=True), layout="constrained")
    axes = plotting.map_grid(fig, images[:3], [m[:3] for m in maps] + [maps[0][:3]], ["i", "a", "b", "c"],
                             cbar_label="x", transpose=True)
    assert axes.shape == (3, 4)


def test_save_writes_png_and_pdf_with_banner_above_the_labels(tmp_path):
    fig, axes = plt.subplots(1, 2, figsize=(6, 2.5), layout="constrained")
    for ax in axes:
        ax.plot([1, 2], [1, 2], label="a")
        ax.set_xlabel("x (unit)")
    plotting.figure_legend(fig, axes[0])
    plotting.title(fig, SMOKE, "a title long enough to be wrapped to the width of the figure " * 3)
    saved = plotting.save(fig, SMOKE, tmp_path, "f")
    assert [p.name for p in saved] == ["f.png", "f.pdf"] and all(p.stat().st_size > 0 for p in saved)
    r = fig.canvas.get_renderer()
    banner = fig.texts[-1].get_window_extent(r)
    others = [fig._suptitle.get_window_extent(r)] + [ax.get_tightbbox(r) for ax in axes]
    assert all(banner.y0 >= b.y1 for b in others)
    assert fig.get_figwidth() == 6                    # the title wrapped instead of widening the canvas
    assert "\n" in fig._suptitle.get_text()


def test_mixture_histogram_draws_the_fit_scaled_to_the_counts_and_every_level():
    from regstudy import norms
    rng = np.random.default_rng(0)
    v = np.concatenate([np.exp(rng.normal(np.log(8), 0.25, 19_600)), np.exp(rng.normal(np.log(80), 0.15, 400))])
    rule = norms.fit_outlier_rule(v)
    fig, ax = plt.subplots()
    plotting.mixture_histogram(ax, v, rule.to_dict(), bins=60)
    labels = ax.get_legend_handles_labels()[1]
    assert sum(lab.startswith("component") for lab in labels) == rule.components == 2
    assert any(lab.startswith("outlier threshold") for lab in labels) and "outlier tokens" in labels
    mixture = next(line for line in ax.lines if line.get_label().startswith("mixture of"))
    bulk = max(ax.patches[0].get_data().values)         # the tallest bin ...
    assert 0.8 < mixture.get_ydata().max() / bulk < 1.25   # ... and the fit's peak, in the same unit (tokens per bin)
    assert ax.get_xscale() == "log" and "(count)" in ax.get_ylabel()
    # a rule without an outlier mode: its levels are legend entries that say so, no threshold line
    u = np.exp(rng.normal(np.log(8), 0.3, 20_000))
    fig, ax = plt.subplots()
    plotting.mixture_histogram(ax, u, norms.fit_outlier_rule(u), log_y=True)
    labels = ax.get_legend_handles_labels()[1]
    assert any(lab.startswith("mixture rule: no threshold") for lab in labels)
    assert "no outlier threshold: the rules do not agree" in labels and "outlier tokens" not in labels
    assert ax.get_yscale() == "log"


def test_lost_degree_map_has_a_colour_bar_and_the_boxes_on_both_panels():
    fig, axes = plt.subplots(1, 2, layout="constrained")
    deg = np.arange(16)
    plotting.lost_degree_map(axes, np.zeros((16, 16)), deg, (4, 4), 4, 0, [0, 0, 8, 8], [4, 4, 12, 12],
                             marks=deg == 15, name="baseline")
    assert len(fig.axes) == 3                                             # the two panels and a colour bar
    assert [len(ax.patches) for ax in axes] == [4, 4]                     # true box, LOST box, seed, one outlier
    labels = axes[1].get_legend_handles_labels()[1]
    assert labels == ["outlier token", "true box", "LOST box", "LOST seed (lowest degree)"]
    assert axes[1].get_images()[0].get_clim() == (0, 16)


def test_phase_diagram_labels_of_variants_on_one_spot_do_not_overlap():
    """Two variants that land on one marker (LayerScale off drops a few parameters) get their labels one
    below the other; variants far apart keep theirs level with their markers."""
    from regstudy import emergence_plots

    def row(name, params, lr):
        return {"variant": name, "trained": True, "params": params, "lr": lr, "onset": None, "images_seen": 110_000}

    fig, ax = plt.subplots()
    # 206,539 and 206,530 straddle a rounding edge of log10 (5.315): they are one spot all the same
    emergence_plots.phase_diagram(ax, [row("a", 206_539, 3e-3), row("a-nols", 206_530, 3e-3),
                                       row("a-x2", 205_770, 3e-3), row("wide", 1_200_000, 3e-3),
                                       row("a-lr", 206_539, 1e-2)])
    offsets = {t.get_text().split(":")[0]: t.xyann[1] for t in ax.texts}
    plt.close(fig)
    assert len({offsets["a"], offsets["a-nols"], offsets["a-x2"]}) == 3
    assert offsets["wide"] == offsets["a"] == offsets["a-lr"]

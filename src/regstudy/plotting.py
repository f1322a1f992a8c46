"""One style for every figure; PNG + PDF; smoke runs labelled on the figure itself.

Conventions: one colour per model variant (`BASE`, `REG`, `color`, `palette`), neutral greys with
line styles for anything else (`METRIC_STYLES`); every axis says its unit; shares and accuracies in
percent; every map has a colour bar; log axes carry plain numbers (`log_axis`)."""
from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from .config import Profile

BASE = "#4C72B0"      # baseline (no registers)
REG = "#DD8452"       # with registers
TTR = "#8172B3"       # a baseline with a test-time register (regstudy.test_time_registers)
OUT = "#C44E52"       # outlier tokens (and their threshold)
NORMAL = "#55A868"    # normal tokens
MARK = "#00E5FF"      # cyan boxes around outlier tokens on maps (visible on the dark end of the map colours)
TRUE_BOX, LOST_BOX, SEED = "lime", "red", "yellow"   # LOST figures: the true box, LOST's box, its seed patch
DEGREE_CMAP = "mako"      # LOST degree maps
ATTN_CMAP = "inferno"     # attention maps
NORM_CMAP = "viridis"     # norm maps
DENSITY_CMAP = "magma"    # heat maps of distributions
# quantities that are not model variants (e.g. head vs probe accuracy): greys and line styles
METRIC_STYLES = ({"color": "0.15", "linestyle": "-", "marker": "o"},
                 {"color": "0.55", "linestyle": "--", "marker": "s"})
CELL_IN = 1.25        # side of one image or map in a grid, inches (~190 px at savefig.dpi)


def style() -> None:
    """The study's one style: seaborn's whitegrid theme in the variant palette, small paper fonts."""
    sns.set_theme(style="whitegrid", palette=[BASE, REG, NORMAL, OUT, "#8172B3", "#937860"])
    plt.rcParams.update({"figure.dpi": 110, "savefig.dpi": 150, "savefig.bbox": "tight",
                         "axes.titlesize": 9, "axes.labelsize": 8, "legend.fontsize": 7,
                         "xtick.labelsize": 7, "ytick.labelsize": 7, "image.cmap": "viridis",
                         "figure.titlesize": 10})


def variant(registers: int) -> str:
    """The name of a model variant in legends: 'baseline' or 'N registers'."""
    return "baseline" if registers == 0 else f"{registers} register{'s' if registers > 1 else ''}"


def color(registers: int) -> str:
    return BASE if registers == 0 else REG


def palette(registers) -> dict:
    """{variant name: colour} for seaborn's `palette=`."""
    return {variant(r): color(r) for r in registers}


def label(profile: Profile, what: str = "") -> str:
    return f"{what} — {profile.label}" if what else profile.label


def title(fig, profile: Profile, what: str) -> None:
    """The figure's title (with the profile's label; smoke figures get the banner of `save` instead),
    wrapped to the figure's width so that it never widens the saved canvas."""
    size = plt.rcParams["figure.titlesize"]
    size = size if isinstance(size, (int, float)) else 10
    chars = max(40, int(fig.get_figwidth() * 72 / (0.55 * size)))
    fig.suptitle(textwrap.fill(what if profile.smoke else label(profile, what), chars))


def save(fig, profile: Profile, out: Path, name: str) -> list:
    """Save `fig` as <out>/<name>.png and .pdf (`out`: the notebook's results folder). Smoke figures
    carry a banner above everything already drawn (so it covers no label; above, not below, because
    figure legends below the axes move with the bottom of a tight canvas)."""
    if profile.smoke:
        fig.canvas.draw()   # runs the layout, so the extent measured next is final
        top = fig.get_tightbbox(fig.canvas.get_renderer()).y1 / fig.get_figheight()
        fig.text(0.5, top + 0.1 / fig.get_figheight(),
                 "SMOKE RUN: tiny CPU models, plumbing check only, not a result", ha="center", va="bottom",
                 fontsize=9, color="white", weight="bold", bbox={"facecolor": OUT, "edgecolor": "none", "pad": 3})
    saved = []
    for ext in ("png", "pdf"):
        p = Path(out) / f"{name}.{ext}"
        fig.savefig(p)
        saved.append(p)
    return saved


# --- axes ---------------------------------------------------------------------------------------

def log_axis(ax, axis: str = "x") -> None:
    """Log scale with plain tick labels ('2', '0.5', not '2x10^0', which run together): ticks at
    10^k over several decades, 1, 2, 5 x 10^k over two, 1, 2, 3, 5 x 10^k over about one, evenly
    spaced over narrow ranges; thousands and millions as 'k' and 'M'. Call it once the axis holds its
    data (it reads the limits)."""
    a = ax.xaxis if axis == "x" else ax.yaxis
    (ax.set_xscale if axis == "x" else ax.set_yscale)("log")
    lo, hi = sorted(ax.get_xlim() if axis == "x" else ax.get_ylim())
    ratio = hi / max(lo, 1e-300)
    if ratio >= 300:
        a.set_major_locator(LogLocator(base=10, subs=(1.0,)))
    elif ratio >= 20:
        a.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    elif ratio >= 4:
        a.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 3.0, 5.0)))
    else:
        a.set_major_locator(MaxNLocator(nbins=4, steps=[1, 2, 2.5, 5, 10]))
    a.set_major_formatter(FuncFormatter(lambda v, _: plain_number(v)))
    a.set_minor_formatter(NullFormatter())


def plain_number(v: float) -> str:
    """A tick label a class reads at a glance: '0.5', '20', '300k', '1.2M' (never '1e+06')."""
    for scale, suffix in ((1e6, "M"), (1e3, "k")):
        if abs(v) >= scale:
            return f"{v / scale:g}{suffix}"
    return f"{v:g}"


def integer_axis(ax, axis: str = "x") -> None:
    """Ticks at whole numbers only (blocks, epochs)."""
    (ax.xaxis if axis == "x" else ax.yaxis).set_major_locator(MaxNLocator(integer=True))


def share_axis(ax, values_pct, what: str = "outlier tokens") -> None:
    """A y axis for a share in percent starting at 0 (`values_pct`: every value drawn, bars or error
    bars included). All-zero data get a 0..1 % range and say 'none' instead of a range around 0."""
    v = np.asarray([x for x in np.ravel(values_pct) if x is not None and np.isfinite(x)], dtype=float)
    top = float(v.max()) if v.size else 0.0
    ax.set_ylim(0, max(1.15 * top, 1.0))
    if top == 0:
        ax.text(0.5, 0.5, f"none: no {what} in any run", transform=ax.transAxes, ha="center", va="center",
                fontsize=8, color="0.3")


def min_span(ax, span: float = 10.0, lo: float = 0.0, hi: float = 100.0) -> None:
    """Widen the y range to at least `span` (e.g. 10 percentage points) around the data, within lo..hi,
    so that noise of a fraction of a point does not look like a trend."""
    a, b = ax.get_ylim()
    if b - a >= span:
        return
    c = (a + b) / 2
    a = min(max(lo, c - span / 2), hi - span)
    ax.set_ylim(a, a + span)


# --- maps ---------------------------------------------------------------------------------------

def relative_attention(maps) -> np.ndarray:
    """Attention maps (... x h x w) renormalised over the patches and multiplied by their number:
    1 = uniform attention, 10 = ten times the uniform share."""
    m = np.asarray(maps, dtype=float)
    n = m.shape[-1] * m.shape[-2]
    return m / np.clip(m.sum((-2, -1), keepdims=True), 1e-12, None) * n


ATTN_LABEL = "attention / uniform share\n(1 = uniform over the patches)"


def attention_note(maps) -> str:
    """How relative_attention maps are scaled, for a figure's title (`maps`: ... x h x w)."""
    n = int(np.prod(np.shape(maps)[-2:]))
    return f"maps: share of the patch attention x{n} (1 = uniform), one colour scale for all"


def marks_note(marks, what: str = "outlier tokens") -> str:
    """The legend of the cyan boxes, saying how many there are (`marks`: bool arrays or None)."""
    k = int(sum(int(np.asarray(m).sum()) for m in marks if m is not None))
    return f"cyan boxes: {what} ({k})" if k else f"cyan boxes: {what} (none flagged here)"


def grid_figsize(n: int, rows: int, wrap: int = 8, transpose: bool = False) -> tuple:
    """Figure size (inches) for map_grid: `n` images, `rows` rows including the image row."""
    per = n if transpose else min(n, wrap)
    r, c = (per, rows) if transpose else (int(np.ceil(n / per)) * rows, per)
    return CELL_IN * c + 1.4, CELL_IN * r + 0.7


def map_grid(fig, images, rows, row_labels, *, cbar_label: str, cmap: str = ATTN_CMAP, vmax=None, marks=None,
             transpose: bool = False, wrap: int = 8, col_labels=None) -> np.ndarray:
    """Grey `images` (n x H x W, 0..255) as the first row, then one row of maps per entry of `rows`
    (each n x h x w, drawn on their own, not over the image), all on one scale 0..vmax (default: their
    max) with one colour bar. `row_labels`: the image row's then each map row's. `marks`: per map row
    None or n x h x w bool, boxed in MARK. More than `wrap` images continue in a second band below.
    transpose: images form the first column and each map row a column (for a few images). `fig`: a
    figure or subfigure with constrained layout; returns the axes."""
    images = np.asarray(images)
    maps = [np.asarray(m, dtype=float) for m in rows]
    marks = marks or [None] * len(maps)
    vmax = float(vmax if vmax is not None else max(m.max() for m in maps))
    n, k = len(images), len(maps) + 1
    per = n if transpose else min(n, wrap)
    bands = int(np.ceil(n / per))
    shape = (per, k) if transpose else (bands * k, per)
    axes = fig.subplots(*shape, squeeze=False)

    def cell(i, row):   # image i, row 0 = the image, row r = map row r-1
        b, j = divmod(i, per)
        return axes[j, row] if transpose else axes[b * k + row, j]

    for ax in axes.ravel():
        ax.set_xticks([]); ax.set_yticks([]); ax.grid(False)
        ax.set_axis_off()
    for i in range(n):
        ax = cell(i, 0)
        ax.set_axis_on()
        ax.imshow(images[i], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        for r, (m, mk) in enumerate(zip(maps, marks)):
            ax = cell(i, r + 1)
            ax.set_axis_on()
            im = ax.imshow(m[i], cmap=cmap, vmin=0, vmax=vmax, interpolation="nearest")
            if mk is not None:
                for y, x in zip(*np.nonzero(np.asarray(mk[i]))):
                    ax.add_patch(plt.Rectangle((x - 0.5, y - 0.5), 1, 1, fill=False, ec=MARK, lw=1.2))
    for i in range(n):
        for row, name in enumerate(row_labels):
            if transpose and i == 0:
                cell(i, row).set_title(name)
            elif not transpose and i % per == 0:
                cell(i, row).set_ylabel(name, fontsize=8)
        if col_labels is not None:
            (cell(i, 0).set_ylabel if transpose else cell(i, 0).set_title)(col_labels[i], fontsize=8)
    fig.colorbar(im, ax=axes.ravel().tolist(), label=cbar_label, shrink=0.8 if transpose or k > 2 else 1.0,
                 aspect=30)
    return axes


def lost_degree_map(axes, image, degree, grid, patch: int, seed: int, pred_box, true_box, *, marks=None,
                    name: str = "") -> None:
    """LOST on one scene, on a pair of axes: the scene (grey, 0..255) and its degree map (`degree`:
    N patches row-major over `grid`, the number of patches each one's feature correlates positively
    with, lost.lost), both with the true box (TRUE_BOX), LOST's box (LOST_BOX; pixel boxes x0, y0, x1,
    y1, exclusive ends) and the seed patch (SEED: the patch of lowest degree); `marks` (N bool, or
    None): outlier tokens, boxed in MARK. The map has its colour bar; `name` labels the row."""
    import matplotlib.patheffects as pe

    h, w = grid
    deg = np.asarray(degree, dtype=float).reshape(h, w)
    edge = [pe.withStroke(linewidth=2.4, foreground="black")]   # visible on the image and on the map

    def box(ax, b, color, lw, label):
        x0, y0, x1, y1 = np.asarray(b, dtype=float).tolist()
        ax.add_patch(plt.Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, ec=color, lw=lw, label=label,
                                   path_effects=edge))

    def patch_box(ax, j, color, lw, label):
        y, x = divmod(int(j), w)
        box(ax, (x * patch, y * patch, (x + 1) * patch, (y + 1) * patch), color, lw, label)

    image = np.asarray(image)
    ext = (-0.5, w * patch - 0.5, h * patch - 0.5, -0.5)   # the map in pixel coordinates, as the image
    axes[0].imshow(image, cmap="gray", vmin=0, vmax=255, interpolation="nearest",
                   extent=(-0.5, image.shape[1] - 0.5, image.shape[0] - 0.5, -0.5))
    im = axes[1].imshow(deg, cmap=DEGREE_CMAP, vmin=0, vmax=h * w, interpolation="nearest", extent=ext)
    for k, ax in enumerate(axes):
        lab = k == 1   # one legend entry per kind, from the map
        if marks is not None:
            for n, j in enumerate(np.nonzero(np.asarray(marks).ravel())[0]):
                patch_box(ax, j, MARK, 0.9, "outlier token" if lab and n == 0 else None)
        box(ax, true_box, TRUE_BOX, 1.4, "true box" if lab else None)
        box(ax, pred_box, LOST_BOX, 1.4, "LOST box" if lab else None)
        patch_box(ax, seed, SEED, 1.6, "LOST seed (lowest degree)" if lab else None)
        ax.set_xticks([]); ax.set_yticks([]); ax.grid(False)
        ax.set_xlim(ext[:2]); ax.set_ylim(ext[2:])   # padding (if any) shown on both
    axes[0].set_title("scene")
    axes[1].set_title(f"degree map ({h}x{w} patches)")
    if name:
        axes[0].set_ylabel(name, fontsize=8)
    axes[1].figure.colorbar(im, ax=axes[1], label=f"degree: patches with positive\nsimilarity (of {h * w})")


# --- distributions ------------------------------------------------------------------------------

def block_norms_frame(patch_norms: dict, cap: int = 50_000, seed: int = 0) -> pd.DataFrame:
    """{variant name: depth x images x patches norms} -> long table (variant, block 1..depth, norm),
    at most `cap` tokens per block and variant (a fixed random subset; enough for the tails at 1 %)."""
    rng = np.random.default_rng(seed)
    parts = []
    for name, v in patch_norms.items():
        v = np.asarray(v, dtype=float).reshape(len(v), -1)
        keep = rng.permutation(v.shape[1])[:cap]
        for b in range(len(v)):
            parts.append(pd.DataFrame({"model": name, "block": b + 1, "norm": v[b, keep]}))
    return pd.concat(parts, ignore_index=True)


def norms_per_block(ax, frame: pd.DataFrame, pal: dict) -> None:
    """Fig. 4a: the distribution of patch-token norms at every block, one box per variant (letter-value
    plot: the boxes are the median, quartiles, eighths, ...; dots: the most extreme tokens)."""
    sns.boxenplot(data=frame, x="block", y="norm", hue="model", palette=pal, log_scale=True, ax=ax,
                  flier_kws={"s": 2, "alpha": 0.5}, linewidth=0.5)
    log_axis(ax, "y")
    ax.set(xlabel="block (1 = first)", ylabel="patch-token L2 norm (log scale)")
    ax.legend(title=None, loc="upper left", bbox_to_anchor=(1.0, 1.0))


def density_heatmap(ax, H, steps, xlabel: str, bins=None, ylim=None) -> None:
    """A heat map of one norm histogram per step (rows of H: shares summing to 1, over `bins`, log10
    edges), in percent of the step's tokens, steps on x with
    whole-number ticks, norm on a log y axis, a colour bar, no grid over the image."""
    from .norms import LOG10_BINS
    bins = LOG10_BINS if bins is None else bins
    steps = np.asarray(steps)
    x = np.concatenate([steps - 0.5, steps[-1:] + 0.5])
    H = 100 * np.asarray(H, dtype=float)
    mesh = ax.pcolormesh(x, 10 ** np.asarray(bins), H.T, cmap=DENSITY_CMAP, vmin=0,
                         vmax=float(np.quantile(H, 0.995)) or None, shading="flat", rasterized=True)
    ax.grid(False)
    log_axis(ax, "y")
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set_xticks(steps)
    ax.set_xlabel(xlabel)
    ax.figure.colorbar(mesh, ax=ax, label="tokens per bin (%)\n(bin: x1.12 in norm)")


def figure_legend(fig, ax, ncol: int = 4) -> None:
    """One legend for the whole figure, below its axes, from `ax`'s handles (instead of one per panel
    drawn over the data)."""
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=ncol, frameon=False)


def norm_histogram(ax, values, color: str, label: str | None = None, stat: str = "density", **kw) -> None:
    """One norm histogram on a log x axis with plain ticks (seaborn bins in log space, so 'density'
    is per unit of log10 norm)."""
    sns.histplot(np.asarray(values).ravel(), bins=kw.pop("bins", 80), log_scale=True, stat=stat,
                 element="step", fill=kw.pop("fill", False), color=color, label=label, ax=ax, **kw)
    log_axis(ax, "x")
    ax.set_ylabel({"density": "density (per log10 norm)", "count": "tokens (count)"}.get(stat, stat))


def tracked_through_depth(ax, tracked, depth: int, k: float) -> None:
    """Fig. 4a, right: for each baseline seed, the median norm of the tokens flagged at the last block
    over the median of the other background tokens of the same images, at every block (`tracked`:
    per seed the rows of norms.track_through_depth, empty when nothing was flagged); `k`: the
    relative rule's factor, drawn for reference."""
    labelled = False
    for t in tracked:
        if t:
            ax.plot([b["block"] + 1 for b in t], [b["ratio"] for b in t], color=BASE, marker="o", ms=3, alpha=0.8,
                    label=None if labelled else "baseline (each seed)")
            labelled = True
    if not labelled:
        ax.text(0.5, 0.62, "none: no outlier tokens at the last block\nin any baseline seed", ha="center",
                va="center", transform=ax.transAxes, fontsize=8, color="0.3")
        ax.set_ylim(k / 4, k * 4)
    ax.axhline(k, color="0.4", ls=":", lw=0.8, label=f"{k:g}x (relative rule)")
    ax.set_xlim(0.5, depth + 0.5)
    ax.set_xticks(range(1, depth + 1))
    log_axis(ax, "y")
    ax.set(xlabel="block (1 = first)", ylabel="flagged / other background tokens\n(ratio of median norms)")
    ax.legend(loc="upper left")


RULE_LINES = {   # the outlier rule's levels, as in every norm histogram
    "mixture": {"color": "0.2", "ls": "-.", "lw": 1},
    "relative": {"color": "0.4", "ls": ":", "lw": 1.2},
    "threshold": {"color": OUT, "ls": "--", "lw": 1.2},
}


def threshold_lines(ax, tokens: dict, legend: bool = True) -> None:
    """The baseline's outlier threshold when it has an outlier mode; otherwise the relative rule's
    level (RELATIVE_K x background median), marked as not a threshold. Styles: RULE_LINES."""
    from .norms import RELATIVE_K
    rel = (tokens.get("rule") or {}).get("relative_threshold")
    if tokens.get("threshold"):
        ax.axvline(tokens["threshold"], **RULE_LINES["threshold"],
                   label=f"baseline threshold ({tokens['threshold']:.3g})" if legend else None)
    elif rel:
        ax.axvline(rel, **RULE_LINES["relative"],
                   label=f"{RELATIVE_K:g}x background median (no outlier mode)" if legend else None)


def mixture_histogram(ax, norms, rule, bins: int = 80, log_y: bool = False, label: str = "patch tokens") -> None:
    """Fig. 3, the rule: the histogram of `norms` (bins equal in log norm, on a log x axis) with the
    Gaussian mixture that norms.fit_mixture_rule fitted to ln(norm) drawn over it (each component and
    their sum, in tokens per bin), the mixture rule's threshold, the relative rule's level, the final
    threshold and the tokens above it (OUT). A rule without a level says so in the legend. `rule`: an
    OutlierRule or tokens.json's "rule"; `log_y`: counts on a log axis (shows a rare mode); `label`: the
    histogram's legend entry."""
    from .norms import RELATIVE_K, _normal_pdf, as_rule, mixture_why
    r = as_rule(rule)
    v = np.asarray(norms, dtype=float).ravel()
    x = np.log(v[np.isfinite(v) & (v > 0)])
    lo, hi = float(x.min()), float(x.max())
    for t in (r.mixture_threshold, r.relative_threshold, r.threshold):   # keep every level in view
        if t:
            lo, hi = min(lo, np.log(t) - 0.1), max(hi, np.log(t) + 0.1)
    edges = np.linspace(lo, hi, bins + 1)
    counts = np.histogram(x, edges)[0]
    ax.stairs(counts, np.exp(edges), fill=True, color=BASE, alpha=0.45, label=label)
    if r.threshold is not None:
        ax.stairs(np.histogram(x[x > np.log(r.threshold)], edges)[0], np.exp(edges), fill=True, color=OUT,
                  alpha=0.8, label="outlier tokens")
    grid = np.linspace(lo, hi, 600)
    scale = len(x) * (edges[1] - edges[0])   # expected tokens per bin = n x density x bin width (in ln norm)
    comps = [w * _normal_pdf(grid, m, s) * scale for m, s, w in zip(r.means, r.sds, r.weights)]
    for j, (c, m, w) in enumerate(zip(comps, r.means, r.weights)):
        ax.plot(np.exp(grid), c, color="0.35", ls="--", lw=0.9,
                label=f"component {j + 1}: {w:.0%} of tokens, centre {np.exp(m):.3g}" if len(comps) > 1 else None)
        if len(comps) > 1:   # its number above its peak
            ax.annotate(str(j + 1), (np.exp(m), c.max()), xytext=(0, 2), textcoords="offset points", ha="center",
                        va="bottom", fontsize=7, color="0.25")
    ax.plot(np.exp(grid), np.sum(comps, 0), color="0.1", lw=1.3, label=f"mixture of {len(comps)} (BIC's choice)")
    levels = (
        ("mixture", r.mixture_threshold, "mixture rule's threshold", "mixture rule: no threshold ("
         + mixture_why(r).replace("; ", ";\n") + ")"),
        ("relative", r.relative_threshold, f"relative rule: {RELATIVE_K:g}x background median", "relative rule: none"),
        ("threshold", r.threshold, "outlier threshold (both rules agree)",
         "no outlier threshold: the rules do not agree"),
    )
    for key, t, name, absent in levels:   # a level the rule does not have is a faint legend entry only
        if t:
            ax.axvline(t, **RULE_LINES[key], label=f"{name} ({t:.3g})")
        else:
            ax.plot([], [], **RULE_LINES[key], alpha=0.35, label=absent)
    ax.set_ylim(0.5 if log_y else 0, (2.0 if log_y else 1.1) * max(counts.max(), 1))
    ax.set_xlim(np.exp(lo), np.exp(hi))
    log_axis(ax, "x")
    if log_y:
        log_axis(ax, "y")
    ax.set(xlabel="patch-token L2 norm (log scale; bins equal in log norm)",
           ylabel="tokens per bin\n(count, log scale)" if log_y else "tokens per bin (count)")


# --- register ablation (Fig. 8) -----------------------------------------------------------------

ABLATION_PANELS = (   # (columns of the runs table and their names, y label, title); all in percent
    ({"test_acc": "own head", "probe_acc": "linear probe on [CLS]"}, "accuracy (%)", "classification"),
    ({"dense_miou": "patch-class probe"}, "mIoU (%)", "dense task (11-class mIoU)"),
    ({"outlier_frac": "own rule"}, "outlier tokens (%)", "share of outlier tokens"),
)


def ablation_panels(axes, runs_table: pd.DataFrame, counts) -> None:
    """Fig. 8, bottom: each quantity of ABLATION_PANELS against the register count, mean ± sd over
    seeds, in percent; two quantities in one panel differ by grey and line style (colours are for
    model variants); accuracy and mIoU axes span at least 10 points."""
    for ax, (cols, ylabel, name) in zip(axes, ABLATION_PANELS):
        d = runs_table.melt(id_vars=["registers", "seed"], value_vars=list(cols), var_name="quantity")
        d["quantity"] = d["quantity"].map(cols)
        d["value"] *= 100
        st = METRIC_STYLES[:len(cols)]
        sns.pointplot(data=d, x="registers", y="value", hue="quantity", order=list(counts), errorbar="sd",
                      capsize=0.15, palette=[x["color"] for x in st], markers=[x["marker"] for x in st],
                      linestyles=[x["linestyle"] for x in st], dodge=0.25 if len(cols) > 1 else False,
                      markersize=4, linewidth=1.2, legend=len(cols) > 1, ax=ax)
        ax.set(xlabel="registers", ylabel=ylabel, title=name)
        if "outlier_frac" in cols:
            g = d.groupby("registers")["value"]
            share_axis(ax, (g.mean() + g.std().fillna(0)).to_numpy())
        else:
            min_span(ax, 10.0)
        if len(cols) > 1:
            ax.legend(title=None)

"""The emergence map's two figures: curves per variant, and the phase diagram (regstudy.emergence)."""
from __future__ import annotations

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import FuncFormatter, MaxNLocator

from . import emergence, norms, plotting


def _series(rows, variant, registers, block, key):
    """(images seen, mean over seeds, sd over seeds) of `key` at `block` (None: the last block)."""
    mine = [x for x in rows if x["variant"] == variant and x["registers"] == registers]
    if not mine:
        return np.array([]), np.array([]), np.array([])
    b = block or max(x["block"] for x in mine)
    by = {}
    for x in mine:
        if x["block"] == b and x[key] is not None:
            by.setdefault(x["images_seen"], []).append(float(x[key]))
    seen = np.array(sorted(by))
    vals = [np.array(by[s]) for s in seen]
    return seen, np.array([v.mean() for v in vals]), np.array([v.std(ddof=1) if len(v) > 1 else 0 for v in vals])


def curves(fig, rows: list, em) -> None:
    """One column per variant. Top: max / median norm of the background patches at the last block
    (3x: the relative rule's bar). Middle: share of patch tokens above the baseline's own threshold
    at the last block (for the register model: that threshold carried over). Bottom: the blocks and
    epochs where the baseline shows the artifact (every criterion of regstudy.emergence), per seed."""
    variants = [v for v in em.grid if any(x["variant"] == v and x["registers"] == 0 for x in rows)]
    axes = fig.subplots(3, len(variants), squeeze=False, sharex="col", sharey="row")
    hits = {(x["variant"], x["seed"], x["epoch"], x["block"]) for x in emergence.artifact_rows(rows)}
    for j, v in enumerate(variants):
        for r in em.registers:
            for i, key in enumerate(("bg_ratio", "frac_at_base_threshold")):
                seen, m, sd = _series(rows, v, r, None, key)
                if key != "bg_ratio":
                    m, sd = 100 * m, 100 * sd
                axes[i, j].plot(seen, m, marker="o", ms=3, color=plotting.color(r), label=plotting.variant(r))
                axes[i, j].fill_between(seen, m - sd, m + sd, color=plotting.color(r), alpha=0.2, lw=0)
        axes[0, j].axhline(norms.RELATIVE_K, **plotting.RULE_LINES["relative"])
        axes[0, j].set_title(v)
        base = [x for x in rows if x["variant"] == v and x["registers"] == 0]
        depth, seeds = max(x["block"] for x in base), sorted({x["seed"] for x in base})
        seen = sorted({x["images_seen"] for x in base})
        H = np.zeros((depth, len(seen)))
        for x in base:
            H[x["block"] - 1, seen.index(x["images_seen"])] += (v, x["seed"], x["epoch"], x["block"]) in hits
        ax = axes[2, j]
        edges = _edges(seen)
        ax.pcolormesh(edges, np.arange(depth + 1) + 0.5, H / len(seeds), cmap="Greys", vmin=0, vmax=1,
                      edgecolors="0.85", linewidth=0.3)
        ax.set_xlim(edges[0], edges[-1])
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v / 1000:g}k"))
        ax.xaxis.set_major_locator(MaxNLocator(4))
        plotting.integer_axis(ax, "y")
        ax.grid(False)
    for i, lab in enumerate(("background max / median\nnorm, last block",
                             "tokens above the baseline's\nthreshold, last block (%)",
                             "block where the artifact\nholds (black: all seeds)")):
        axes[i, 0].set_ylabel(lab)
    for j in range(len(variants)):
        top = max([100 * (x["frac_at_base_threshold"] or 0) for x in rows if x["variant"] == variants[j]], default=0)
        if top == 0:       # a short word: the panels are narrow
            axes[1, j].text(0.5, 0.5, "none", transform=axes[1, j].transAxes, ha="center", va="center", color="0.3")
        axes[1, j].set_xlabel("")
        axes[2, j].set_xlabel("training images seen")
    axes[1, 0].set_ylim(bottom=0, top=max(1.0, axes[1, 0].get_ylim()[1]))
    axes[0, 0].legend(loc="upper left")


def _edges(centres) -> np.ndarray:
    """Cell edges around sorted centres (half-way between neighbours, as wide again at the ends)."""
    c = np.asarray(centres, dtype=float)
    if len(c) == 1:
        return np.array([c[0] * 0.5, c[0] * 1.5])
    mid = (c[1:] + c[:-1]) / 2
    return np.concatenate([[c[0] - (mid[0] - c[0])], mid, [c[-1] + (c[-1] - mid[-1])]])


SAME_SPOT_DECADES = 0.01   # markers closer than this on both log axes (~2%) look like one: their labels stack


def _same_spot(a: tuple, b: tuple) -> bool:
    """Two (parameters, learning rate) points that land on one marker of the log-log phase diagram
    (LayerScale off, say, drops a few hundred parameters: the same spot to the eye)."""
    return all(abs(np.log10(u) - np.log10(v)) < SAME_SPOT_DECADES for u, v in zip(a, b))


def phase_diagram(ax, summary: list) -> None:
    """Each trained variant at (parameters, learning rate): coloured by the images seen at the onset
    of the artifact (colour bar), a grey cross where it never settled, with the images it saw."""
    done = [s for s in summary if s.get("trained")]
    onsets = [s["onset"] for s in done if s.get("onset")]
    norm = mpl.colors.LogNorm(min(onsets), max(max(onsets), min(onsets) * 10)) if onsets else None
    cmap = plt.get_cmap(plotting.NORM_CMAP)
    placed = []                                    # variants at one spot (e.g. lengths of one model) stack
    for s in done:
        x, y = s["params"], s["lr"]
        k = sum(_same_spot((x, y), p) for p in placed)
        placed.append((x, y))
        if s.get("onset"):
            ax.scatter(x, y, s=80, color=cmap(norm(s["onset"])), edgecolor="0.2", zorder=3)
        else:
            ax.scatter(x, y, s=60, marker="x", color="0.45", zorder=3)
        note = f"{s['variant']}: " + (f"onset {s['onset'] / 1000:.0f}k img" if s.get("onset")
                                      else f"none in {s['images_seen'] / 1000:,.0f}k img")
        ax.annotate(note, (x, y), textcoords="offset points", xytext=(6, 2 - 9 * k), fontsize=6.5)
    xs, ys = [s["params"] for s in done], [s["lr"] for s in done]
    if xs:
        ax.set_xlim(min(xs) / 2, max(xs) * 3)
        ax.set_ylim(min(ys) / 2, max(ys) * 2.5)
    plotting.log_axis(ax, "x")
    plotting.log_axis(ax, "y")
    ax.set(xlabel="parameters", ylabel="peak learning rate")
    sm = mpl.cm.ScalarMappable(norm=norm or mpl.colors.LogNorm(1e3, 1e6), cmap=cmap)
    cb = ax.figure.colorbar(sm, ax=ax)
    cb.set_label("training images seen at the onset" + ("" if onsets else " (no variant reached one)"))

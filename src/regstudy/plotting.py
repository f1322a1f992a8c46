"""One style for every figure; PNG + PDF; smoke runs labelled on the figure itself."""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from .config import Profile

BASE = "#4C72B0"      # baseline (no registers)
REG = "#DD8452"       # with registers
OUT = "#C44E52"       # outlier tokens
NORMAL = "#55A868"    # normal tokens


def style() -> None:
    """The study's one style (matplotlib's bundled seaborn whitegrid look, small paper fonts)."""
    plt.style.use("seaborn-v0_8-whitegrid")
    plt.rcParams.update({"figure.dpi": 110, "savefig.dpi": 150, "savefig.bbox": "tight",
                         "axes.titlesize": 9, "axes.labelsize": 8, "legend.fontsize": 7,
                         "xtick.labelsize": 7, "ytick.labelsize": 7, "image.cmap": "viridis"})


def label(profile: Profile, what: str = "") -> str:
    return f"{what} — {profile.label}" if what else profile.label


def save(fig, profile: Profile, out: Path, name: str) -> list:
    """Save `fig` as <out>/<name>.png and .pdf (`out`: the notebook's results folder). Smoke figures
    carry a banner."""
    if profile.smoke:
        fig.text(0.5, -0.02, "SMOKE RUN: tiny CPU models, plumbing check only, not a result",
                 ha="center", va="top", fontsize=9, color="white", weight="bold",
                 bbox={"facecolor": "#C44E52", "edgecolor": "none", "pad": 3})
    saved = []
    for ext in ("png", "pdf"):
        p = Path(out) / f"{name}.{ext}"
        fig.savefig(p)
        saved.append(p)
    return saved


def image_grid_axes(n: int, cols: int, panels: int = 1, size: float = 1.1):
    """A figure with `panels` grids of n images each (cols per row), stacked vertically; returns
    fig, [axes of each panel]."""
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows * panels, cols, figsize=(size * cols, size * rows * panels + 0.3 * panels),
                             squeeze=False)
    groups = []
    for p in range(panels):
        groups.append([axes[p * rows + i // cols, i % cols] for i in range(rows * cols)])
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
        ax.grid(False)
    return fig, groups


def overlay(ax, image, heat, patch: int, alpha: float = 0.55, cmap: str = "inferno", marks=None):
    """Show a grey `image` (H x W) with a patch-grid `heat` map (h x w) over it; `marks` (h x w bool)
    draws a box around each marked patch (e.g. outlier tokens)."""
    H, W = image.shape
    ax.imshow(image, cmap="gray", vmin=0, vmax=255, extent=(0, W, H, 0))
    ax.imshow(heat, cmap=cmap, alpha=alpha, extent=(0, W, H, 0), interpolation="nearest")
    if marks is not None:
        for r, c in zip(*np.nonzero(np.asarray(marks))):
            ax.add_patch(plt.Rectangle((c * patch, r * patch), patch, patch, fill=False, ec="cyan", lw=1.0))
    ax.set_xlim(0, W)
    ax.set_ylim(H, 0)

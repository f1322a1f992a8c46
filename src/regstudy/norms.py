"""Token norms and the outlier rule.

**Outlier rule (documented in the README).** The paper flags tokens above a model-specific norm
cut-off (150 for DINOv2 ViT-g). We take the cut-off from the data, with two rules that must agree:

*Mixture rule* (finds a separate mode):

1. fit Gaussian mixtures of 1, 2 and 3 components to the natural log of the patch-token norms
   (EM, deterministic quantile initialisation) and keep the one with the lowest BIC;
2. the candidate outlier mode is the component with the highest mean; it counts only if it is
   *rare* (weight < 10%: the paper finds ~2%) and *well separated* from the component below it
   (Ashman's D = |mu1 - mu2| / sqrt((s1^2 + s2^2) / 2) > 2);
3. its threshold is where the two weighted component densities cross, lowered to the mode's
   lower edge (mean - 2.5 sd in log-norm) when that is lower, so that a mode of a few tokens beside a
   broad bulk is not cut in half.

*Relative rule* (scale-free, robust to a skewed bulk): a token is high-norm when its norm is above
``RELATIVE_K`` x the median norm of the model's *background* patches (all patches when no
background mask is given).

A token is an **outlier** only where both agree: the mixture has a rare separated mode, that
mode's centre is itself above the relative bar, and the token is above both thresholds. A
skewed or heavy-tailed bulk can fool the mixture (a rare "mode" made of the bulk's own tail) and a
long tail can cross a fixed multiple of the median; requiring both keeps each rule's failure out.
With no such mode (one component won, or the top one is common or overlapping, as when
foreground and background tokens simply differ) nothing is flagged.

A flagged token sits on *background* when its patch's mean pixel is <= 10 of 255.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch

LOG10_BINS = np.linspace(-2.0, 4.0, 121)   # shared histogram bins of log10(norm), 0.01 .. 10,000
ASHMAN_D_MIN = 2.0         # separation of the outlier mode from the mode below it
MAX_OUTLIER_WEIGHT = 0.10  # the outlier mode must be rare
# Relative rule: an outlier is above RELATIVE_K x the median background norm. The paper's outliers
# are ~10x the others; in a ViT-S/4 on Fashion-MNIST the background outliers were measured at
# 3.9-4.7x the background median, while the contrast between object and background tokens of a
# normal model stays below 3x. 3 keeps the first and rejects the second.
RELATIVE_K = 3.0
MODE_EDGE_SD = 2.5         # the mixture threshold is lowered at most to the mode's mean - 2.5 sd


def log_hist(norms) -> list:
    """Counts of log10(norm) in LOG10_BINS (values outside are clipped into the end bins)."""
    v = np.log10(np.clip(np.asarray(norms, dtype=np.float64).ravel(), 1e-12, None))
    v = np.clip(v, LOG10_BINS[0], LOG10_BINS[-1] - 1e-9)
    return np.histogram(v, LOG10_BINS)[0].astype(int).tolist()


def stats(norms) -> dict:
    v = np.asarray(norms, dtype=np.float64).ravel()
    q = np.quantile(v, [0.5, 0.9, 0.99])
    return {"median": float(q[0]), "p90": float(q[1]), "p99": float(q[2]), "max": float(v.max()),
            "mean": float(v.mean()), "max_over_median": float(v.max() / max(q[0], 1e-12))}


@dataclass
class OutlierRule:
    threshold: float | None     # norm above which a token is an outlier; None when no outlier mode
    crossing: float             # where the two fitted components cross (reported even if not bimodal)
    bimodal: bool               # the mixture rule alone found a rare, separated top mode
    ashman_d: float
    means: tuple                # component means of ln(norm), ascending
    sds: tuple
    weights: tuple
    n: int                      # tokens the fit used
    components: int = 2         # mixture size chosen by BIC
    reference_median: float | None = None   # median norm of background patches (all patches if no mask)
    relative_threshold: float | None = None  # RELATIVE_K x reference_median
    mixture_threshold: float | None = None   # the mixture rule's cut-off (None when not bimodal)
    mode_ratio: float | None = None          # centre of the top mode / reference_median

    @property
    def found(self) -> bool:
        """Both rules agree that there is an outlier mode."""
        return self.threshold is not None

    def flag(self, norms: torch.Tensor | np.ndarray):
        if self.threshold is None:
            return norms > float("inf")
        return norms > self.threshold

    def relative_flag(self, norms):
        """The relative rule alone (for showing how the two rules agree)."""
        return norms > (self.relative_threshold if self.relative_threshold is not None else float("inf"))

    def mixture_flag(self, norms):
        """The mixture rule alone."""
        return norms > (self.mixture_threshold if self.mixture_threshold is not None else float("inf"))

    def to_dict(self) -> dict:
        return asdict(self)


def _normal_pdf(x, mu, sd):
    return np.exp(-0.5 * ((x - mu) / sd) ** 2) / (sd * math.sqrt(2 * math.pi))


def fit_gmm(x: np.ndarray, k: int, counts: np.ndarray | None = None, iters: int = 500, tol: float = 1e-10):
    """k-component 1-D Gaussian mixture by EM on values `x` (optionally weighted by `counts`, e.g.
    histogram bin centres), initialised at fixed quantiles. Returns (means, sds, weights,
    log-likelihood), components sorted by mean."""
    x = np.asarray(x, dtype=np.float64).ravel()
    c = np.ones_like(x) if counts is None else np.asarray(counts, dtype=np.float64).ravel()
    keep = c > 0
    x, c = x[keep], c[keep]
    n = c.sum()
    cdf = np.cumsum(c) / n
    init_q = {1: [0.5], 2: [0.5, 0.995], 3: [0.25, 0.75, 0.995]}[k]
    mu = np.array([x[min(np.searchsorted(cdf, q), len(x) - 1)] for q in init_q], dtype=np.float64)
    mean = (c * x).sum() / n
    spread = max(math.sqrt((c * (x - mean) ** 2).sum() / n), 1e-3)
    sd = np.full(k, spread / k)
    w = np.full(k, 1.0) if k == 1 else np.array([*np.full(k - 1, 0.95 / (k - 1)), 0.05])
    floor = max(spread * 1e-3, 1e-6)
    prev = -np.inf
    for _ in range(iters):
        dens = w[None] * np.stack([_normal_pdf(x, mu[j], sd[j]) for j in range(k)], 1) + 1e-300
        ll = float((c * np.log(dens.sum(1))).sum())
        resp = c[:, None] * dens / dens.sum(1, keepdims=True)
        nk = resp.sum(0) + 1e-12
        w = nk / n
        mu = (resp * x[:, None]).sum(0) / nk
        sd = np.maximum(np.sqrt((resp * (x[:, None] - mu[None]) ** 2).sum(0) / nk), floor)
        if abs(ll - prev) < tol * abs(ll):
            break
        prev = ll
    order = np.argsort(mu)
    return mu[order], sd[order], w[order], ll


FIT_BINS = 4000   # the mixture is fitted on a histogram of the log-norms (bin width ~range/4000)


def _as_array(v) -> np.ndarray:
    return np.asarray(v.detach().cpu() if isinstance(v, torch.Tensor) else v, dtype=np.float64).ravel()


def fit_mixture_rule(norms) -> OutlierRule:
    """The mixture rule alone (steps 1-3 of the module docstring); `threshold` is its cut-off."""
    v = _as_array(norms)
    v = v[np.isfinite(v) & (v > 0)]
    if len(v) < 10:
        raise ValueError(f"need at least 10 token norms to fit the outlier rule, got {len(v)}")
    x = np.log(v)
    counts, edges = np.histogram(x, FIT_BINS)
    centres = (edges[:-1] + edges[1:]) / 2
    fits = {}
    for k in (1, 2, 3):
        mu, sd, w, ll = fit_gmm(centres, k, counts)
        fits[k] = (mu, sd, w, -2 * ll + (3 * k - 1) * math.log(len(x)))
    k = min(fits, key=lambda j: fits[j][3])
    mu, sd, w, _ = fits[k]
    if k == 1:
        return OutlierRule(threshold=None, crossing=float(np.exp(mu[0] + 3 * sd[0])), bimodal=False, ashman_d=0.0,
                           means=tuple(map(float, mu)), sds=tuple(map(float, sd)), weights=tuple(map(float, w)),
                           n=int(len(v)), components=1)
    lo, hi = k - 2, k - 1
    d = abs(mu[hi] - mu[lo]) / math.sqrt((sd[lo] ** 2 + sd[hi] ** 2) / 2)
    grid = np.linspace(mu[lo], mu[hi], 2001)
    diff = w[lo] * _normal_pdf(grid, mu[lo], sd[lo]) - w[hi] * _normal_pdf(grid, mu[hi], sd[hi])
    sign = np.nonzero(np.diff(np.sign(diff)))[0]
    crossing = float(np.exp(grid[sign[-1] + 1] if len(sign) else mu[hi]))
    bimodal = bool(d > ASHMAN_D_MIN and w[hi] < MAX_OUTLIER_WEIGHT and len(sign) > 0)
    cut = min(crossing, float(np.exp(mu[hi] - MODE_EDGE_SD * sd[hi]))) if bimodal else None
    return OutlierRule(threshold=cut, crossing=crossing, bimodal=bimodal, mixture_threshold=cut,
                       ashman_d=float(d), means=tuple(map(float, mu)), sds=tuple(map(float, sd)),
                       weights=tuple(map(float, w)), n=int(len(v)), components=k)


def fit_outlier_rule(norms, background=None) -> OutlierRule:
    """The study's outlier rule (module docstring): the mixture and the relative rule must agree.
    `background` (same shape as `norms`, bool) picks the patches whose median sets the relative
    bar; without it (or with no background patch) the median of all patches is used."""
    v = _as_array(norms)
    mix = fit_mixture_rule(v)
    ref_pool = v
    if background is not None:
        bg = _as_array(background).astype(bool)
        if bg.shape != v.shape:
            raise ValueError(f"background mask of {bg.size} entries for {v.size} norms")
        if bg.any():
            ref_pool = v[bg]
    ref = float(np.median(ref_pool[np.isfinite(ref_pool)]))
    rel = RELATIVE_K * ref
    mode_ratio = float(np.exp(mix.means[-1]) / ref) if ref > 0 else None
    agree = mix.bimodal and mode_ratio is not None and mode_ratio > RELATIVE_K
    return OutlierRule(**{**mix.to_dict(), "threshold": max(mix.mixture_threshold, rel) if agree else None,
                          "reference_median": ref, "relative_threshold": rel, "mode_ratio": mode_ratio})


def outlier_summary(norms: torch.Tensor, background: torch.Tensor, rule: OutlierRule) -> dict:
    """Share of patch tokens flagged, and where the flagged ones sit. `norms` and `background` are
    B x N (norms of patch tokens; True where the patch is background)."""
    flags = rule.flag(norms)
    n_flag = int(flags.sum())
    n_bg = int(background.sum())
    return {
        "outlier_frac": n_flag / norms.numel(),
        "n_outliers": n_flag,
        "n_tokens": int(norms.numel()),
        "outlier_bg_share": (int((flags & background).sum()) / n_flag) if n_flag else None,
        "background_frac": n_bg / norms.numel(),
        "images_with_outlier": float(flags.any(1).float().mean()),
        "threshold": rule.threshold,
        "found": rule.found,
        "bimodal": rule.bimodal,
        "relative_frac": float(rule.relative_flag(norms).float().mean()),
        "mixture_frac": float(rule.mixture_flag(norms).float().mean()),
        "ashman_d": rule.ashman_d,
        "crossing": rule.crossing,
    }


def as_rule(rule) -> OutlierRule:
    """An OutlierRule from itself or from its dict (tokens.json's "rule")."""
    return rule if isinstance(rule, OutlierRule) else OutlierRule(**rule)


def mixture_why(rule) -> str:
    """Why the mixture rule found no outlier mode, in words (for legends): one component won, or the
    top one is common or overlapping (module docstring, step 2)."""
    r = as_rule(rule)
    if r.bimodal:
        return "it found a rare, separated mode"
    if r.components == 1:
        return "one component won"
    why = []
    if r.weights[-1] >= MAX_OUTLIER_WEIGHT:
        why.append(f"{r.weights[-1]:.0%} of tokens, not rare (needs < {MAX_OUTLIER_WEIGHT:.0%})")
    if r.ashman_d <= ASHMAN_D_MIN:
        why.append(f"Ashman's D {r.ashman_d:.2f}, not separated (needs > {ASHMAN_D_MIN:g})")
    return "top mode: " + "; ".join(why) if why else "the top two components do not cross"


def rule_agreement(norms, rule) -> dict:
    """How the two rules agree on `norms` (any shape), in tokens: above the mixture rule's threshold
    only, above the relative rule's level only, above both, above neither, and the outliers (above
    the final threshold; none unless the rules agree on a mode, module docstring). `rule`: an
    OutlierRule or tokens.json's "rule"; a rule without a threshold flags no token."""
    rule, v = as_rule(rule), _as_array(norms)
    mix, rel = np.asarray(rule.mixture_flag(v)), np.asarray(rule.relative_flag(v))
    return {"tokens": int(v.size), "mixture_only": int((mix & ~rel).sum()), "relative_only": int((rel & ~mix).sum()),
            "both": int((mix & rel).sum()), "neither": int((~mix & ~rel).sum()),
            "outliers": int(np.asarray(rule.flag(v)).sum())}


def hist_frac_above(hist, threshold: float, cautious: bool = False) -> float:
    """Share of a LOG10_BINS histogram's tokens in bins whose lower edge is >= `threshold`
    (resolution: one bin, a factor of 10**0.05 = 1.12 in norm). `cautious`: count every bin that
    reaches above the threshold (upper edge > threshold), an upper bound, for a share that must be
    small for a verdict to say yes."""
    h = np.asarray(hist, dtype=float)
    if h.sum() == 0 or threshold is None:
        return 0.0
    edge = 10 ** (LOG10_BINS[1:] if cautious else LOG10_BINS[:-1])
    keep = edge > threshold if cautious else edge >= threshold
    return float(h[keep].sum() / h.sum())


def hist_density_matrix(hists) -> np.ndarray:
    """Rows of LOG10_BINS histograms -> rows normalised to densities (for heat maps)."""
    h = np.asarray(hists, dtype=float)
    return h / np.clip(h.sum(1, keepdims=True), 1, None)


def track_through_depth(patch_norms: torch.Tensor, flags: torch.Tensor, background: torch.Tensor) -> list:
    """Follow the tokens flagged at the last block back through every block (Fig. 4a).
    `patch_norms`: depth x B x N; `flags`, `background`: B x N. Per block: the median norm of the
    flagged positions, the median of the *other* background positions of the same images, and
    their ratio. Empty when nothing is flagged or no image holds both kinds."""
    flags = torch.as_tensor(flags, dtype=torch.bool)
    background = torch.as_tensor(background, dtype=torch.bool)
    keep = flags.any(1) & (background & ~flags).any(1)   # images with a flagged and another background token
    if not keep.any():
        return []
    f, others = flags[keep], (background & ~flags)[keep]
    out = []
    for b in range(patch_norms.shape[0]):
        pn = patch_norms[b][keep].float()
        hi, lo = float(pn[f].median()), float(pn[others].median())
        out.append({"block": b, "tracked_median": hi, "other_background_median": lo,
                    "ratio": hi / lo if lo > 0 else float("inf")})
    return out



def baseline_threshold_for(base_rule: dict, other_rule: dict) -> float | None:
    """The baseline's outlier threshold carried over to another model (same seed, same images): as
    the same multiple of that model's median background norm (norm scales differ between models, so
    an absolute norm would compare scales, not outliers). None when the baseline has no threshold."""
    thr, ref, other = base_rule.get("threshold"), base_rule.get("reference_median"), other_rule.get("reference_median")
    if thr is None:
        return None
    if not ref or not other:
        return thr
    return thr / ref * other

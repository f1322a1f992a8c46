"""Verdicts: does the direction of one of the paper's findings hold in our runs?

Every comparison is made per seed (the same seed for the baseline and the register model), and a
finding holds only where it holds in *every* seed. Each rule below is a named constant with the
reason for its value; the notebooks call these functions and print what they return, so the tests
can plant an effect (or its absence) and check that the verdict follows.

A verdict is one of:
- "yes": measured in every seed (at least MIN_SEEDS of them) and the direction holds in all;
- "no": measured, and the direction fails in at least one seed;
- "not measurable (...)": fewer than MIN_SEEDS seeds, or a seed where the quantity does not exist
  (e.g. a baseline with no outlier tokens to probe), with the reason.
Smoke runs never give a verdict: :func:`report.write_claims` turns every "holds" into SMOKE.
"""
from __future__ import annotations

import math

import numpy as np

# A direction seen in 2 seeds happens by chance 1 time in 4 even when there is no effect; in 3
# seeds, 1 in 8. Fewer seeds than this give "not measurable".
MIN_SEEDS = 3
SMOKE = "n/a (smoke)"
# "Registers remove the outliers": at least 5x fewer outlier tokens than the same-seed baseline,
# both by the register model's own rule and at the baseline's threshold (the paper goes from ~2%
# to ~0; a five-fold cut is far beyond the seed-to-seed spread of the share).
REGISTER_DROP = 5.0
# "Accuracy unchanged": within 1 point (the seed-to-seed spread of Fashion-MNIST test accuracy of
# one recipe is a few tenths of a point; the paper's Table 2a differences are <= 0.5 point).
ACCURACY_TOLERANCE = 0.01
# The paper's outliers have ~10x the norm of the others. A magnitude "holds" when it is within a
# factor 2 of that, i.e. at least 5x the median background norm (the rule already asks 3x).
PAPER_NORM_RATIO = 10.0
NORM_RATIO_FACTOR = 2.0
# "Outliers sit on background": most of them (more than half) and more than background's own
# share of the patches (what a token drawn at random would give).
MOSTLY = 0.5
# "Outliers appear around the middle of the network": the first block where the tracked tokens are
# high-norm lies in the middle half of the depth (the paper: layer ~15 of 40, at 0.38).
MIDDLE = (0.25, 0.75)
# "Outliers appear only after some training": not yet established in the first tenth of training
# (the paper: after about a third).
EARLIEST_FRACTION = 0.1
# Table 1: the outlier token "approaches [CLS]" when it closes at least half of the gap between a
# normal patch token and [CLS]. The paper's rows close 88% on Aircraft (17.1 -> 79.1 of 87.3) and
# at least 88% on 12 of its 14 datasets; IN1k (16%) and P205 (15%) are its exceptions.
APPROACH_MIN = 0.5
TABLE1_PAPER_ROW = "Airc."   # the paper's row shown beside ours (the and the paper's example)
# Fig. 5b: outliers "hold less local information" when their probe's normalised gain (share of the
# way from the group's trivial baseline to a perfect score) is less than 0.75 of that of normal
# background tokens. The paper's own position top-1 is 22.8 vs 41.7 (a ratio of 0.55), so a bar at
# 0.5 would call its finding "no"; 0.75 keeps a margin over probe noise, so that equal
# information does not read as less (tested on planted tokens).
LESS_INFO_FACTOR = 0.75
# ... and only when background tokens themselves gain at least this much: below it there is no
# local information to lose, and the comparison is noise.
MIN_BACKGROUND_GAIN = 0.05
# Fig. 9: two maps whose histogram intersection is above this are the same map: registers that
# match each other or [CLS] this closely have not broken their symmetry.
SAME_MAP_OVERLAP = 0.99


def over_seeds(holds: list) -> tuple:
    """(verdict, "k/n seeds") from one entry per seed: True (direction holds), False, or None
    (not measurable in that seed)."""
    n = len(holds)
    measured = [h for h in holds if h is not None]
    k = sum(bool(h) for h in measured)
    seeds = f"{k}/{n} seeds" + (f" ({n - len(measured)} not measurable)" if len(measured) < n else "")
    if n < MIN_SEEDS:
        return f"not measurable ({n} seed{'s' if n != 1 else ''})", seeds
    if any(h is False for h in measured):
        return "no", seeds
    if len(measured) < n:
        return f"not measurable (in {n - len(measured)} of {n} seeds)", seeds
    return "yes", seeds


def _finite(x) -> bool:
    return x is not None and isinstance(x, (int, float, np.floating)) and math.isfinite(float(x))


def claim(artefact: str, quantity: str, paper: str, ours: str, holds: list, note: str = "", why: str = "") -> dict:
    """A row of paper_vs_ours.md with its verdict over seeds. `why` replaces the reason of a
    'not measurable' verdict (e.g. 'no outlier tokens')."""
    verdict, seeds = over_seeds(holds)
    if why and verdict.startswith("not measurable (in"):
        verdict = f"not measurable ({why})"
    return {"artefact": artefact, "quantity": quantity, "paper": paper, "ours": ours, "holds": verdict,
            "seeds": seeds, "note": note}


def pm(values, digits: int = 3, pct: bool = False) -> str:
    """'mean ± sd (n)' over the finite values."""
    v = [float(x) for x in values if _finite(x)]
    if not v:
        return "n/a"
    f = (lambda x: f"{100 * x:.{max(digits - 2, 1)}f}%") if pct else (lambda x: f"{x:.{digits}g}")
    if len(v) == 1:
        return f(v[0])
    return f"{f(float(np.mean(v)))} ± {f(float(np.std(v, ddof=1)))}"


# --------------------------------------------------------------------------------------------
# Figs. 3 and 7, Sec. 3: outliers, their magnitude and place, and what registers do to them
# --------------------------------------------------------------------------------------------
def registers_remove(base_frac, own_frac, at_base_frac):
    """One seed: do registers cut the outlier share >= REGISTER_DROP-fold, by the register model's
    own rule *and* at the baseline's threshold? None when the baseline has no outliers."""
    if not _finite(base_frac) or base_frac <= 0:
        return None
    return bool(own_frac <= base_frac / REGISTER_DROP and at_base_frac <= base_frac / REGISTER_DROP)


def norms_claims(pairs: list, registers: int, paper_share: str) -> list:
    """Claims of Figs. 3 and 7. `pairs`: one dict per seed with the baseline's
    found, outlier_frac, norm_ratio (median outlier norm / median background norm), outlier_bg_share,
    background_frac, test_acc, and the register model's reg_outlier_frac (own rule),
    reg_frac_at_base (at the baseline's threshold) and reg_test_acc."""
    found = [bool(p["found"]) for p in pairs]
    ratio_ok = PAPER_NORM_RATIO / NORM_RATIO_FACTOR
    bg_holds = [None if not p["found"] or p["outlier_bg_share"] is None else
                bool(p["outlier_bg_share"] > max(MOSTLY, p["background_frac"])) for p in pairs]
    drop = [registers_remove(p["outlier_frac"], p["reg_outlier_frac"], p["reg_frac_at_base"]) for p in pairs]
    acc = [abs(p["reg_test_acc"] - p["test_acc"]) <= ACCURACY_TOLERANCE for p in pairs]
    why = "no outlier tokens in the baseline"
    return [
        claim("Fig. 3 / Sec. 2", "a small share of patch tokens are high-norm outliers (baseline)",
              f"~{paper_share}% (2.37% in DINOv2 ViT-g)",
              f"{pm([p['outlier_frac'] for p in pairs], pct=True)}; found in {sum(found)}/{len(found)} seeds",
              found, "outlier = above both the mixture and the relative rule (regstudy.norms)"),
        claim("Fig. 3 / Sec. 2", "outlier norm / background norm (medians)", f"~{PAPER_NORM_RATIO:g}x",
              f"{pm([p['norm_ratio'] for p in pairs if p['found']], 3)}x" if any(found) else "no outliers",
              [None if not p["found"] else bool(p["norm_ratio"] >= ratio_ok) for p in pairs],
              f"holds = at least {ratio_ok:g}x (within a factor {NORM_RATIO_FACTOR:g} of the paper's)", why),
        claim("Fig. 3 / Sec. 2", "outliers sit on background patches", "mostly background (redundant) patches",
              (f"{pm([p['outlier_bg_share'] for p in pairs if p['found']], pct=True)} of outliers on background "
               f"(background is {pm([p['background_frac'] for p in pairs], pct=True)} of patches)")
              if any(found) else "no outliers", bg_holds,
              "holds = more than half, and more than background's share of the patches", why),
        claim("Fig. 7", f"outlier share with {registers} registers (own rule; at the baseline's threshold)",
              "high-norm mode gone",
              f"{pm([p['reg_outlier_frac'] for p in pairs], pct=True)}; "
              f"{pm([p['reg_frac_at_base'] for p in pairs], pct=True)} at the baseline's threshold",
              drop, f"holds = at least {REGISTER_DROP:g}x fewer than the same-seed baseline, by both", why),
        claim("Sec. 3", f"classifier-head test accuracy, baseline vs {registers} registers",
              "unchanged (e.g. DeiT-III 84.7 vs 84.7, ImageNet)",
              f"{pm([p['test_acc'] for p in pairs], pct=True)} vs {pm([p['reg_test_acc'] for p in pairs], pct=True)}",
              acc, f"holds = within {100 * ACCURACY_TOLERANCE:g} point in every seed"),
    ]


# --------------------------------------------------------------------------------------------
# Figs. 4a, 4b: where and when
# --------------------------------------------------------------------------------------------
def first_high_block(ratio_by_block) -> int | None:
    """1-based first block from which the tracked tokens stay above RELATIVE_K x the median of the
    other background tokens, to the last block; None if not high at the last block."""
    from .norms import RELATIVE_K
    r = [float(x) if _finite(x) else 0.0 for x in ratio_by_block]
    if not r or r[-1] <= RELATIVE_K:
        return None
    i = len(r) - 1
    while i > 0 and r[i - 1] > RELATIVE_K:
        i -= 1
    return i + 1


def emergence_epoch(found_by_epoch) -> int | None:
    """Index (0-based) of the first epoch from which every later epoch has outliers; None if the
    last epoch has none."""
    f = [bool(x) for x in found_by_epoch]
    if not f or not f[-1]:
        return None
    i = len(f) - 1
    while i > 0 and f[i - 1]:
        i -= 1
    return i


def depth_training_claims(first_blocks: list, depth: int, emergence_fracs: list, paper_layer: str,
                          paper_fraction: str) -> list:
    """`first_blocks`: per baseline seed, first_high_block() or None; `emergence_fracs`: per seed,
    the share of training after which the per-epoch rule keeps finding outliers, or None."""
    lo, hi = MIDDLE
    return [
        claim("Fig. 4a", "block where the outlier tokens become high-norm (tracked through depth, baseline)",
              f"around the middle (layer {paper_layer})",
              f"block {pm([b for b in first_blocks if b], 2)} of {depth}" if any(first_blocks) else "no outliers",
              [None if b is None else bool(lo < b / depth <= hi) for b in first_blocks],
              f"holds = in the middle half of the depth ({lo:g} < block/depth <= {hi:g})",
              "no outliers at the last block"),
        claim("Fig. 4b", "share of training after which outliers are present at every later epoch",
              f"after ~{paper_fraction} of training",
              f"{pm([e for e in emergence_fracs if e is not None], 2, pct=True)}" if any(
                  e is not None for e in emergence_fracs) else "no outliers",
              [None if e is None else bool(e >= EARLIEST_FRACTION) for e in emergence_fracs],
              f"each epoch judged by its own rule; holds = not before {EARLIEST_FRACTION:.0%} of training",
              "no outliers at the end of training"),
    ]


# --------------------------------------------------------------------------------------------
# Fig. 5: local information
# --------------------------------------------------------------------------------------------
def less_information(gain_outlier, gain_background):
    """One seed: do the outlier tokens gain less than LESS_INFO_FACTOR x what normal background
    tokens gain over their trivial baselines? None when not measured, or when background tokens
    gain nothing (then there is no local information to lose)."""
    if not _finite(gain_outlier) or not _finite(gain_background) or gain_background < MIN_BACKGROUND_GAIN:
        return None
    return bool(gain_outlier < LESS_INFO_FACTOR * gain_background)


def local_claims(per_seed: list, paper: dict) -> list:
    """`per_seed`: one dict per baseline seed with cos_outlier / cos_background (input similarity of
    outlier and normal background tokens; cos_outlier None without outliers) and, from the pooled
    probes, the normalised gains over the trivial baseline of outlier and normal-background tokens: pos_gain_outlier, pos_gain_background, pix_gain_outlier,
    pix_gain_background (None when the seed has too few outlier tokens)."""
    def has(p, k):
        return _finite(p.get(k))
    why = "too few outlier tokens, or no local information in background tokens"
    return [
        claim("Fig. 5a", "input similarity to the 4 neighbours, outlier vs normal background tokens",
              "higher for outliers (redundant patches)",
              f"{pm([p['cos_outlier'] for p in per_seed if has(p, 'cos_outlier')])} vs "
              f"{pm([p['cos_background'] for p in per_seed])}",
              [bool(p["cos_outlier"] > p["cos_background"]) if has(p, "cos_outlier") and has(p, "cos_background")
               else None for p in per_seed],
              "input = patch embedding + position embedding; outliers on background vs normal background tokens, "
              "so redundancy is not built in", "no outlier tokens on background"),
        claim("Fig. 5b", "position top-1, normalised gain over the majority position, outlier vs normal background",
              f"{paper['outlier']['position_top1_acc']}% vs {paper['normal']['position_top1_acc']}% top-1 (vs all normal)",
              f"{pm([p.get('pos_gain_outlier') for p in per_seed], 2)} vs "
              f"{pm([p.get('pos_gain_background') for p in per_seed], 2)}",
              [less_information(p.get("pos_gain_outlier"), p.get("pos_gain_background")) for p in per_seed],
              f"one probe on a pooled, balanced set; holds = outliers gain < {LESS_INFO_FACTOR:g}x the background gain",
              why),
        claim("Fig. 5b", "pixel reconstruction, normalised L2 gain over the group's mean pixels, outlier vs normal background",
              f"L2 {paper['outlier']['reconstruction_l2']} vs {paper['normal']['reconstruction_l2']} (vs all normal)",
              f"{pm([p.get('pix_gain_outlier') for p in per_seed], 2)} vs {pm([p.get('pix_gain_background') for p in per_seed], 2)}",
              [less_information(p.get("pix_gain_outlier"), p.get("pix_gain_background")) for p in per_seed],
              f"gain = 1 - probe L2 / trivial L2; holds = outliers gain < {LESS_INFO_FACTOR:g}x the background gain", why),
    ]


# --------------------------------------------------------------------------------------------
# Table 1: global information
# --------------------------------------------------------------------------------------------
def approaches_cls(cls: float, normal: float, outlier: float, majority: float = 0.0) -> bool:
    """The outlier token closes at least APPROACH_MIN of the gap from a normal token to [CLS], all
    counted above the majority-class accuracy of the same images (a class mix that alone gives a
    high accuracy leaves no gap to close)."""
    c, n, o = cls - majority, max(normal - majority, 0.0), outlier - majority
    gap = c - n
    return bool(gap > 0 and (o - n) / gap >= APPROACH_MIN)


def paper_closing(paper: dict) -> int:
    """How many of the paper's Table 1 datasets pass our approaches-[CLS] rule (majority class unknown: 0)."""
    return sum(approaches_cls(float(paper["cls"][k]), float(paper["normal"][k]), float(paper["outlier"][k]), 0.0)
               for k in paper["cls"] if k != "token")


def global_claims(base: list, regd: list, registers: int, paper: dict) -> list:
    """`base`: per baseline seed {cls, normal, outlier (None: no outlier images), majority};
    `regd`: per register-model seed {normal, registers}; accuracies on the same images."""
    p = paper
    return [
        claim("Table 1", "outlier token approaches [CLS] while a normal token stays far below (baseline)",
              f"[CLS] {p['cls'][TABLE1_PAPER_ROW]}, outlier {p['outlier'][TABLE1_PAPER_ROW]}, normal "
              f"{p['normal'][TABLE1_PAPER_ROW]} ({TABLE1_PAPER_ROW}; {paper_closing(p)} of 14 datasets close >= "
              f"{APPROACH_MIN:.0%} of the gap)",
              (f"[CLS] {pm([b['cls'] for b in base], pct=True)}, outlier "
               f"{pm([b['outlier'] for b in base if b['outlier'] is not None], pct=True)}, normal "
               f"{pm([b['normal'] for b in base], pct=True)}; majority class {pm([b['majority'] for b in base], pct=True)}"),
              [None if b["outlier"] is None else approaches_cls(b["cls"], b["normal"], b["outlier"], b["majority"])
               for b in base],
              f"same images for every token; holds = the outlier closes >= {APPROACH_MIN:.0%} of the normal-to-[CLS] gap",
              "no outlier tokens"),
        claim("Table 1", "[CLS] vs a normal patch token (baseline)",
              f"{p['cls']['IN1k']} vs {p['normal']['IN1k']} (IN1k)",
              f"{pm([b['cls'] for b in base], pct=True)} vs {pm([b['normal'] for b in base], pct=True)}",
              [bool(b["cls"] > b["normal"]) for b in base]),
        claim("Sec. 3", f"registers vs a normal patch token ({registers}-register model)",
              "registers hold global information (not in Table 1)",
              f"{pm([r['registers'] for r in regd], pct=True)} vs {pm([r['normal'] for r in regd], pct=True)}",
              [None if r["registers"] is None else bool(r["registers"] > r["normal"]) for r in regd],
              "", "no registers"),
    ]


# --------------------------------------------------------------------------------------------
# Figs. 1, 2, 9: attention
# --------------------------------------------------------------------------------------------
def symmetric(pairwise: float | None, with_cls: float | None) -> bool:
    """Registers have not broken symmetry when two of them (the closest pair), or one of them and
    [CLS], draw the same map."""
    return bool((_finite(pairwise) and pairwise >= SAME_MAP_OVERLAP) or (_finite(with_cls) and with_cls >= SAME_MAP_OVERLAP))


def attention_claims(base: list, regd: list) -> list:
    """`base`: per baseline seed {per_token_outlier, per_token_background} ([CLS] attention per
    token, head mean, renormalised over patches; outlier None when there are none);
    `regd`: per register seed {pairwise, across_images, random, with_cls} map overlaps (means) and
    max_pairwise, max_with_cls (the closest pair; the register closest to [CLS])."""
    sym = [symmetric(r["max_pairwise"], r["max_with_cls"]) for r in regd]
    return [
        claim("Figs. 1-2", "[CLS] attention per token: outlier vs normal background tokens (baseline)",
              "bright spots on the high-norm background tokens",
              f"{pm([b['per_token_outlier'] for b in base if b['per_token_outlier'] is not None])} vs "
              f"{pm([b['per_token_background'] for b in base])} (share of [CLS] attention per token)",
              [None if b["per_token_outlier"] is None else bool(b["per_token_outlier"] > b["per_token_background"])
               for b in base], "same images, same model; holds = more attention per outlier token",
              "no outlier tokens"),
        claim("Fig. 9", "different registers attend to different places",
              "different registers, different regions (slot-like)",
              (f"two registers, same image: overlap {pm([r['pairwise'] for r in regd], 2)}; one register, two images: "
               f"{pm([r['across_images'] for r in regd], 2)}; random maps: {pm([r['random'] for r in regd], 2)}")
              if any(_finite(r["pairwise"]) for r in regd) else "n/a",
              [False if s else (None if not _finite(r["pairwise"]) else bool(r["pairwise"] < r["across_images"]))
               for r, s in zip(regd, sym)],
              "holds = two registers overlap less than one register with itself on another image"
              + (f"; registers with identical maps (overlap >= {SAME_MAP_OVERLAP}) in {sum(sym)} seed(s): "
                 "they never broke symmetry" if any(sym) else ""),
              "fewer than 2 registers"),
    ]


# --------------------------------------------------------------------------------------------
# Fig. 8, Table 2a: ablation and linear evaluation
# --------------------------------------------------------------------------------------------
def ablation_claims(rows: list, r_main: int, r_one: int | None) -> list:
    """`rows`: per run {registers, seed, probe_acc, dense_miou, outlier_frac, frac_at_base}
    (frac_at_base: share above the same-seed baseline's threshold)."""
    by = {(r["registers"], r["seed"]): r for r in rows}
    seeds = sorted({r["seed"] for r in rows})
    counts = sorted({r["registers"] for r in rows})
    b = {s: by[(0, s)] for s in seeds}
    m = {s: by[(r_main, s)] for s in seeds}

    def col(reg, key):
        return [by[(reg, s)][key] for s in seeds]
    top = counts[-1]
    out = [
        claim("Table 2a", f"linear probe on frozen [CLS], 0 vs {r_main} registers", "unchanged (DINOv2 84.3 vs 84.8)",
              f"{pm(col(0, 'probe_acc'), pct=True)} vs {pm(col(r_main, 'probe_acc'), pct=True)}",
              [bool(m[s]["probe_acc"] >= b[s]["probe_acc"] - ACCURACY_TOLERANCE) for s in seeds],
              f"holds = not worse by more than {100 * ACCURACY_TOLERANCE:g} point"),
        claim("Table 2a", f"dense linear probe (patch class, 10 items + background), 0 vs {r_main} registers",
              "better (DINOv2 ADE20k 46.6 vs 47.9 mIoU)",
              f"{pm(col(0, 'dense_miou'), pct=True)} vs {pm(col(r_main, 'dense_miou'), pct=True)} mIoU",
              [bool(m[s]["dense_miou"] > b[s]["dense_miou"]) for s in seeds]),
        claim("Fig. 8", f"dense probe peaks between the ends: {r_main} registers vs 0 and vs {top}",
              "dense tasks peak at about 4 registers",
              f"{pm(col(0, 'dense_miou'), pct=True)} / {pm(col(r_main, 'dense_miou'), pct=True)} / "
              f"{pm(col(top, 'dense_miou'), pct=True)} mIoU (0 / {r_main} / {top})",
              [bool(m[s]["dense_miou"] >= b[s]["dense_miou"] and m[s]["dense_miou"] >= by[(top, s)]["dense_miou"])
               for s in seeds], f"holds = {r_main} registers at least as good as 0 and as {top} (by chance: 1 in 3 per seed)"),
    ]
    if r_one is not None:
        out.append(claim("Fig. 8", f"outlier share with {r_one} register(s)", "one register removes the artifacts",
                         f"{pm(col(0, 'outlier_frac'), pct=True)} with 0; {pm(col(r_one, 'outlier_frac'), pct=True)} "
                         f"with {r_one} ({pm(col(r_one, 'frac_at_base'), pct=True)} at the baseline's threshold)",
                         [registers_remove(b[s]["outlier_frac"], by[(r_one, s)]["outlier_frac"],
                                           by[(r_one, s)]["frac_at_base"]) for s in seeds],
                         f"holds = at least {REGISTER_DROP:g}x fewer, by both rules", "no outlier tokens in the baseline"))
    return out


# --------------------------------------------------------------------------------------------
# Table 3: LOST
# --------------------------------------------------------------------------------------------
def lost_claims(base: list, regd: list, registers: int) -> list:
    """`base` / `regd`: per seed {corloc, seed_on_outlier, outlier_frac, outlier_bg_share}."""
    def artefact_seed(b):
        if not b["outlier_frac"] or b["outlier_bg_share"] is None or b["outlier_bg_share"] < MOSTLY:
            return None   # no background outliers: the mechanism cannot act
        return bool(b["seed_on_outlier"] > b["outlier_frac"])
    return [
        claim("Table 3", f"LOST CorLoc, 0 vs {registers} registers (offline scenes)",
              "higher with registers (DeiT-III VOC07 11.7 -> 27.1)",
              f"{pm([b['corloc'] for b in base], pct=True)} vs {pm([r['corloc'] for r in regd], pct=True)}",
              [bool(r["corloc"] > b["corloc"]) for b, r in zip(base, regd)]),
        claim("Table 3 (our hypothesis)", "the baseline's LOST seed lands on a high-norm background token",
              "hypothesis (ours), not a number of the paper",
              f"{pm([b['seed_on_outlier'] for b in base], pct=True)} of seeds on an outlier; outliers are "
              f"{pm([b['outlier_frac'] for b in base], pct=True)} of tokens",
              [artefact_seed(b) for b in base], "holds = seeds land on outliers more often than a random token would",
              "no background outliers in the scene baselines"),
    ]


def reading(claims: list, smoke: bool) -> str:
    """The prose reading of a notebook, written from its verdicts."""
    if smoke:
        head = ("**Smoke run**: tiny models trained for seconds. The numbers below check the plumbing; "
                "no verdict is given and none of them is evidence about the paper.")
    else:
        n_yes = sum(c["holds"] == "yes" for c in claims)
        head = f"**Reading.** {n_yes} of the {len(claims)} findings checked here hold in every seed."
    lines = [head, ""]
    for c in claims:
        h = c["holds"]
        say = {"yes": "the paper's direction holds in every seed", "no": "the paper's direction does not hold"}.get(
            h, "no verdict: " + h)
        lines.append(f"- *{c['quantity']}*: ours {c['ours']} (paper: {c['paper']}); {say} ({c['seeds']}).")
    return "\n".join(lines)


def size_claims(by_size: dict, paper_sizes: str) -> list:
    """Fig. 4c. `by_size`: {size name: {seed: outlier share, or None when no outlier mode}}, from the
    smallest to the largest model. Compared per seed that every size has."""
    names = list(by_size)
    small, large = by_size[names[0]], by_size[names[-1]]
    common = sorted(set.intersection(*(set(v) for v in by_size.values())))
    holds = [False if large[s] is None else bool(large[s] > (small[s] or 0.0)) for s in common]
    shown = "; ".join(f"ViT-{n}: " + ", ".join("none" if v is None else f"{100 * v:.2f}%" for v in by_size[n].values())
                      for n in names)
    return [claim("Fig. 4c", "outlier share grows with model size (smallest vs largest, same seed)",
                  f"only large models ({paper_sizes})", shown, holds,
                  "holds = the largest model has outliers, and more than the smallest", "no outliers in the largest model")]


# --------------------------------------------------------------------------------------------
# Beyond the paper: test-time registers (Jiang et al., 2025)
# --------------------------------------------------------------------------------------------
# "Accuracy kept": the bar, tighter than ACCURACY_TOLERANCE: the model is the same model,
# evaluated on the same images, so the only change is the edit (Jiang et al. report no loss).
TTR_ACCURACY_DROP = 0.005


def ttr_claims(rows: list, scenes: list, registers: int) -> list:
    """Per seed (`rows`: ttr_study.on_run, plus `reg_frac`: the trained register model's share at the
    baseline's threshold; `scenes`: ttr_study.on_scenes): do the outliers leave the patches
    (>= REGISTER_DROP-fold fewer above the baseline's own threshold), is accuracy kept (a drop of at
    most TTR_ACCURACY_DROP), and does LOST find more objects (CorLoc higher than the same baseline's)?"""
    # "moved", not "deleted": the extra token must also carry a high norm, in most of the images that had an outlier
    moved = [None if not r["base_frac"] else
             bool(r["ttr_frac"] <= r["base_frac"] / REGISTER_DROP and r["extra_above"] >= MOSTLY * r["base_images_with"])
             for r in rows]
    kept = [r["acc_base"] - r["acc_ttr"] <= TTR_ACCURACY_DROP for r in rows]
    lost_better = [None if not s["scene_base_frac"] else s["corloc_ttr"] > s["corloc_base"] for s in scenes]
    paper = "Jiang et al.: outliers move to the added token, with no retraining"
    out = [claim("TTR", "outlier share in the patches, baseline -> test-time register (-> trained registers)", paper,
                 f"{pm([r['base_frac'] for r in rows], pct=True)} -> {pm([r['ttr_frac'] for r in rows], pct=True)} "
                 f"(-> {pm([r.get('reg_frac') for r in rows], pct=True)} with {registers} trained)", moved,
                 note=f"at the baseline's own threshold, same test images; holds at >= {REGISTER_DROP:g}x fewer and the "
                      f"extra token above that threshold in most images that had an outlier",
                 why="no outlier tokens in the baseline"),
           claim("TTR", "test accuracy, baseline -> test-time register", "kept (Jiang et al.)",
                 f"{pm([r['acc_base'] for r in rows], pct=True)} -> {pm([r['acc_ttr'] for r in rows], pct=True)}", kept,
                 note=f"holds when the drop is <= {100 * TTR_ACCURACY_DROP:g} point")]
    if scenes:
        out.append(claim("TTR", "LOST CorLoc on scenes, baseline -> test-time register", "higher (as with trained registers, Table 3)",
                         f"{pm([s['corloc_base'] for s in scenes], pct=True)} -> {pm([s['corloc_ttr'] for s in scenes], pct=True)}"
                         + (f" (trained registers: {pm([s['corloc_trained_registers'] for s in scenes], pct=True)})"
                            if all("corloc_trained_registers" in s for s in scenes) else ""),
                         lost_better, why="no outlier tokens in the scene baseline"))
    return out


# --------------------------------------------------------------------------------------------
# Beyond the paper's scale: the public checkpoints (regstudy.pretrained)
# --------------------------------------------------------------------------------------------
RANDOM_WEIGHTS = "n/a (random weights)"


def _one(h) -> str:
    return "not measurable (no outlier mode without registers)" if h is None else ("yes" if h else "no")


LARGE = ("large", "huge", "giant", "_g_", "_l_")   # the sizes at which the paper sees outliers (ViT-L and up)


def pretrained_claims(pairs: dict, weights: str) -> list:
    """`pairs`: {"name without registers": pretrained.pair_row}; one checkpoint each, no seeds, so
    one row per pair with its own verdict. "An outlier mode without registers" is the paper's claim
    for ViT-L and larger only; smaller pairs report it without a verdict. "Registers remove it": the
    twin has at least REGISTER_DROP-fold fewer tokens above the baseline's threshold (not measurable
    where there is nothing to remove). Random-init twins give no verdict."""
    out = []
    for name, r in pairs.items():
        large = any(k in name for k in LARGE)
        has = bool(r["base_found"] and r["base_frac"] > 0)
        removed = None if not has else r["reg_frac_at_base"] <= r["base_frac"] / REGISTER_DROP
        out.append({"artefact": "Pretrained", "quantity": f"{name}: outlier mode without registers",
                    "paper": "yes (ViT-L and larger, Sec. 2)" if large else "not claimed below ViT-L",
                    "ours": f"{100 * r['base_frac']:.2f}% of patches" + ("" if has else " (no mode)"),
                    "holds": _one(has) if large else "n/a (not claimed)", "seeds": "1 checkpoint", "note": ""})
        out.append({"artefact": "Pretrained", "quantity": f"{name}: its register twin, share above that threshold",
                    "paper": "~0 (Fig. 7)", "ours": f"{100 * r['reg_frac_at_base']:.2f}%", "holds": _one(removed),
                    "seeds": "1 checkpoint", "note": f"holds at >= {REGISTER_DROP:g}x fewer"})
    if weights != "pretrained":
        for c in out:
            c["computed"], c["holds"] = c["holds"], RANDOM_WEIGHTS
    return out

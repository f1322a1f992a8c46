import pytest
import numpy as np
import torch

from regstudy import norms


def lognormal_mix(n, share, ratio, seed=0):
    rng = np.random.default_rng(seed)
    k = int(n * share)
    normal = np.exp(rng.normal(np.log(8), 0.25, n - k))
    high = np.exp(rng.normal(np.log(8 * ratio), 0.15, k))
    return np.concatenate([normal, high]), k


def test_bimodal_norms_give_a_threshold_between_the_modes():
    v, k = lognormal_mix(50_000, 0.02, 10)
    rule = norms.fit_outlier_rule(v)
    assert rule.bimodal and rule.ashman_d > 2
    assert 8 * 1.5 < rule.threshold < 80 / 1.5
    flagged = (v > rule.threshold).sum()
    assert abs(flagged - k) / k < 0.05


def test_unimodal_norms_flag_nothing():
    v = np.exp(np.random.default_rng(1).normal(np.log(8), 0.3, 50_000))
    rule = norms.fit_outlier_rule(v)
    assert not rule.bimodal and rule.threshold is None
    assert not rule.flag(torch.as_tensor(v)).any()


def test_rule_adapts_to_scale():
    """The threshold is taken from the data: scaling every norm scales the threshold."""
    v, _ = lognormal_mix(20_000, 0.03, 6, seed=2)
    a, b = norms.fit_outlier_rule(v), norms.fit_outlier_rule(v * 100)
    assert abs(b.threshold / a.threshold - 100) < 1


def test_outlier_summary_counts_background():
    n = torch.tensor([[1.0, 1.0, 50.0, 1.0], [1.0, 60.0, 1.0, 55.0]])
    bg = torch.tensor([[True, False, True, True], [True, True, False, False]])
    rule = norms.OutlierRule(threshold=10.0, crossing=10.0, bimodal=True, ashman_d=5, means=(0, 3), sds=(1, 1),
                             weights=(0.9, 0.1), n=8)
    s = norms.outlier_summary(n, bg, rule)
    assert s["n_outliers"] == 3 and s["outlier_frac"] == 3 / 8
    assert s["outlier_bg_share"] == 2 / 3 and s["images_with_outlier"] == 1.0


def test_histogram_helpers():
    h = norms.log_hist([1.0, 10.0, 100.0, 1000.0])
    assert sum(h) == 4
    assert norms.hist_frac_above(h, 50.0) == 0.5
    assert norms.hist_frac_above(h, None) == 0.0


def test_foreground_background_split_is_not_an_outlier_mode():
    """Two common modes (e.g. background and object tokens) are not artifacts: nothing is flagged."""
    rng = np.random.default_rng(3)
    v = np.concatenate([np.exp(rng.normal(np.log(4), 0.2, 30_000)), np.exp(rng.normal(np.log(12), 0.2, 20_000))])
    rule = norms.fit_outlier_rule(v)
    assert not rule.bimodal and rule.threshold is None


def test_rare_high_mode_is_found_beside_a_foreground_background_split():
    rng = np.random.default_rng(4)
    v = np.concatenate([np.exp(rng.normal(np.log(4), 0.2, 30_000)), np.exp(rng.normal(np.log(10), 0.2, 19_000)),
                        np.exp(rng.normal(np.log(80), 0.15, 1_000))])
    rule = norms.fit_outlier_rule(v)
    assert rule.bimodal and rule.components == 3
    assert 10 * 1.3 < rule.threshold < 80 / 1.3
    assert abs((v > rule.threshold).sum() - 1000) < 50


# --- the two-rule outlier definition on skewed and heavy-tailed norms ---------------------------
def skewed_bulk(kind, n, rng):
    """Outlier-free token norms of three shapes: log-normal, gamma (right-skewed, its log
    left-skewed) and Student-t with 3 degrees of freedom (heavy tails)."""
    if kind == "lognormal":
        return np.exp(rng.normal(np.log(8), 0.35, n))
    if kind == "gamma":
        return rng.gamma(2.0, 4.0, n)
    if kind == "student-t":
        return np.abs(8 + 1.5 * rng.standard_t(3, n)) + 0.1
    raise ValueError(kind)


def planted(kind, share, ratio=10.0, n=20_000, seed=0):
    rng = np.random.default_rng(seed)
    k = int(round(n * share))
    bulk = skewed_bulk(kind, n - k, rng)
    high = np.exp(rng.normal(np.log(ratio * np.median(bulk)), 0.15, k))
    return np.concatenate([bulk, high]), np.r_[np.zeros(n - k, bool), np.ones(k, bool)]


@pytest.mark.parametrize("kind", ["lognormal", "gamma", "student-t"])
@pytest.mark.parametrize("share", [0.005, 0.02, 0.05])
@pytest.mark.parametrize("seed", [0, 1])
def test_planted_outliers_are_found_in_skewed_norms(kind, share, seed):
    """Outliers at the paper's ~10x the median: recall >= 90%, false flags <= 0.5% of normal tokens."""
    v, truth = planted(kind, share, seed=seed)
    rule = norms.fit_outlier_rule(v)
    flags = np.asarray(rule.flag(v))
    assert rule.found
    assert (flags & truth).sum() / truth.sum() >= 0.90
    assert (flags & ~truth).sum() / (~truth).sum() <= 0.005


@pytest.mark.parametrize("share", [0.005, 0.02, 0.05])
def test_outliers_at_five_times_the_median_are_found(share):
    """The magnitude seen at small scale (4-5x the background median), in a log-normal bulk."""
    v, truth = planted("lognormal", share, ratio=5.0, seed=3)
    flags = np.asarray(norms.fit_outlier_rule(v).flag(v))
    assert (flags & truth).sum() / truth.sum() >= 0.90
    assert (flags & ~truth).sum() / (~truth).sum() <= 0.005


@pytest.mark.parametrize("kind", ["lognormal", "gamma", "student-t"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_nothing_is_flagged_in_outlier_free_skewed_norms(kind, seed):
    v = skewed_bulk(kind, 20_000, np.random.default_rng(seed))
    rule = norms.fit_outlier_rule(v)
    assert not rule.found and not np.asarray(rule.flag(v)).any()


def test_a_tail_mode_below_the_relative_bar_is_not_an_outlier_mode():
    """A rare, separated mode at 2x the median (what a heavy tail can look like to the mixture)
    passes the mixture rule alone but not the relative rule: nothing is flagged."""
    rng = np.random.default_rng(5)
    v = np.concatenate([np.exp(rng.normal(np.log(8), 0.1, 19_000)), np.exp(rng.normal(np.log(16), 0.05, 1_000))])
    rule = norms.fit_outlier_rule(v)
    assert rule.bimodal and rule.mode_ratio < norms.RELATIVE_K
    assert not rule.found and not np.asarray(rule.flag(v)).any()
    assert np.asarray(rule.mixture_flag(v)).sum() > 500


def test_relative_bar_uses_the_background_median():
    """Object tokens with larger norms do not move the bar: it is RELATIVE_K x the background median."""
    rng = np.random.default_rng(6)
    bg = np.exp(rng.normal(np.log(4), 0.2, 10_000))
    fg = np.exp(rng.normal(np.log(10), 0.2, 9_800))
    high = np.exp(rng.normal(np.log(40), 0.1, 200))
    v = np.concatenate([bg, fg, high])
    mask = np.r_[np.ones(10_000, bool), np.zeros(10_000, bool)]
    rule = norms.fit_outlier_rule(v, mask)
    assert rule.reference_median == pytest.approx(np.median(bg))
    assert rule.relative_threshold == pytest.approx(norms.RELATIVE_K * np.median(bg))


def test_baseline_threshold_is_carried_over_relative_to_the_background_median():
    """A register model whose norms are all twice the baseline's, with no outlier mode: the baseline's
    absolute threshold would flag its upper tail; carried over as a multiple of the background median,
    nothing is flagged. Real outliers at the same relative height are still caught."""
    rng = np.random.default_rng(7)
    base = np.exp(rng.normal(np.log(8), 0.25, 20_000))
    base[:400] *= 10
    rb = norms.fit_outlier_rule(base)
    reg = 2 * np.exp(rng.normal(np.log(8), 0.25, 20_000))
    rr = norms.fit_outlier_rule(reg)
    thr = norms.baseline_threshold_for(rb.to_dict(), rr.to_dict())
    assert thr == pytest.approx(rb.threshold / rb.reference_median * rr.reference_median)
    assert (reg > rb.threshold).mean() > 0.001 and (reg > thr).mean() == 0
    reg[:400] *= 10
    assert (reg > norms.baseline_threshold_for(rb.to_dict(), norms.fit_outlier_rule(reg).to_dict())).mean() > 0.019
    assert norms.baseline_threshold_for({"threshold": None}, rr.to_dict()) is None


# --- how the two rules agree (Fig. 3, the rule) -------------------------------------------------
def test_rule_agreement_on_a_planted_mode_both_rules_flag_it():
    v, truth = planted("lognormal", 0.02, seed=0)
    rule = norms.fit_outlier_rule(v)
    a = norms.rule_agreement(v, rule.to_dict())   # tokens.json's dict works as well as the rule
    assert a == norms.rule_agreement(v, rule)
    assert a["tokens"] == len(v) == a["mixture_only"] + a["relative_only"] + a["both"] + a["neither"]
    assert a["both"] == a["outliers"] == int(np.asarray(rule.flag(v)).sum())
    assert abs(a["both"] - truth.sum()) <= 0.05 * truth.sum()
    assert a["mixture_only"] + a["relative_only"] <= 0.001 * len(v)


def test_rule_agreement_on_a_skewed_tail_only_one_rule_flags_and_nothing_is_an_outlier():
    # a right-skewed bulk: its tail crosses 3x the median (relative rule), the mixture finds no mode
    v = skewed_bulk("gamma", 20_000, np.random.default_rng(0))
    a = norms.rule_agreement(v, norms.fit_outlier_rule(v))
    assert a["relative_only"] > 0.01 * len(v)
    assert a["mixture_only"] == a["both"] == a["outliers"] == 0
    # a rare separated mode at 2x the median: the mixture rule alone flags it, the relative rule does not
    rng = np.random.default_rng(5)
    v = np.concatenate([np.exp(rng.normal(np.log(8), 0.1, 19_000)), np.exp(rng.normal(np.log(16), 0.05, 1_000))])
    a = norms.rule_agreement(v, norms.fit_outlier_rule(v))
    assert a["mixture_only"] > 500
    assert a["relative_only"] == a["both"] == a["outliers"] == 0

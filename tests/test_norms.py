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

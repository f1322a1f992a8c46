"""The emergence map: its grid config, the per-block probe, and the artifact verdict on planted rows."""
from __future__ import annotations

import copy

import numpy as np

import pytest
import torch

from regstudy import config, emergence, train
from regstudy.config import ConfigError


def raw_grid(**over):
    g = {"registers": [0, 4], "seeds": [0, 1],
         "base": {"embed_dim": 16, "depth": 2, "num_heads": 2, "patch_size": 4, "lr": 1e-3, "batch_size": 32,
                  "weight_decay": 0.05, "layerscale": 1e-4, "epochs": 2, "train_images": 256},
         "grid": {"base": {}, "wide": {"embed_dim": 32}}}
    g.update(over)
    return g


def test_the_grid_is_validated_and_variants_inherit_the_base():
    em = emergence.parse(raw_grid())
    assert em.grid["wide"]["embed_dim"] == 32 and em.grid["wide"]["depth"] == 2
    with pytest.raises(ConfigError, match="unknown key"):
        emergence.parse(raw_grid(grid={"x": {"widht": 3}}))
    with pytest.raises(ConfigError, match="must hold 0"):
        emergence.parse(raw_grid(registers=[4, 8]))
    with pytest.raises(ConfigError, match="divisible"):
        emergence.parse(raw_grid(grid={"x": {"embed_dim": 15}}))
    bad = raw_grid()
    bad["typo"] = 1
    with pytest.raises(ConfigError, match="unknown"):
        emergence.parse(bad)


def test_every_shipped_profile_has_a_valid_grid():
    for name in config.presets():
        assert config.preset(name).emergence.grid


def test_the_probe_judges_every_block_and_says_where_the_flagged_tokens_sit():
    g = torch.Generator().manual_seed(0)
    bg = torch.zeros(64, 49, dtype=torch.bool)
    bg[:, :25] = True
    pn = torch.empty(64, 49).uniform_(4.5, 5.5, generator=g)
    pn[:, 25:] = torch.empty(64, 24).uniform_(7.0, 9.0, generator=g)      # foreground: higher, a normal contrast
    clean = train._own_rule(pn, bg)
    assert not clean["found"] and clean["outlier_frac"] == 0 and clean["bg_share"] is None
    planted = pn.clone()
    planted[::2, 3] = 60.0                                                 # one background outlier in half the images
    r = train._own_rule(planted, bg)
    assert r["found"] and r["bg_share"] == 1.0 and r["flagged_min"] > r["fg_max"]
    assert r["outlier_frac"] == pytest.approx(32 / (64 * 49))


def row(variant="v", registers=0, seed=0, epoch=1, block=2, found=True, frac=0.02, bg_share=0.95, above=True,
        reg_frac=0.0):
    return {"variant": variant, "registers": registers, "seed": seed, "epoch": epoch, "images_seen": 1000 * epoch,
            "block": block, "found": found if registers == 0 else False, "outlier_frac": frac if registers == 0 else 0.0,
            "bg_share": bg_share, "above_fg": above, "frac_at_base_threshold": frac if registers == 0 else reg_frac,
            "params": 1000, "lr": 1e-3, "val_acc": 0.8, "bg_ratio": 4.0, "train_seconds": 1.0, "device": "cpu"}


def pair(epochs=(1, 2, 3), seeds=(0, 1), **kw):
    reg_frac = kw.pop("reg_frac", 0.0)
    out = []
    for s in seeds:
        for e in epochs:
            out.append(row(seed=s, epoch=e, **kw))
            out.append(row(seed=s, epoch=e, registers=4, reg_frac=reg_frac))
    return out


def test_an_artifact_that_registers_remove_is_found_from_its_first_epoch():
    ons = emergence.onsets(pair())
    assert ons["v"]["onset"] == 1000 and ons["v"]["seeds"] == "2/2" and ons["v"]["blocks"] == [2]


def test_a_tail_that_the_register_model_keeps_is_not_the_artifact():
    assert emergence.onsets(pair(reg_frac=0.01))["v"]["onset"] is None      # only 2-fold fewer
    assert emergence.onsets(pair(reg_frac=0.003))["v"]["onset"] == 1000     # ~7-fold fewer


@pytest.mark.parametrize("change", [{"bg_share": 0.5}, {"above": False}, {"found": False}])
def test_outliers_on_objects_below_foreground_or_without_a_mode_are_not_the_artifact(change):
    assert emergence.onsets(pair(**change))["v"]["onset"] is None


def test_a_flicker_does_not_count_and_every_seed_must_settle():
    rows = pair(epochs=(1, 2, 3, 4))
    flick = [r for r in rows if not (r["registers"] == 0 and r["epoch"] == 3)]
    flick += [row(epoch=3, seed=s, found=False, frac=0.0) for s in (0, 1)]
    assert emergence.onsets(flick)["v"]["onset"] == 4000                    # settles only after the gap
    one_seed = copy.deepcopy(rows)
    for r in one_seed:
        if r["seed"] == 1 and r["registers"] == 0:
            r["found"] = False
    ons = emergence.onsets(one_seed)["v"]
    assert ons["onset"] is None and ons["seeds"] == "1/2"


def test_a_finished_variant_is_not_trained_again_and_an_edited_one_is(study_root, tiny_profile, monkeypatch):
    em = emergence.parse(raw_grid(seeds=[0], grid={"base": {}},
                                  base={**raw_grid()["base"], "epochs": 1, "train_images": 64}))
    calls = []
    real = train.fit_family
    monkeypatch.setattr(train, "fit_family", lambda cfgs, dirs, **kw: calls.append(cfgs[0].name) or real(cfgs, dirs, **kw))
    assert emergence.train_grid(tiny_profile, em) == ["base-r0", "base-r4"]
    assert emergence.train_grid(tiny_profile, em) == [] and len(calls) == 2
    rows = emergence.table(tiny_profile.name, em)
    assert {r["registers"] for r in rows} == {0, 4} and {r["block"] for r in rows} == {1, 2}
    assert all(r["frac_at_base_threshold"] is not None for r in rows)
    assert all(r["reference_median"] for r in rows)                          # every block judged by its own rule
    edited = emergence.parse(raw_grid(seeds=[0], grid={"base": {"lr": 2e-3}},
                                      base={**raw_grid()["base"], "epochs": 1, "train_images": 64}))
    assert emergence.train_grid(tiny_profile, edited) == ["base-r0", "base-r4"]


def test_the_register_side_is_counted_cautiously_from_its_histogram():
    """A register token just above the baseline's threshold (within one histogram bin) is counted, so
    that the histogram's resolution can never enlarge the fold between baseline and registers."""
    from regstudy import norms
    hist = [0] * (len(norms.LOG10_BINS) - 1)
    ref = 2.0
    near = 3.05 * ref                                   # just above a 3x-median threshold
    b = int(np.searchsorted(norms.LOG10_BINS, np.log10(near)) - 1)
    hist[b] = 10
    hist[int(np.searchsorted(norms.LOG10_BINS, np.log10(ref)) - 1)] = 990
    base = {"variant": "v", "registers": 0, "seed": 0, "epoch": 1, "block": 1, "threshold": 3 * ref,
            "reference_median": ref, "outlier_frac": 0.01, "_hist": hist}
    reg = {**base, "registers": 4, "threshold": None, "outlier_frac": 0.0}
    assert norms.hist_frac_above(hist, 3 * ref, cautious=True) == pytest.approx(0.01)
    rows = [dict(base), dict(reg)]
    out = {r["registers"]: r for r in emergence_table_rows(rows)}
    assert out[4]["frac_at_base_threshold"] == pytest.approx(0.01)           # not 0: the fold stays 1


def emergence_table_rows(rows):
    """table()'s threshold carry-over on ready-made rows (table reads them from run folders)."""
    import regstudy.emergence as em
    base = {(x["variant"], x["seed"], x["epoch"], x["block"]): x for x in rows if x["registers"] == 0}
    for x in rows:
        em._score_at_base(x, base)
    return rows


def tails(base_ratio, reg_ratio, seeds=(0, 1), reg8_ratio=None):
    """Rows with no outlier mode anywhere (epochs 1-3, blocks 1-2): the baseline's and the register
    twins' ratios are planted at the last epoch's last block only; everywhere else the opposite
    contrast, so that reading any other epoch or block gives the wrong answer."""
    rows = []
    for s in seeds:
        for e in (1, 2, 3):
            for blk in (1, 2):
                last = e == 3 and blk == 2
                rows.append({**row(seed=s, epoch=e, block=blk, found=False, frac=0.0),
                             "bg_ratio": base_ratio[s] if last else 2.0})
                rows.append({**row(seed=s, epoch=e, block=blk, registers=4),
                             "bg_ratio": reg_ratio[s] if last else 5.0})
                if reg8_ratio is not None:
                    rows.append({**row(seed=s, epoch=e, block=blk, registers=8),
                                 "bg_ratio": reg8_ratio[s] if last else 5.0})
    return rows


def conclusion(rows, seeds=(0, 1)):
    em = emergence.parse(raw_grid(seeds=list(seeds), grid={"v": {}}))
    return emergence._conclusion(emergence.summary(rows, em))


def test_a_tail_that_registers_shrink_in_every_seed_is_a_precursor_not_the_artifact():
    rows = tails({0: 4.0, 1: 3.8}, {0: 2.8, 1: 2.7})
    c = emergence.tail_contrast(rows)
    assert c["tail_seeds"] == "2/2" and c["tail_contrast"] == pytest.approx((4 / 2.8 + 3.8 / 2.7) / 2)
    assert emergence.onsets(rows)["v"]["onset"] is None                    # no mode: never the artifact
    assert "precursor" in conclusion(rows) and "`v`" in conclusion(rows)


@pytest.mark.parametrize("base, reg, seeds, k", [
    ({0: 4.0, 1: 3.0}, {0: 3.8, 1: 3.1}, (0, 1), "0/2"),                   # a tail both share
    ({0: 4.0, 1: 3.0}, {0: 2.8, 1: 2.9}, (0, 1), "1/2"),                   # one seed only
    ({0: 4.0}, {0: 2.0}, (0,), "1/1"),                                      # one seed is an anecdote
])
def test_a_tail_both_share_one_seed_or_a_single_seed_is_no_precursor(base, reg, seeds, k):
    rows = tails(base, reg, seeds)
    assert emergence.tail_contrast(rows)["tail_seeds"] == k
    assert "precursor" not in conclusion(rows, seeds)


def test_the_least_different_twin_counts_and_a_seed_without_twin_fails():
    both = tails({0: 4.0, 1: 4.0}, {0: 2.8, 1: 2.8}, reg8_ratio={0: 3.9, 1: 2.0})
    assert emergence.tail_contrast(both)["tail_seeds"] == "1/2"             # 8 registers keep seed 0's tail
    rows = tails({0: 4.0, 1: 4.0, 2: 4.0}, {0: 2.8, 1: 2.8, 2: 2.8}, seeds=(0, 1, 2))
    unpaired = [x for x in rows if not (x["seed"] == 2 and x["registers"])]   # seed 2's twin never finished
    assert emergence.tail_contrast(unpaired)["tail_seeds"] == "2/3"
    assert "precursor" not in conclusion(unpaired, (0, 1, 2))


def test_a_seed_added_to_the_grid_trains_alone(study_root, tiny_profile, monkeypatch):
    small = {**raw_grid()["base"], "epochs": 1, "train_images": 64}
    calls = []
    real = train.fit_family
    monkeypatch.setattr(train, "fit_family", lambda cfgs, dirs, **kw: calls.append([c.name for c in cfgs]) or real(cfgs, dirs, **kw))
    emergence.train_grid(tiny_profile, emergence.parse(raw_grid(seeds=[0], grid={"base": {}}, base=small)))
    emergence.train_grid(tiny_profile, emergence.parse(raw_grid(seeds=[0, 1], grid={"base": {}}, base=small)))
    assert calls == [["base-r0-s0"], ["base-r4-s0"], ["base-r0-s1"], ["base-r4-s1"]]

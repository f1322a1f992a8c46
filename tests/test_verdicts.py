"""Planted-effect tests of every verdict: an effect that is there is found, one that is not is not."""
import numpy as np
import pytest
import torch

from regstudy import extract, global_info, linear_eval, local_info, norms, probes, verdicts


# --- seeds ------------------------------------------------------------------------------------
def test_a_verdict_needs_every_seed():
    assert verdicts.over_seeds([True, True, True]) == ("yes", "3/3 seeds")
    assert verdicts.over_seeds([True, False, True]) == ("no", "2/3 seeds")
    assert verdicts.over_seeds([True]) == ("not measurable (1 seed)", "1/1 seeds")
    assert verdicts.over_seeds([True, True]) == ("not measurable (2 seeds)", "2/2 seeds")
    assert verdicts.over_seeds([True, None, True]) == ("not measurable (in 1 of 3 seeds)", "2/3 seeds (1 not measurable)")
    assert verdicts.over_seeds([False, None, True])[0] == "no"


# --- 1. local probes: one pooled probe, each group beside its own trivial baseline --------------
def groups(n, grid, outlier_informative, outlier_positions, seed=0, dim=24, bg_signal=1.0):
    """Outlier and normal-background tokens. Background tokens encode their position linearly
    (`bg_signal` scales the code against the noise). Outlier tokens encode it too
    (`outlier_informative`) or are noise, and sit at `outlier_positions`."""
    g = torch.Generator().manual_seed(seed)
    N = grid * grid
    code = torch.randn(N, dim, generator=torch.Generator().manual_seed(99))   # the model's position code

    def make(pos, informative, signal=1.0):
        x = torch.randn(len(pos), dim, generator=g) * 0.3 + (signal * code[pos] if informative else 0)
        pix = torch.rand(len(pos), 4, generator=g) * 0.02
        return {"x": x, "pos": pos, "pix": pix}
    opos = torch.tensor(outlier_positions)[torch.randint(0, len(outlier_positions), (n,), generator=g)]
    return {"outlier": make(opos, outlier_informative),
            "normal_background": make(torch.randint(0, N, (n,), generator=g), True, bg_signal)}


def local_verdict(outlier_informative, outlier_positions, bg_signal=1.0):
    per_seed = []
    for s in range(3):
        tr = groups(600, 5, outlier_informative, outlier_positions, seed=10 + s, bg_signal=bg_signal)
        te = groups(300, 5, outlier_informative, outlier_positions, seed=20 + s, bg_signal=bg_signal)
        rows = local_info.pooled_probes(tr, te, 5, 600, 300, epochs=20, lr=1e-2, seeds=1)
        by = {r["group"]: r for r in rows}
        per_seed.append({"cos_outlier": 0.5, "cos_background": 0.4,
                         "pos_gain_outlier": by["outlier"]["position_gain"],
                         "pos_gain_background": by["normal_background"]["position_gain"],
                         "pix_gain_outlier": None, "pix_gain_background": None})
    paper = {"outlier": {"position_top1_acc": "22", "reconstruction_l2": "1"},
             "normal": {"position_top1_acc": "74", "reconstruction_l2": "0.5"}}
    return verdicts.local_claims(per_seed, paper)[1]["holds"]


def test_outliers_that_dropped_their_position_are_found_even_where_positions_cluster():
    """Outliers sit at two corner positions and hold no position information. A probe trained on the
    outliers alone would learn the two corners and score high (the old, per-group design said 'no');
    the pooled probe beside the majority baseline shows that they gain nothing."""
    assert local_verdict(outlier_informative=False, outlier_positions=[0, 1]) == "yes"


def test_the_per_group_design_would_call_clustered_empty_outliers_richer_than_weak_background():
    """The trap of the old design (a probe per group, raw top-1): outliers at 2 positions with no
    position information score ~50% by learning their majority position, above background tokens that
    carry a weak position code (~25-30% over 25 positions): 'outliers hold more'. One pooled probe,
    each group beside its own trivial baseline, finds that the outliers gain nothing: 'yes'."""
    for s in range(3):
        tr = groups(600, 5, False, [0, 1], seed=10 + s, bg_signal=0.1)
        te = groups(300, 5, False, [0, 1], seed=20 + s, bg_signal=0.1)
        raw = {g: float((probes.position(tr[g]["x"], tr[g]["pos"], te[g]["x"], te[g]["pos"], (5, 5), epochs=20,
                                         lr=1e-2, seed=s).predictions == te[g]["pos"]).float().mean()) for g in tr}
        assert raw["outlier"] > raw["normal_background"] + 0.1, raw
    assert local_verdict(outlier_informative=False, outlier_positions=[0, 1], bg_signal=0.1) == "yes"


def test_the_papers_own_numbers_pass_the_rules():
    """A bar that the paper's numbers fail would decide 'no' before any model is trained."""
    assert verdicts.less_information(0.228, 0.417)            # Fig. 5b position top-1, outlier vs normal
    assert not verdicts.less_information(0.40, 0.417)        # equal information up to noise is not less
    paper = {r["token"]: r for r in __import__("regstudy.report", fromlist=["reference"]).reference("token_classification_probe")}
    assert verdicts.approaches_cls(87.3, 17.1, 79.1, 0.0)    # Table 1, Aircraft: closes 88% of the gap
    assert verdicts.paper_closing(paper) == 12               # all but IN1k and P205


def test_outliers_with_the_same_information_are_not_called_poorer():
    assert local_verdict(outlier_informative=True, outlier_positions=list(range(25))) == "no"
    # clustered but informative outliers: their own baseline is high, and the normalised gain is not
    # penalised for it
    assert local_verdict(outlier_informative=True, outlier_positions=[0, 1]) == "no"


def test_a_group_at_a_single_position_has_no_position_to_recover():
    assert local_verdict(outlier_informative=True, outlier_positions=[0]).startswith("not measurable")


def test_trivial_baselines():
    tr = {"pos": torch.tensor([3, 3, 3, 1]), "pix": torch.tensor([[0.0], [1.0], [0.0], [1.0]])}
    te = {"pos": torch.tensor([3, 0]), "pix": torch.tensor([[0.5], [0.5]])}
    b = local_info.trivial_baselines(tr, te, grid=2)
    assert b["position_top1"] == 0.5 and b["reconstruction_l2"] == pytest.approx(0.0)
    assert b["position_avg_distance"] == pytest.approx((0 + 2 ** 0.5) / 2)


# --- 3. Fig. 4b: each epoch judged by its own rule ------------------------------------------------
def epoch_norms(epochs, appear_at, seed=0):
    """Norms that grow 10x over training; a rare mode at 10x the median from epoch `appear_at` on."""
    rng = np.random.default_rng(seed)
    out = []
    for e in range(epochs):
        scale = 10 ** (e / (epochs - 1))
        v = np.exp(rng.normal(0, 0.3, 5000)) * scale
        if e >= appear_at:
            v[:100] = np.exp(rng.normal(np.log(10), 0.1, 100)) * scale
        out.append(v)
    return out


def emergence(per_epoch):
    return verdicts.emergence_epoch([norms.fit_outlier_rule(v).found for v in per_epoch])


def test_emergence_is_read_per_epoch_not_with_the_final_threshold():
    """A mode present from the first epoch while every norm grows 10x: with the last epoch's
    absolute threshold (the old Fig. 4b) the early epochs look clean; judged per epoch it is there
    from the start."""
    per_epoch = epoch_norms(10, appear_at=0)
    last = norms.fit_outlier_rule(per_epoch[-1])
    assert (per_epoch[0] > last.threshold).mean() == 0          # what the old figure drew
    assert emergence(per_epoch) == 0
    late = emergence(epoch_norms(10, appear_at=5))
    assert late == 5
    claims = verdicts.depth_training_claims([None] * 3, 12, [emergence(epoch_norms(10, a, s)) / 10
                                                              for a, s in ((0, 0), (0, 1), (0, 2))], "15/40", "1/3")
    assert claims[1]["holds"] == "no"
    claims = verdicts.depth_training_claims([None] * 3, 12, [emergence(epoch_norms(10, 5, s)) / 10
                                                              for s in range(3)], "15/40", "1/3")
    assert claims[1]["holds"] == "yes"


# --- 4. registers judged by their own rule and by the baseline's threshold ------------------------
def norms_pair(reg_frac_at_base, reg_own=0.0, base_frac=0.02, seeds=3):
    return [{"found": True, "outlier_frac": base_frac, "norm_ratio": 8.0, "outlier_bg_share": 0.9,
             "background_frac": 0.5, "test_acc": 0.9, "reg_outlier_frac": reg_own,
             "reg_frac_at_base": reg_frac_at_base, "reg_test_acc": 0.9} for _ in range(seeds)]


def test_registers_must_remove_outliers_at_the_baselines_threshold_too():
    """A register model whose own fit finds no mode but that still has as many tokens above the
    baseline's threshold has not removed the artifacts."""
    assert verdicts.norms_claims(norms_pair(0.0), 4, "2")[3]["holds"] == "yes"
    assert verdicts.norms_claims(norms_pair(0.02), 4, "2")[3]["holds"] == "no"
    assert verdicts.norms_claims(norms_pair(0.0, reg_own=0.02), 4, "2")[3]["holds"] == "no"


def test_norm_ratio_is_a_magnitude():
    rows = norms_pair(0.0)
    assert verdicts.norms_claims(rows, 4, "2")[1]["holds"] == "yes"           # 8x: within 2 of ~10x
    for r in rows:
        r["norm_ratio"] = 3.5                                                 # a mode, but 3.5x
    assert verdicts.norms_claims(rows, 4, "2")[1]["holds"] == "no"
    for r in rows:
        r.update(found=False, norm_ratio=None)
    c = verdicts.norms_claims(rows, 4, "2")
    assert c[0]["holds"] == "no" and c[1]["holds"].startswith("not measurable")


def test_one_seed_gives_no_verdict():
    c = verdicts.norms_claims(norms_pair(0.0, seeds=1), 4, "2")
    assert all(x["holds"] == "not measurable (1 seed)" for x in c)


# --- 5. Table 1: every token type on the same images ------------------------------------------------
def planted_features(n, flags_on_class0, cls_informative, seed):
    """Features of n images (class = i % 10, 2 patches each). [CLS] encodes the class; patch tokens are
    noise. Images of class 0 have an outlier token at patch 0 (when `flags_on_class0`)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 10
    means = torch.randn(10, 8, generator=torch.Generator().manual_seed(99)) * 3
    cls = (means[y] if cls_informative else 0) + torch.randn(n, 8, generator=g)
    patches = torch.randn(n, 2, 8, generator=g)
    norms_ = torch.ones(n, 2)
    if flags_on_class0:
        norms_[y == 0, 0] = 100.0
    return {"cls": cls, "patches": patches, "registers": torch.zeros(n, 0, 8), "norms": norms_}, y


def test_table1_compares_token_types_on_the_same_images(monkeypatch):
    """Only class-0 images have outliers. Probed on those images only, an outlier token scores 100%
    by class mix alone (the old table); on the same images [CLS], a normal token and the majority class
    score the same, and the verdict is 'no'."""
    ftr, ytr = planted_features(400, True, True, 0)
    fte, yte = planted_features(200, True, True, 1)
    calls = iter([ftr, fte])
    monkeypatch.setattr(extract, "features", lambda *a, **k: next(calls))
    rule = norms.OutlierRule(threshold=10.0, crossing=10.0, bimodal=True, ashman_d=5, means=(0, 3), sds=(1, 1),
                             weights=(0.9, 0.1), n=1)
    ds = {"x_train": torch.zeros(400, 1, 8, 8), "y_train": ytr, "x_test": torch.zeros(200, 1, 8, 8), "y_test": yte,
          "classes": 10}
    res = global_info.global_probe(None, ds, rule, epochs=10, lr=1e-2, seeds=1)
    by = {r["token"]: r["top1"] for r in res["rows"]}
    assert res["on_outlier_images"] and res["class_mix"][0] == 20 and sum(res["class_mix"]) == 20
    assert res["majority_acc"] == 1.0 and by["outlier patch"] >= 0.8 and by["normal patch"] >= 0.8
    base = [{"cls": by["cls"], "normal": by["normal patch"], "outlier": by["outlier patch"],
             "majority": res["majority_acc"]}] * 3
    paper = {k: {"IN1k": "1", "Airc.": "1"} for k in ("cls", "normal", "outlier")}
    assert verdicts.global_claims(base, [{"normal": 0.1, "registers": 0.5}] * 3, 4, paper)[0]["holds"] == "no"
    base = [{"cls": 0.9, "normal": 0.2, "outlier": 0.8, "majority": 0.1}] * 3
    assert verdicts.global_claims(base, [{"normal": 0.1, "registers": 0.5}] * 3, 4, paper)[0]["holds"] == "yes"


# --- 6. Fig. 4a: the same tokens followed through depth ---------------------------------------------
def test_tracked_tokens_are_followed_back_through_the_blocks():
    """Foreground tokens are high-norm at the middle block (a different set); the tokens flagged at
    the last block are high only there. Each block's own rule (the old figure) sees a mode in the
    middle; tracking the flagged tokens says they become high at the last block."""
    rng = np.random.default_rng(0)
    depth, B, N = 4, 50, 16
    pn = torch.from_numpy(np.exp(rng.normal(0, 0.2, (depth, B, N)))).float()
    bg = torch.zeros(B, N, dtype=torch.bool)
    bg[:, 8:] = True
    flags = torch.zeros(B, N, dtype=torch.bool)
    flags[:, 15] = True
    pn[1, :, 0] *= 20           # block 2: one foreground token per image is high
    pn[3, :, 15] *= 20          # block 4: the flagged background token is high
    own = norms.fit_outlier_rule(pn[1].flatten())
    assert own.found                                                        # what the old figure read
    tracked = norms.track_through_depth(pn, flags, bg)
    assert [round(t["ratio"]) for t in tracked][:3] == [1, 1, 1] and tracked[3]["ratio"] > 10
    assert verdicts.first_high_block([t["ratio"] for t in tracked]) == 4
    c = verdicts.depth_training_claims([4, 4, 4], 4, [None] * 3, "15/40", "1/3")
    assert c[0]["holds"] == "no"                                            # last block is not the middle
    assert verdicts.depth_training_claims([2, 2, 2], 4, [None] * 3, "15/40", "1/3")[0]["holds"] == "yes"


# --- 7. the dense task can tell features apart ------------------------------------------------------
def test_dense_task_separates_class_information_from_foreground_only():
    """Patch tokens that know only foreground vs background score a low 11-class mIoU; tokens that
    know the item's class score high. (On the old fg/bg task both would be near perfect.)"""
    g = torch.Generator().manual_seed(0)
    n = 600
    y = torch.arange(n) % 10
    x = torch.zeros(n, 1, 8, 8, dtype=torch.uint8)
    x[:, :, :4] = 200                                                     # top half: the item
    labels = linear_eval.patch_labels(x, y, 4)
    assert labels.shape == (n, 4) and (labels[:, :2] == y[:, None]).all() and (labels[:, 2:] == 10).all()
    fg = (labels != 10).float()[..., None]
    means = torch.randn(11, 12, generator=g) * 3
    knows_class = means[labels] + torch.randn(n, 4, 12, generator=g)
    knows_fg = fg * means[0] + torch.randn(n, 4, 12, generator=g)
    scores = {}
    for name, f in (("class", knows_class), ("fg", knows_fg)):
        tr, te = slice(0, 400), slice(400, n)
        res = probes.classify(f[tr].reshape(-1, 12), labels[tr].reshape(-1), f[te].reshape(-1, 12),
                              labels[te].reshape(-1), epochs=20, lr=1e-2, seed=0, num_classes=11)
        scores[name] = probes.class_iou(res.predictions, labels[te].reshape(-1), 11)["miou"]
    assert scores["class"] > 0.9 and scores["fg"] < 0.3


# --- Fig. 9 and Figs. 1-2 ---------------------------------------------------------------------------
def test_registers_that_never_broke_symmetry_are_not_read_as_slots():
    same = [{"pairwise": 1.0, "across_images": 0.6, "random": 0.5, "with_cls": 1.0, "max_pairwise": 1.0, "max_with_cls": 1.0}] * 3
    c = verdicts.attention_claims([{"per_token_outlier": None, "per_token_background": 0.01}] * 3, same)[1]
    assert c["holds"] == "no" and "never broke symmetry" in c["note"]
    slots = [{"pairwise": 0.3, "across_images": 0.7, "random": 0.5, "with_cls": 0.4, "max_pairwise": 0.35, "max_with_cls": 0.45}] * 3
    assert verdicts.attention_claims([{"per_token_outlier": 0.05, "per_token_background": 0.01}] * 3,
                                     slots)[1]["holds"] == "yes"
    unrelated = [{"pairwise": 0.6, "across_images": 0.5, "random": 0.5, "with_cls": 0.4, "max_pairwise": 0.35, "max_with_cls": 0.45}] * 3
    assert verdicts.attention_claims([{"per_token_outlier": 0.01, "per_token_background": 0.02}] * 3,
                                     unrelated)[1]["holds"] == "no"


def test_one_identical_pair_of_registers_is_caught_though_the_mean_overlap_is_low():
    some_same = [{"pairwise": 0.4, "across_images": 0.7, "random": 0.5, "with_cls": 0.4,
                  "max_pairwise": 0.995, "max_with_cls": 0.45}] * 3
    c = verdicts.attention_claims([{"per_token_outlier": None, "per_token_background": 0.01}] * 3, some_same)[1]
    assert c["holds"] == "no" and "never broke symmetry" in c["note"]


def test_attention_on_outliers_is_compared_with_normal_background_tokens():
    base = [{"per_token_outlier": 0.05, "per_token_background": 0.01}] * 3
    regd = [{"pairwise": 0.3, "across_images": 0.7, "random": 0.5, "with_cls": 0.4, "max_pairwise": 0.35, "max_with_cls": 0.45}] * 3
    assert verdicts.attention_claims(base, regd)[0]["holds"] == "yes"
    base = [{"per_token_outlier": 0.01, "per_token_background": 0.01}] * 3
    assert verdicts.attention_claims(base, regd)[0]["holds"] == "no"


def test_lost_seed_claim_is_labelled_as_our_hypothesis():
    b = [{"corloc": 0.2, "seed_on_outlier": 0.5, "outlier_frac": 0.02, "outlier_bg_share": 0.9}] * 3
    r = [{"corloc": 0.4, "seed_on_outlier": 0.0, "outlier_frac": 0.0, "outlier_bg_share": None}] * 3
    c = verdicts.lost_claims(b, r, 4)
    assert c[0]["holds"] == "yes" and c[1]["holds"] == "yes" and "hypothesis (ours)" in c[1]["paper"]
    b_on_object = [{**x, "outlier_bg_share": 0.1} for x in b]
    assert verdicts.lost_claims(b_on_object, r, 4)[1]["holds"].startswith("not measurable")


def test_reading_follows_the_verdicts():
    claims = verdicts.norms_claims(norms_pair(0.0), 4, "2")
    text = verdicts.reading(claims, smoke=False)
    assert "holds in every seed" in text and "reproduced" not in text
    assert "no verdict is given" in verdicts.reading(claims, smoke=True)


def _ttr_row(base=0.02, ttr=0.0, acc=(0.90, 0.899), extra=0.5):
    return {"base_frac": base, "ttr_frac": ttr, "reg_frac": 0.0, "acc_base": acc[0], "acc_ttr": acc[1],
            "extra_above": extra, "base_images_with": 0.6}


def test_test_time_registers_verdicts_follow_planted_numbers():
    from regstudy import verdicts as v
    good = v.ttr_claims([_ttr_row()] * 3, [{"corloc_base": 0.4, "corloc_ttr": 0.6, "scene_base_frac": 0.02}] * 3, 4)
    assert [c["holds"] for c in good] == ["yes", "yes", "yes"]
    stuck = v.ttr_claims([_ttr_row(ttr=0.01), _ttr_row(), _ttr_row()], [], 4)     # one seed keeps half its outliers
    assert stuck[0]["holds"] == "no" and len(stuck) == 2
    costly = v.ttr_claims([_ttr_row(acc=(0.90, 0.89))] + [_ttr_row()] * 2, [], 4)  # one point lost in one seed
    assert costly[1]["holds"] == "no"
    deleted = v.ttr_claims([_ttr_row(extra=0.0)] + [_ttr_row()] * 2, [], 4)      # gone from the patches, but not moved
    assert deleted[0]["holds"] == "no"
    empty = v.ttr_claims([_ttr_row(base=0.0)] * 3, [{"corloc_base": 0.5, "corloc_ttr": 0.4, "scene_base_frac": 0.01}] * 3, 4)
    assert empty[0]["holds"].startswith("not measurable") and empty[2]["holds"] == "no"


def test_pretrained_verdicts_follow_planted_numbers():
    from regstudy import verdicts as v
    row = lambda base, reg: {"base_frac": base, "base_found": base > 0, "reg_frac_at_base": reg, "reg_found": False}
    names = ("vit_small_patch14_dinov2.lvd142m", "vit_large_patch14_dinov2.lvd142m")
    good = v.pretrained_claims({names[0]: row(0.0, 0.0), names[1]: row(0.02, 0.0)}, "pretrained")
    holds = {c["quantity"]: c["holds"] for c in good}
    assert holds[f"{names[1]}: outlier mode without registers"] == "yes"
    assert holds[f"{names[1]}: its register twin, share above that threshold"] == "yes"
    assert holds[f"{names[0]}: outlier mode without registers"] == "n/a (not claimed)"   # the paper: ViT-L and up
    assert holds[f"{names[0]}: its register twin, share above that threshold"].startswith("not measurable")
    kept = v.pretrained_claims({names[1]: row(0.02, 0.01)}, "pretrained")
    assert [c["holds"] for c in kept] == ["yes", "no"]
    none = v.pretrained_claims({names[1]: row(0.0, 0.0)}, "pretrained")
    assert none[0]["holds"] == "no"
    rnd = v.pretrained_claims({names[1]: row(0.02, 0.0)}, "random")
    assert all(c["holds"] == v.RANDOM_WEIGHTS for c in rnd) and [c["computed"] for c in rnd] == ["yes", "yes"]

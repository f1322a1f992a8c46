"""What the outlier tokens hold locally (Fig. 5): similarity to their neighbours, and linear probes
for the patch's position and pixels, outlier tokens against normal *background* tokens.

Probes read the model's output tokens (last block after the final LayerNorm); a token is an outlier
when its norm at the last block's output is above the run's threshold (tokens.json). As in the
paper, there is **one probe per task**, trained on a pooled set that holds as many outlier as normal
background tokens (of training images), then scored separately on held-out outlier tokens and on
held-out normal background tokens (of test images; the same count each). Background tokens are the
fair control: outliers sit on background, so both groups have the same kind of content. Each group
is reported beside its own trivial baseline, fitted on the same training tokens of that group (the
majority position; predicting the group's mean pixels), as a *normalised gain*: the share of the way
from that baseline to a perfect score that the probe covers. A group whose positions cluster, or
whose pixels are nearly constant, is then neither favoured nor penalised by construction.
"""
from __future__ import annotations

import numpy as np
import torch

from . import extract, probes, progress
from .norms import OutlierRule
from .similarity import neighbour_cosine

MIN_TRAIN_TOKENS = 20   # fewer outlier tokens than this: the probe comparison is "not measurable"
MIN_TEST_TOKENS = 10


def patch_pixels(x_uint8: torch.Tensor, patch: int) -> torch.Tensor:
    """B x N x (patch*patch) pixel values (0..1) of every patch, row-major."""
    B, C, H, W = x_uint8.shape
    p = x_uint8.float().div(255).mean(1).unfold(1, patch, patch).unfold(2, patch, patch)  # B x h x w x p x p
    return p.reshape(B, -1, patch * patch)


def rule_from(tokens_json: dict) -> OutlierRule:
    return OutlierRule(**tokens_json["rule"])


def neighbour_similarity(model, x_uint8, rule: OutlierRule, background: torch.Tensor, device="cpu") -> dict:
    """Cosine similarity to the 4 neighbours at the input (patch embedding) and at the output (last
    block), for outlier tokens on background, normal and normal-background patch tokens: outliers
    and normal tokens compared on the same kind of content (background patches are redundant
    whatever the model does). Returns arrays by group."""
    emb = extract.features(model, x_uint8, block="embed", device=device)
    out = extract.features(model, x_uint8, block=-1, device=device)
    grid = int(round(emb["patches"].shape[1] ** 0.5))
    flags = rule.flag(out["norms"])
    res = {}
    for where, f in (("input", emb), ("output", out)):
        cos = neighbour_cosine(f["patches"].reshape(len(f["patches"]), grid, grid, -1)).flatten(1)
        res[where] = {"outlier": cos[flags & background].numpy(), "normal": cos[~flags].numpy(),
                      "normal_background": cos[~flags & background].numpy()}
    res["n_outlier"] = int((flags & background).sum())
    res["n_normal"] = int((~flags).sum())
    return res


def _group_tokens(feats: dict, flags: torch.Tensor, pixels: torch.Tensor, background: torch.Tensor) -> dict:
    B, N, D = feats["patches"].shape
    pos = torch.arange(N).expand(B, N)
    groups = {"outlier": flags, "normal_background": ~flags & background}
    return {g: {"x": feats["patches"][m], "pos": pos[m], "pix": pixels[m]} for g, m in groups.items()}


def trivial_baselines(train: dict, test: dict, grid: int) -> dict:
    """What a probe that ignores the token scores on one group: the group's majority training
    position (top-1 and mean distance in patches) and the group's mean training pixels (L2)."""
    w = grid
    major = int(torch.mode(train["pos"]).values) if len(train["pos"]) else 0
    pr, pc = divmod(major, w)
    tr, tc = test["pos"] // w, test["pos"] % w
    dist = ((tr - pr).float() ** 2 + (tc - pc).float() ** 2).sqrt().mean()
    mean_pix = train["pix"].mean(0, keepdim=True)
    return {"position_top1": float((test["pos"] == major).float().mean()), "position_avg_distance": float(dist),
            "reconstruction_l2": float((test["pix"] - mean_pix).norm(dim=1).mean())}


def normalised_gain(score: float, trivial: float, best: float) -> float | None:
    """Share of the way from the trivial baseline to a perfect score that the probe covers (1 =
    perfect, 0 = no better than the baseline, < 0 = worse); None when the baseline is already perfect
    (e.g. every outlier at one position: there is no position to recover)."""
    room = best - trivial
    if abs(room) < 1e-9:
        return None
    return (score - trivial) / room


def pooled_probes(tr: dict, te: dict, grid: int, n_train: int, n_test: int, *, epochs: int, lr: float,
                  seeds: int) -> list:
    """One position probe and one pixel probe per seed, trained on n_train tokens of each group
    pooled; scored per group on n_test held-out tokens, beside that group's trivial baseline."""
    rows = []
    for s in progress.bar(range(seeds), desc="local probes (position and pixels)", unit="seeds"):
        itr = probes.balanced_indices({g: torch.arange(len(v["x"])) for g, v in tr.items()}, n_train, seed=1000 + s)
        ite = probes.balanced_indices({g: torch.arange(len(v["x"])) for g, v in te.items()}, n_test, seed=2000 + s)
        x = torch.cat([tr[g]["x"][itr[g]] for g in tr])
        pos = torch.cat([tr[g]["pos"][itr[g]] for g in tr])
        pix = torch.cat([tr[g]["pix"][itr[g]] for g in tr])
        xte = torch.cat([te[g]["x"][ite[g]] for g in te])          # one probe per task, scored per group
        p = probes.position(x, pos, xte, torch.cat([te[g]["pos"][ite[g]] for g in te]), (grid, grid),
                            epochs=epochs, lr=lr, seed=s)
        r = probes.regress(x, pix, xte, torch.cat([te[g]["pix"][ite[g]] for g in te]), epochs=epochs, lr=lr, seed=s)
        at = 0
        for g in tr:
            n = len(ite[g])
            sub_tr = {k: v[itr[g]] for k, v in tr[g].items()}
            sub_te = {k: v[ite[g]] for k, v in te[g].items()}
            pred_pos, pred_pix = p.predictions[at:at + n], r.predictions[at:at + n]
            at += n
            top1 = float((pred_pos == sub_te["pos"]).float().mean())
            dist = float((((pred_pos // grid - sub_te["pos"] // grid).float() ** 2
                           + (pred_pos % grid - sub_te["pos"] % grid).float() ** 2).sqrt()).mean())
            l2 = float((pred_pix - sub_te["pix"]).norm(dim=1).mean())
            base = trivial_baselines(sub_tr, sub_te, grid)
            rows.append({"group": g, "seed": s, "position_top1": top1, "position_avg_distance": dist,
                         "reconstruction_l2": l2, **{f"trivial_{k}": v for k, v in base.items()},
                         "position_gain": normalised_gain(top1, base["position_top1"], best=1.0),
                         "reconstruction_gain": normalised_gain(l2, base["reconstruction_l2"], best=0.0)})
    return rows


def local_probes(model, train_x, test_x, rule: OutlierRule, patch: int, train_bg, test_bg, *,
                 epochs: int, lr: float, seeds: int, cap: int = 20000, device="cpu") -> dict:
    """Pooled position and pixel probes (module docstring). Returns {"measurable": bool, "reason",
    "n_train", "n_test", "rows": per group and probe seed, with the trivial baselines and gains}."""
    ftr = extract.features(model, train_x, block="norm", device=device)
    fte = extract.features(model, test_x, block="norm", device=device)
    grid = int(round(ftr["patches"].shape[1] ** 0.5))
    tr = _group_tokens(ftr, rule.flag(ftr["norms"]), patch_pixels(train_x, patch), train_bg)
    te = _group_tokens(fte, rule.flag(fte["norms"]), patch_pixels(test_x, patch), test_bg)
    n_train = min(cap, *(len(g["x"]) for g in tr.values()))
    n_test = min(cap, *(len(g["x"]) for g in te.values()))
    info = {"n_train": n_train, "n_test": n_test,
            "available": {g: {"train": len(tr[g]["x"]), "test": len(te[g]["x"])} for g in tr}}
    if n_train < MIN_TRAIN_TOKENS or n_test < MIN_TEST_TOKENS:
        return {"measurable": False, **info, "rows": [],
                "reason": f"too few outlier tokens (train {len(tr['outlier']['x'])}, test {len(te['outlier']['x'])}; "
                          f"need {MIN_TRAIN_TOKENS} and {MIN_TEST_TOKENS})"}
    rows = pooled_probes(tr, te, grid, n_train, n_test, epochs=epochs, lr=lr, seeds=seeds)
    return {"measurable": True, "reason": "", **info, "rows": rows}


def chance_position(grid: int) -> dict:
    """What a probe that knows nothing scores: 1/N top-1, and the mean distance between two
    uniformly random patches of the grid."""
    r, c = np.divmod(np.arange(grid * grid), grid)
    d = np.sqrt((r[:, None] - r[None]) ** 2 + (c[:, None] - c[None]) ** 2)
    return {"position_top1": 1 / grid ** 2, "position_avg_distance": float(d.mean())}

"""What the outlier tokens hold locally (Fig. 5): similarity to their neighbours, and linear probes
for the patch's position and pixels, outlier tokens against normal ones.

Probes read the model's output tokens (last block after the final LayerNorm); a token is an outlier
when its norm at the last block's output is above the run's threshold (tokens.json). Both groups
get the same number of training tokens (as many as the smaller group has, up to `cap`), and are
scored on held-out tokens of test images; each probe is repeated over `seeds` draws.
"""
from __future__ import annotations

import numpy as np
import torch

from . import extract, probes
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
    block), for outlier, normal and normal-background patch tokens. Returns arrays by group."""
    emb = extract.features(model, x_uint8, block="embed", device=device)
    out = extract.features(model, x_uint8, block=-1, device=device)
    grid = int(round(emb["patches"].shape[1] ** 0.5))
    flags = rule.flag(out["norms"])
    res = {}
    for where, f in (("input", emb), ("output", out)):
        cos = neighbour_cosine(f["patches"].reshape(len(f["patches"]), grid, grid, -1)).flatten(1)
        res[where] = {"outlier": cos[flags].numpy(), "normal": cos[~flags].numpy(),
                      "normal_background": cos[~flags & background].numpy()}
    res["n_outlier"] = int(flags.sum())
    res["n_normal"] = int((~flags).sum())
    return res


def _group_tokens(feats: dict, flags: torch.Tensor, pixels: torch.Tensor, background: torch.Tensor) -> dict:
    B, N, D = feats["patches"].shape
    pos = torch.arange(N).expand(B, N)
    groups = {"outlier": flags, "normal": ~flags, "normal_background": ~flags & background}
    return {g: {"x": feats["patches"][m], "pos": pos[m], "pix": pixels[m]} for g, m in groups.items()}


def local_probes(model, train_x, test_x, rule: OutlierRule, patch: int, train_bg, test_bg, *,
                 epochs: int, lr: float, seeds: int, cap: int = 20000, device="cpu") -> dict:
    """Position and pixel-reconstruction probes per token group. Returns
    {"measurable": bool, "reason", "n_train", "n_test", "rows": [per group and seed metrics]}."""
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
    rows = []
    for s in range(seeds):
        itr = probes.balanced_indices({g: torch.arange(len(v["x"])) for g, v in tr.items()}, n_train, seed=1000 + s)
        ite = probes.balanced_indices({g: torch.arange(len(v["x"])) for g, v in te.items()}, n_test, seed=2000 + s)
        for g in tr:
            a, b = tr[g], te[g]
            ia, ib = itr[g], ite[g]
            pos = probes.position(a["x"][ia], a["pos"][ia], b["x"][ib], b["pos"][ib], (grid, grid),
                                  epochs=epochs, lr=lr, seed=s)
            rec = probes.regress(a["x"][ia], a["pix"][ia], b["x"][ib], b["pix"][ib], epochs=epochs, lr=lr, seed=s)
            rows.append({"group": g, "seed": s, "position_top1": pos.metric,
                         "position_avg_distance": pos.extra["avg_distance"],
                         "reconstruction_l2": rec.metric})
    return {"measurable": True, "reason": "", **info, "rows": rows}


def chance_position(grid: int) -> dict:
    """What a probe that knows nothing scores: 1/N top-1, and the mean distance between two
    uniformly random patches of the grid."""
    r, c = np.divmod(np.arange(grid * grid), grid)
    d = np.sqrt((r[:, None] - r[None]) ** 2 + (c[:, None] - c[None]) ** 2)
    return {"position_top1": 1 / grid ** 2, "position_avg_distance": float(d.mean())}

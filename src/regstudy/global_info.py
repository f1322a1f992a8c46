"""What single tokens know about the whole image (Table 1): a linear classifier of the image's class
trained on one token per image: [CLS], a random normal patch token, an outlier token (images that
have one), and each register. Tokens are the model's output (after the final LayerNorm); outliers
are flagged with the run's own threshold on the last block's norms."""
from __future__ import annotations

import torch

from . import extract, probes
from .norms import OutlierRule

MIN_IMAGES = 20   # fewer train images with an outlier than this: "not measurable"


def _pick(mask: torch.Tensor, g: torch.Generator) -> tuple:
    """For each row of B x N `mask`, one random True column (rows with none get -1)."""
    score = torch.rand(mask.shape, generator=g).masked_fill(~mask, -1.0)
    has = mask.any(1)
    return torch.where(has, score.argmax(1), torch.full_like(has, -1, dtype=torch.long)), has


def token_sets(feats: dict, rule: OutlierRule, seed: int) -> dict:
    """{token kind: (features M x D, image indices M)} for one split."""
    g = torch.Generator().manual_seed(seed)
    flags = rule.flag(feats["norms"])
    B = len(feats["cls"])
    idx = torch.arange(B)
    out = {"cls": (feats["cls"], idx)}
    j, has = _pick(~flags, g)
    out["normal patch"] = (feats["patches"][idx[has], j[has]], idx[has])
    j, has = _pick(flags, g)
    out["outlier patch"] = (feats["patches"][idx[has], j[has]], idx[has])
    for r in range(feats["registers"].shape[1]):
        out[f"register {r + 1}"] = (feats["registers"][:, r], idx)
    return out


def global_probe(model, ds: dict, rule: OutlierRule, *, epochs: int, lr: float, seeds: int, device="cpu") -> list:
    """One row per token kind: mean/sd top-1 over `seeds`, and the sample sizes."""
    ftr = extract.features(model, ds["x_train"], block="norm", device=device)
    fte = extract.features(model, ds["x_test"], block="norm", device=device)
    rows = []
    kinds = token_sets(ftr, rule, 0).keys()
    for kind in kinds:
        accs, n_tr, n_te = [], 0, 0
        for s in range(seeds):
            xtr, itr = token_sets(ftr, rule, 10 + s)[kind]
            xte, ite = token_sets(fte, rule, 20 + s)[kind]
            n_tr, n_te = len(itr), len(ite)
            if n_tr < MIN_IMAGES or n_te < MIN_IMAGES // 2:
                break
            res = probes.classify(xtr, ds["y_train"][itr], xte, ds["y_test"][ite], epochs=epochs, lr=lr,
                                  seed=s, num_classes=ds["classes"])
            accs.append(res.metric)
        m, sd = probes.mean_sd(accs)
        rows.append({"token": kind, "top1": m if accs else None, "sd": sd if accs else None,
                     "n_train": n_tr, "n_test": n_te, "seeds": len(accs),
                     "measurable": bool(accs)})
    return rows

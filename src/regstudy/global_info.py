"""What single tokens know about the whole image (Table 1): a linear classifier of the image's class
trained on one token per image: [CLS], a random normal patch token, an outlier token, and each
register. Tokens are the model's output (after the final LayerNorm); outliers are flagged with the
run's own threshold on the last block's norms.

Every token kind is scored on the **same images**: those that hold an outlier token (so the
outlier probe does not see another class mix than the others), and the class mix of those images
and the majority-class accuracy are reported beside the probes. A register model is scored on the
images chosen for its same-seed baseline (`images=`)."""
from __future__ import annotations

import torch

from . import extract, probes, progress
from .norms import OutlierRule

MIN_IMAGES = 20   # fewer train images with an outlier than this: the outlier row is "not measurable"


def _pick(mask: torch.Tensor, g: torch.Generator) -> tuple:
    """For each row of B x N `mask`, one random True column (rows with none get -1)."""
    score = torch.rand(mask.shape, generator=g).masked_fill(~mask, -1.0)
    has = mask.any(1)
    return torch.where(has, score.argmax(1), torch.full_like(has, -1, dtype=torch.long)), has


def outlier_images(flags_train: torch.Tensor, flags_test: torch.Tensor) -> tuple | None:
    """(train, test) boolean image masks of the images that hold an outlier, or None when there are
    too few of them (then every image is used and there is no outlier row)."""
    tr, te = flags_train.any(1), flags_test.any(1)
    if int(tr.sum()) < MIN_IMAGES or int(te.sum()) < MIN_IMAGES // 2:
        return None
    return tr, te


def token_sets(feats: dict, flags: torch.Tensor, images: torch.Tensor, seed: int) -> dict:
    """{token kind: features (M x D)} for the images in `images` (B bool). The outlier kind is
    present only when every chosen image holds an outlier."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.nonzero(images).flatten()
    out = {"cls": feats["cls"][idx]}
    j, has = _pick(~flags[idx], g)
    out["normal patch"] = feats["patches"][idx, j]   # every image has a normal token (outliers are rare)
    j, has = _pick(flags[idx], g)
    if bool(has.all()):
        out["outlier patch"] = feats["patches"][idx, j]
    for r in range(feats["registers"].shape[1]):
        out[f"register {r + 1}"] = feats["registers"][idx, r]
    return out


def majority(y_train: torch.Tensor, y_test: torch.Tensor, classes: int) -> dict:
    """The trivial baseline: always the most common training class; and the test class mix."""
    counts = torch.bincount(y_train, minlength=classes)
    top = int(counts.argmax())
    mix = torch.bincount(y_test, minlength=classes)
    return {"majority_class": top, "majority_acc": float((y_test == top).float().mean()),
            "class_mix": [int(c) for c in mix]}


def global_probe(model, ds: dict, rule: OutlierRule, *, images: dict | None = None, epochs: int, lr: float,
                 seeds: int, device="cpu") -> dict:
    """Probes of every token kind on the same images. `images`: the "images" entry of another
    model's result (its train/test masks and whether they are its outlier images), to probe this
    model on the same images; default: this model's outlier-bearing images, or all images when it
    has too few. Returns {"rows": per token kind mean/sd top-1, "images", "on_outlier_images",
    "n_train", "n_test", and majority()'s baseline and class mix}."""
    ftr = extract.features(model, ds["x_train"], block="norm", device=device)
    fte = extract.features(model, ds["x_test"], block="norm", device=device)
    fl_tr, fl_te = rule.flag(ftr["norms"]), rule.flag(fte["norms"])
    if images is not None:
        chosen, on_outliers = (images["train"], images["test"]), images["on_outlier_images"]
    else:
        chosen = outlier_images(fl_tr, fl_te)
        on_outliers = chosen is not None
        if chosen is None:
            chosen = (torch.ones(len(ftr["cls"]), dtype=torch.bool), torch.ones(len(fte["cls"]), dtype=torch.bool))
    ytr, yte = ds["y_train"][chosen[0]], ds["y_test"][chosen[1]]
    base = majority(ytr, yte, ds["classes"])
    kinds = list(dict.fromkeys([*token_sets(ftr, fl_tr, chosen[0], 0), *token_sets(fte, fl_te, chosen[1], 0)]))
    rows = []
    for kind in progress.bar(kinds, desc=f"global probes ({seeds} seeds each)", unit="token kinds"):
        accs = []
        for s in range(seeds):
            xtr = token_sets(ftr, fl_tr, chosen[0], 10 + s).get(kind)
            xte = token_sets(fte, fl_te, chosen[1], 20 + s).get(kind)
            if xtr is None or xte is None:
                break
            res = probes.classify(xtr, ytr, xte, yte, epochs=epochs, lr=lr, seed=s, num_classes=ds["classes"])
            accs.append(res.metric)
        m, sd = probes.mean_sd(accs)
        rows.append({"token": kind, "top1": m if accs else None, "sd": sd if accs else None,
                     "seeds": len(accs), "measurable": bool(accs)})
    return {"rows": rows, "images": {"train": chosen[0], "test": chosen[1], "on_outlier_images": on_outliers},
            "on_outlier_images": on_outliers,
            "n_train": int(chosen[0].sum()), "n_test": int(chosen[1].sum()), **base}

"""Linear probes on frozen tokens: classification (image class, patch position, patch class) and
regression (patch pixels). Features are standardised with training statistics; the probe is a single linear layer trained with AdamW and a cosine schedule, seeded."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from . import progress


@dataclass
class ProbeResult:
    metric: float              # top-1 accuracy (classification) or mean L2 error (regression)
    n_train: int
    n_test: int
    predictions: torch.Tensor  # test predictions (labels or regressed vectors)
    extra: dict


def _standardise(train: torch.Tensor, *others):
    mu = train.mean(0, keepdim=True)
    sd = train.std(0, keepdim=True).clamp_min(1e-6)
    return [(t - mu) / sd for t in (train, *others)]


def probe_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def fit_linear(x: torch.Tensor, y: torch.Tensor, out_dim: int, *, loss: str, epochs: int, lr: float,
               seed: int, weight_decay: float = 1e-4) -> torch.nn.Linear:
    """Train a linear map x -> out_dim on the probe device (GPU when there is one); returns it on
    the CPU. `loss`: "ce" (y: class indices), "mse" (y: targets), "bce" (y: 0/1 targets, one logit
    per output). Each epoch is 16 mini-batches (of 32 to 4096 examples)."""
    if len(x) == 0:
        raise ValueError("a probe needs at least one training example")
    dev = probe_device()
    g = torch.Generator().manual_seed(seed)
    lin = torch.nn.Linear(x.shape[1], out_dim)
    with torch.no_grad():
        lin.weight.normal_(0, 0.01, generator=g)
        lin.bias.zero_()
    lin = lin.to(dev)
    x, y = x.to(dev), y.to(dev)
    opt = torch.optim.AdamW(lin.parameters(), lr=lr, weight_decay=weight_decay)
    n = len(x)
    batch = min(max(n // 16, 32), 4096)
    steps = epochs * math.ceil(n / batch)
    step = 0
    for _ in progress.bar(range(epochs), desc=f"linear probe ({loss}, {n:,} examples)", unit="epochs"):
        perm = torch.randperm(n, generator=g).to(dev)
        for i in range(0, n, batch):
            idx = perm[i:i + batch]
            for pg in opt.param_groups:
                pg["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
            out = lin(x[idx])
            if loss == "ce":
                l = F.cross_entropy(out, y[idx])
            elif loss == "mse":
                l = F.mse_loss(out, y[idx])
            elif loss == "bce":
                l = F.binary_cross_entropy_with_logits(out, y[idx])
            else:
                raise ValueError(f"unknown probe loss {loss!r}")
            opt.zero_grad()
            l.backward()
            opt.step()
            step += 1
    return lin.cpu()


def classify(x_train, y_train, x_test, y_test, *, epochs: int, lr: float, seed: int,
             num_classes: int | None = None) -> ProbeResult:
    """Linear classification probe; metric = top-1 accuracy on the test set."""
    x_train, x_test = _standardise(x_train.float(), x_test.float())
    k = num_classes or int(max(y_train.max(), y_test.max())) + 1
    lin = fit_linear(x_train, y_train.long(), k, loss="ce", epochs=epochs, lr=lr, seed=seed)
    with torch.no_grad():
        pred = lin(x_test).argmax(1)
    return ProbeResult(float((pred == y_test).float().mean()), len(x_train), len(x_test), pred, {})


def regress(x_train, t_train, x_test, t_test, *, epochs: int, lr: float, seed: int) -> ProbeResult:
    """Linear regression probe; metric = mean L2 distance between predicted and true targets."""
    x_train, x_test = _standardise(x_train.float(), x_test.float())
    mu, sd = t_train.mean(0, keepdim=True), t_train.std(0, keepdim=True).clamp_min(1e-6)
    lin = fit_linear(x_train, (t_train - mu) / sd, t_train.shape[1], loss="mse", epochs=epochs, lr=lr, seed=seed)
    with torch.no_grad():
        pred = lin(x_test) * sd + mu
    err = (pred - t_test).norm(dim=1)
    return ProbeResult(float(err.mean()), len(x_train), len(x_test), pred, {"l2_median": float(err.median())})


def position(x_train, pos_train, x_test, pos_test, grid: tuple, *, epochs: int, lr: float, seed: int) -> ProbeResult:
    """Patch-position probe: predict the index of the patch (row-major on `grid`) from its token.
    metric = top-1 accuracy; extra["avg_distance"] = mean Euclidean distance in patches."""
    res = classify(x_train, pos_train, x_test, pos_test, epochs=epochs, lr=lr, seed=seed,
                   num_classes=grid[0] * grid[1])
    w = grid[1]
    pr, pc = res.predictions // w, res.predictions % w
    tr, tc = pos_test // w, pos_test % w
    res.extra["avg_distance"] = float(((pr - tr).float() ** 2 + (pc - tc).float() ** 2).sqrt().mean())
    return res


def class_iou(pred: torch.Tensor, truth: torch.Tensor, classes: int) -> dict:
    """IoU of each class present in `truth` or `pred` (labels), and their mean (mIoU)."""
    per = []
    for c in range(classes):
        p, t = pred == c, truth == c
        union = int((p | t).sum())
        per.append(int((p & t).sum()) / union if union else float("nan"))
    return {"per_class": per, "miou": float(np.nanmean(per))}


def balanced_indices(groups: dict, n: int, seed: int) -> dict:
    """Draw `n` indices from each group (a dict name -> 1-D index tensor), without replacement."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, idx in groups.items():
        if len(idx) < n:
            raise ValueError(f"group {name!r} has {len(idx)} items, fewer than the {n} asked for")
        out[name] = idx[torch.randperm(len(idx), generator=g)[:n]]
    return out


def mean_sd(values) -> tuple:
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    if len(v) == 0:
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0

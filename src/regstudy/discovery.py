"""LOST applied to data sets: the offline scenes (with exact boxes) and VOC/COCO when present."""
from __future__ import annotations

import torch

from . import detection_data, lost, progress, runs
from .norms import OutlierRule


def on_scenes(model, ev: runs.EvalSet, rule: OutlierRule, last_norms: torch.Tensor, *, k: int, feature: str,
              bias: float, device="cpu") -> dict:
    """CorLoc on scenes, plus where the LOST seed lands: on an outlier token, inside the object's box.
    "degree" (B x N): each patch's degree in LOST's similarity graph, for drawing (lost.lost)."""
    out = lost.discover(model, ev.x, k=k, feature=feature, bias=bias, device=device)
    gts = [b[None] for b in ev.boxes]
    hits = lost.corloc_hits(out["boxes"], gts)
    seed = out["seed"]
    idx = torch.arange(len(seed))
    flags = rule.flag(last_norms)
    on_object = ~ev.background
    return {"corloc": float(hits.float().mean()), "hits": hits, "boxes": out["boxes"], "seed": seed,
            "grid": out["grid"], "seed_on_outlier": float(flags[idx, seed].float().mean()),
            "seed_on_object": float(on_object[idx, seed].float().mean()), "n": len(seed),
            "outlier_frac": float(flags.float().mean()), "degree": out["result"].degree}


def on_benchmark(model, items: list, *, size: int, k: int, feature: str, bias: float, device="cpu") -> dict:
    """CorLoc over [(image, boxes)] pairs (VOC / COCO20k); images are made grey, resized so that the
    longer side is `size`, and padded to the patch size; boxes are scaled alike."""
    preds, gts = [], []
    for image, boxes in progress.bar(items, desc=f"LOST on {len(items):,} images", unit="images"):
        x, s = detection_data.to_model_input(image, size)
        res = lost.discover(model, x, k=k, feature=feature, bias=bias, device=device)
        preds.append(res["boxes"][0])
        gts.append(torch.as_tensor(boxes).float() * s)
    if not preds:
        raise ValueError("no images to run LOST on")
    return {"corloc": lost.corloc(torch.stack(preds), gts), "n": len(preds)}

"""Attention of [CLS] and of the registers to the patches, last block (Figs. 1, 2, 8, 9), and two
numbers read off the maps: where [CLS] looks (background share, outlier share), and how much
different registers look at the same places (mean pairwise overlap)."""
from __future__ import annotations

import itertools

import torch

from . import data, model as vit


@torch.no_grad()
def maps(model, x_uint8: torch.Tensor, block: int = -1, batch: int = 256, device="cpu") -> dict:
    """{"cls": B x heads x h x w (None without a class token), "registers": B x R x heads x h x w}
    attention probabilities."""
    model = model.to(device).eval()
    parts = [vit.prefix_attention_maps(model, data.normalize_for(model, x_uint8[i:i + batch].to(device)), block)
             for i in range(0, len(x_uint8), batch)]
    return {k: None if parts[0][k] is None else torch.cat([p[k].cpu() for p in parts]) for k in ("cls", "registers")}


def normalise(m: torch.Tensor) -> torch.Tensor:
    """Maps (... x h x w) rescaled to sum to 1 over the patches."""
    return m / m.flatten(-2).sum(-1)[..., None, None].clamp_min(1e-12)


def mass_on(cls_maps: torch.Tensor, where: torch.Tensor) -> float:
    """Mean share of [CLS]'s patch attention (head mean, renormalised over patches) that falls on
    the patches marked in `where` (B x N)."""
    m = normalise(cls_maps.mean(1)).flatten(1)
    return float((m * where.float()).sum(1).mean())


def per_token_mass(cls_maps: torch.Tensor, where: torch.Tensor) -> float | None:
    """Mean share of [CLS]'s patch attention (head mean, renormalised over patches) that one token
    marked in `where` (B x N) receives, over the images that have such a token; None if none has."""
    m = normalise(cls_maps.mean(1)).flatten(1)
    w = where.float()
    n = w.sum(1)
    keep = n > 0
    if not keep.any():
        return None
    return float(((m * w).sum(1)[keep] / n[keep]).mean())


def overlap(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Histogram intersection of two normalised maps (... x h x w): 1 = same map, 0 = disjoint."""
    return torch.minimum(normalise(a), normalise(b)).flatten(-2).sum(-1)


def register_overlap(reg_maps: torch.Tensor, cls_maps: torch.Tensor | None = None, seed: int = 0) -> dict:
    """Overlaps of the registers' head-mean maps (B x R x heads x h x w): pairwise overlap of two
    registers on the same image (per pair, their mean and the closest pair), and its measured baselines: one register's map
    on two different images ("across_images"), two random maps of the same grid ("random"), and each
    register against [CLS] ("with_cls": the mean over registers, "max_with_cls": the closest register; when
    `cls_maps` B x heads x h x w are given)."""
    m = reg_maps.mean(2)                       # B x R x h x w
    R = m.shape[1]
    if R < 2:
        return {"mean_pairwise": None, "max_pairwise": None, "pairs": {}, "across_images": None, "random": None,
                "with_cls": None, "max_with_cls": None}
    pairs = {f"{i + 1}-{j + 1}": float(overlap(m[:, i], m[:, j]).mean()) for i, j in itertools.combinations(range(R), 2)}
    across = float(overlap(m[:-1], m[1:]).mean()) if len(m) > 1 else None
    g = torch.Generator().manual_seed(seed)
    rnd = torch.rand((2, *m.shape[-2:], 256), generator=g).permute(3, 0, 1, 2)   # 256 pairs of random maps
    per_reg_cls = overlap(m, cls_maps.mean(1)[:, None]).mean(0) if cls_maps is not None else None   # R
    return {"mean_pairwise": sum(pairs.values()) / len(pairs), "max_pairwise": max(pairs.values()), "pairs": pairs,
            "across_images": across, "random": float(overlap(rnd[:, 0], rnd[:, 1]).mean()),
            "with_cls": float(per_reg_cls.mean()) if per_reg_cls is not None else None,
            "max_with_cls": float(per_reg_cls.max()) if per_reg_cls is not None else None}

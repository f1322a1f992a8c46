"""Cosine similarity of each patch token to its 4 neighbours (Fig. 5a)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def neighbour_cosine(patch_map: torch.Tensor) -> torch.Tensor:
    """Mean cosine similarity of each token to its up/down/left/right neighbours that exist.
    `patch_map`: B x h x w x D -> B x h x w."""
    x = F.normalize(patch_map.float(), dim=-1)
    total = torch.zeros(x.shape[:3])
    count = torch.zeros(x.shape[:3])
    vert = (x[:, 1:] * x[:, :-1]).sum(-1)     # B x (h-1) x w: token (r, c) with (r+1, c)
    horiz = (x[:, :, 1:] * x[:, :, :-1]).sum(-1)
    total[:, 1:] += vert
    total[:, :-1] += vert
    count[:, 1:] += 1
    count[:, :-1] += 1
    total[:, :, 1:] += horiz
    total[:, :, :-1] += horiz
    count[:, :, 1:] += 1
    count[:, :, :-1] += 1
    return total / count.clamp_min(1)

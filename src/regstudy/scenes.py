"""Offline object-discovery scenes: a Fashion-MNIST item pasted at a random place and scale on a
larger canvas covered with distractor texture. The item's box is exact (tight box of its ink).

Everything is batched on the tensors' device (one `grid_sample` per batch), so the same function
makes the fixed evaluation scenes and the fresh training scenes of every step.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .config import SceneConfig


def compose(items: torch.Tensor, cfg: SceneConfig, generator: torch.Generator) -> tuple:
    """Paste uint8 `items` (B x 1 x h x w) onto textured canvases.

    Returns (scenes uint8 B x 1 x C x C, boxes float B x 4 as x0, y0, x1, y1 in pixels with
    exclusive ends)."""
    B, _, h, w = items.shape
    C, dev = cfg.canvas, items.device
    size = torch.randint(cfg.scale_min, cfg.scale_max + 1, (B,), generator=generator, device=dev).float()
    u = torch.rand(B, 2, generator=generator, device=dev)
    tx = torch.floor(u[:, 0] * (C - size + 1))
    ty = torch.floor(u[:, 1] * (C - size + 1))
    pix = torch.arange(C, device=dev).float() + 0.5
    gx = ((pix[None] - tx[:, None]) / size[:, None]) * 2 - 1          # B x C, item coords in [-1, 1]
    gy = ((pix[None] - ty[:, None]) / size[:, None]) * 2 - 1
    grid = torch.stack([gx[:, None, :].expand(B, C, C), gy[:, :, None].expand(B, C, C)], -1)
    rendered = F.grid_sample(items.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    rendered = rendered.round().clamp(0, 255)
    ink = rendered[:, 0] >= 1
    rows, cols = ink.any(2), ink.any(1)
    ar = torch.arange(C, device=dev)
    big = torch.full_like(ar, C)
    y0 = torch.where(rows, ar, big).min(1).values
    y1 = torch.where(rows, ar, -1).max(1).values + 1
    x0 = torch.where(cols, ar, big).min(1).values
    x1 = torch.where(cols, ar, -1).max(1).values + 1
    boxes = torch.stack([x0, y0, x1, y1], 1).float()
    canvas = texture(B, C, cfg.texture, generator, dev)
    scenes = torch.maximum(canvas, rendered).to(torch.uint8)
    return scenes, boxes


def texture(B: int, C: int, amplitude: float, generator: torch.Generator, device) -> torch.Tensor:
    """Distractor texture, 0..255*amplitude: low-frequency blotches plus random oriented stripes."""
    if amplitude == 0:
        return torch.zeros(B, 1, C, C, device=device)
    k = max(C // 8, 2)
    blot = torch.rand(B, 1, k, k, generator=generator, device=device)
    blot = F.interpolate(blot, size=(C, C), mode="bilinear", align_corners=False)
    freq = 0.08 + 0.25 * torch.rand(B, 1, 1, 1, generator=generator, device=device)
    ang = torch.rand(B, 1, 1, 1, generator=generator, device=device) * torch.pi
    phase = torch.rand(B, 1, 1, 1, generator=generator, device=device) * 2 * torch.pi
    yy, xx = torch.meshgrid(torch.arange(C, device=device).float(), torch.arange(C, device=device).float(), indexing="ij")
    stripes = 0.5 + 0.5 * torch.sin(2 * torch.pi * freq * (xx * torch.cos(ang) + yy * torch.sin(ang)) + phase)
    return (255.0 * amplitude * (0.6 * blot + 0.4 * stripes)).round()


def fixed(items, labels, cfg: SceneConfig, n: int, seed: int, batch: int = 1024) -> dict:
    """`n` deterministic scenes from the first `n` of `items` (numpy or tensor uint8 N x h x w),
    made on the CPU so that every machine gets the same ones."""
    items = torch.as_tensor(items[:n])
    if items.ndim == 3:
        items = items[:, None]
    if len(items) < n:
        raise ValueError(f"asked for {n} scenes but only {len(items)} items are available")
    g = torch.Generator().manual_seed(seed)
    out_x, out_b = [], []
    for i in range(0, n, batch):
        x, b = compose(items[i:i + batch], cfg, g)
        out_x.append(x)
        out_b.append(b)
    return {"x": torch.cat(out_x), "boxes": torch.cat(out_b), "y": torch.as_tensor(labels[:n]).long()}


def box_patch_mask(boxes: torch.Tensor, canvas: int, patch: int) -> torch.Tensor:
    """B x N boolean: patches (row-major) that overlap the box."""
    g = canvas // patch
    lo = torch.arange(g, device=boxes.device).float() * patch
    hi = lo + patch
    in_x = (hi[None] > boxes[:, 0:1]) & (lo[None] < boxes[:, 2:3])          # B x g
    in_y = (hi[None] > boxes[:, 1:2]) & (lo[None] < boxes[:, 3:4])
    return (in_y[:, :, None] & in_x[:, None, :]).flatten(1)

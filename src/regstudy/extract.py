"""Batched read-outs of a trained model over many images: token norms at every block, and frozen
features of one block, by token group. Everything returns CPU tensors."""
from __future__ import annotations

import torch

from . import data, model as vit, progress


def _cls(g) -> torch.Tensor:
    """The [CLS] tokens (B x D), or NaN for a model without a class token (SigLIP, GAP models)."""
    if g.cls is not None:
        return g.cls.float()
    return torch.full(g.patches.shape[::2], float("nan"), device=g.patches.device)


def _batches(n: int, batch: int, what: str):
    """Slices of `batch` images, with progress: on a CPU, a read-out of many images takes minutes."""
    for i in progress.bar(range(0, n, batch), desc=f"{what} of {n:,} images", unit="batches"):
        yield slice(i, min(n, i + batch))


@torch.no_grad()
def token_norms(model, x_uint8: torch.Tensor, batch: int = 512, device="cpu") -> dict:
    """L2 norms of every token at the input (patch + position embedding) and at the output of every
    block. Returns {"patch": depth x B x N, "cls": depth x B, "registers": depth x B x R,
    "embed_patch": B x N}."""
    model = model.to(device).eval()
    out = {"patch": [], "cls": [], "registers": [], "embed_patch": []}
    for s in _batches(len(x_uint8), batch, "token norms"):
        t = vit.tokens(model, data.normalize_for(model, x_uint8[s].to(device)), inputs=True)
        blocks = [t[i] for i in range(len(model.blocks))]
        out["patch"].append(torch.stack([g.patches.float().norm(dim=-1) for g in blocks]).cpu())
        out["cls"].append(torch.stack([_cls(g).norm(dim=-1) for g in blocks]).cpu())
        out["registers"].append(torch.stack([g.registers.float().norm(dim=-1) for g in blocks]).cpu())
        out["embed_patch"].append(t["embed"].patches.float().norm(dim=-1).cpu())
    return {"patch": torch.cat(out["patch"], 1), "cls": torch.cat(out["cls"], 1),
            "registers": torch.cat(out["registers"], 1), "embed_patch": torch.cat(out["embed_patch"], 0)}


@torch.no_grad()
def features(model, x_uint8: torch.Tensor, block: int | str = "norm", batch: int = 512, device="cpu") -> dict:
    """Frozen tokens of one block, by group: {"cls": B x D, "registers": B x R x D, "patches": B x N x D},
    plus "norms" (B x N): the patch-token norms at the last block's output, which decide outliers.
    `block` is a block index, ``"embed"`` (the tokens entering block 0) or ``"norm"`` (the model's
    output: the last block after the final LayerNorm, the default)."""
    model = model.to(device).eval()
    depth = len(model.blocks)
    acc = {"cls": [], "registers": [], "patches": [], "norms": []}
    for s in _batches(len(x_uint8), batch, f"features ({block})"):
        x = data.normalize_for(model, x_uint8[s].to(device))
        wanted = [depth - 1] if block in ("embed", "norm") else sorted({depth - 1, block % depth})
        t = vit.tokens(model, x, blocks=wanted, inputs=block == "embed", final_norm=block == "norm")
        g = t[block if block in ("embed", "norm") else block % depth]
        acc["cls"].append(_cls(g).cpu())
        acc["registers"].append(g.registers.float().cpu())
        acc["patches"].append(g.patches.float().cpu())
        acc["norms"].append(t[depth - 1].patches.float().norm(dim=-1).cpu())
    return {k: torch.cat(v) for k, v in acc.items()}

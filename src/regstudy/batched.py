"""Several ViTs of one architecture as one batched model.

The runs of one family (the seeds of one register count, say) differ only in their seed. Their
weights are stacked on a leading *model* axis (M), and :func:`forward` runs all M models at once:
each linear layer is one batched matrix product over the models (``baddbmm``), attention is one
``scaled_dot_product_attention`` call with the models folded into its batch axis. One kernel per
layer for all models instead of M small ones: small ViTs (ViT-S/4 has 50 tokens) are launch-bound
alone and fill a GPU together.

:func:`forward` is timm's ``VisionTransformer`` forward (the configuration :func:`model.build`
makes: class token, registers, position embedding on patches only, pre-norm blocks, LayerScale,
head on the class token) written for stacked weights; a test checks it against timm's own forward
for every configuration the study trains. The timm module stays the model of record: weights are
initialised by it, saved in its ``state_dict`` format, and read back into it for every analysis.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .config import ModelConfig

LN_EPS = 1e-6   # timm's ViT LayerNorm epsilon


def stack(models: list) -> dict:
    """{parameter name: M x ... tensor} (fresh leaf tensors that require grad) from M timm models."""
    names = [n for n, _ in models[0].named_parameters()]
    out = {}
    for n in names:
        t = torch.stack([dict(m.named_parameters())[n].detach() for m in models]).clone()
        out[n] = t.requires_grad_(True)
    return out


def state_dict_of(params: dict, m: int) -> dict:
    """The timm state_dict of model `m` (detached copies)."""
    return {n: p[m].detach().clone() for n, p in params.items()}


def _linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    """x: M x ... x in, w: M x out x in, b: M x out -> M x ... x out."""
    M = x.shape[0]
    flat = x.reshape(M, -1, x.shape[-1])
    y = torch.baddbmm(b[:, None, :], flat, w.transpose(1, 2)) if b is not None else torch.bmm(flat, w.transpose(1, 2))
    return y.reshape(*x.shape[:-1], w.shape[1])


def _layer_norm(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    shape = (x.shape[0],) + (1,) * (x.ndim - 2) + (x.shape[-1],)
    return F.layer_norm(x, x.shape[-1:], eps=LN_EPS) * w.reshape(shape) + b.reshape(shape)


def _scale(p: dict, name: str, x: torch.Tensor) -> torch.Tensor:
    """LayerScale (when the model has it)."""
    g = p.get(name)
    return x if g is None else x * g.reshape(g.shape[0], *(1,) * (x.ndim - 2), g.shape[-1])


def patch_embed(p: dict, x: torch.Tensor, patch: int) -> tuple:
    """x: M x B x C x H x W -> (M x B x N x D tokens, grid)."""
    M, B, C, H, W = x.shape
    w = p["patch_embed.proj.weight"]                                      # M x D x C x p x p
    cols = F.unfold(x.reshape(M * B, C, H, W), patch, stride=patch)        # (M B) x (C p p) x N
    grid = (H // patch, W // patch)
    cols = cols.transpose(1, 2).reshape(M, B * grid[0] * grid[1], -1)
    t = torch.baddbmm(p["patch_embed.proj.bias"][:, None, :], cols, w.reshape(M, w.shape[1], -1).transpose(1, 2))
    return t.reshape(M, B, grid[0] * grid[1], -1), grid


def tokens_in(p: dict, x: torch.Tensor, cfg: ModelConfig) -> torch.Tensor:
    """The tokens entering block 1: [cls, registers, patches + position embedding]."""
    t, grid = patch_embed(p, x, cfg.patch_size)
    M, B, N, D = t.shape
    if N != p["pos_embed"].shape[2]:
        raise ValueError(f"{N} patches but a position embedding for {p['pos_embed'].shape[2]}: train at img_size")
    t = t + p["pos_embed"]                                                 # M x 1 x N x D broadcast over B
    prefix = [p["cls_token"].expand(M, B, 1, D)]
    if "reg_token" in p:
        prefix.append(p["reg_token"].expand(M, B, -1, D))
    return torch.cat(prefix + [t], dim=2)


def block(p: dict, i: int, x: torch.Tensor, heads: int) -> torch.Tensor:
    """One pre-norm transformer block of every model: x: M x B x T x D."""
    M, B, T, D = x.shape
    pre = f"blocks.{i}."
    h = _layer_norm(x, p[pre + "norm1.weight"], p[pre + "norm1.bias"])
    qkv = _linear(h, p[pre + "attn.qkv.weight"], p[pre + "attn.qkv.bias"])
    q, k, v = qkv.reshape(M * B, T, 3, heads, D // heads).permute(2, 0, 3, 1, 4).unbind(0)
    a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(M, B, T, D)
    a = _linear(a, p[pre + "attn.proj.weight"], p[pre + "attn.proj.bias"])
    x = x + _scale(p, pre + "ls1.gamma", a)
    h = _layer_norm(x, p[pre + "norm2.weight"], p[pre + "norm2.bias"])
    h = F.gelu(_linear(h, p[pre + "mlp.fc1.weight"], p[pre + "mlp.fc1.bias"]))
    h = _linear(h, p[pre + "mlp.fc2.weight"], p[pre + "mlp.fc2.bias"])
    return x + _scale(p, pre + "ls2.gamma", h)


def forward(p: dict, x: torch.Tensor, cfg: ModelConfig) -> torch.Tensor:
    """Logits (M x B x classes) of M stacked models on their own images x (M x B x C x H x W)."""
    t = tokens_in(p, x, cfg)
    for i in range(cfg.depth):
        t = block(p, i, t, cfg.num_heads)
    t = _layer_norm(t, p["norm.weight"], p["norm.bias"])
    return _linear(t[:, :, 0], p["head.weight"], p["head.bias"])


def clip_grad_norm_(params: dict, max_norm: float) -> torch.Tensor:
    """Per-model gradient clipping, as ``torch.nn.utils.clip_grad_norm_`` does for one model:
    each model's gradients are scaled by min(1, max_norm / (its total norm + 1e-6)). Returns the M norms."""
    grads = [p.grad for p in params.values() if p.grad is not None]
    M = grads[0].shape[0]
    norms = torch.stack([g.reshape(M, -1).float().pow(2).sum(1) for g in grads]).sum(0).sqrt()
    coef = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(coef.reshape(M, *(1,) * (g.ndim - 1)).to(g.dtype))
    return norms

"""Test-time registers (Jiang et al., 2025, "Vision Transformers Don't Need Trained Registers"),
written from the paper's description, for any timm ViT whose blocks have an `mlp.act` module.

The outliers of a model trained without registers are written by a few MLP neurons. Copying those
neurons' activations into one extra token at inference moves the outliers there, with no
retraining and no weight changed:

1. :func:`outlier_flags` finds the outlier tokens at the last block with the study's outlier rule
   (`norms.fit_outlier_rule`; the relative bar on background patches when a mask is given).
2. :func:`score_neurons` scores every MLP neuron (after the activation) of every block by its mean
   absolute activation at the outlier positions (per image, then averaged over the images that have
   an outlier); :func:`select` keeps the top `top_k` over the model, among the first `max_layer` blocks.
3. :func:`attach` appends one token initialised to zero after the patches, with no position
   embedding, and at each selected neuron sets that token's activation to the value of largest
   magnitude the neuron takes over the image's tokens (each image its own), and the patch tokens'
   activations to 0 ([CLS] and trained registers untouched): hooks only. The head never
   sees the extra token (pooling over it would change an average-pooled model's output).

While attached, `model.tokens`, `prefix_attention_maps` and every read-out list the extra token
with the registers (`model.positions`), so every analysis of the study runs on the edited model.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from . import data, model as vit, norms


@dataclass(frozen=True)
class Neuron:
    block: int    # 0-based block index
    index: int    # neuron (hidden unit) of that block's MLP
    score: float  # mean |activation| at the outlier positions


def _acts(model):
    mods = []
    for i, blk in enumerate(model.blocks):
        act = getattr(getattr(blk, "mlp", None), "act", None)
        if act is None:
            raise ValueError(f"block {i} has no mlp.act module (a gated MLP?): test-time registers need the "
                             "activation of each MLP neuron")
        mods.append(act)
    return mods


@torch.no_grad()
def last_patch_norms(model, x: torch.Tensor) -> torch.Tensor:
    """B x N norms of the patch tokens at the last block (float32, on the CPU), for normalised `x`."""
    return vit.tokens(model.eval(), x, blocks=[-1])[len(model.blocks) - 1].patches.float().norm(dim=-1).cpu()


def outlier_flags(model, x: torch.Tensor, background: torch.Tensor | None = None):
    """(flags B x N, rule): the patch tokens the study's outlier rule flags at the last block, for
    normalised images `x`. `background` (B x N) sets the relative bar's reference (else all patches)."""
    pn = last_patch_norms(model, x)
    rule = norms.fit_outlier_rule(pn, None if background is None else background.cpu())
    return rule.flag(pn), rule


@torch.no_grad()
def score_neurons(model, x: torch.Tensor, flags: torch.Tensor, batch: int = 64) -> torch.Tensor:
    """depth x hidden: each MLP neuron's mean |activation| at the flagged patch positions (per image,
    then the mean over the images with at least one flagged token), `batch` images at a time. Zero
    when nothing is flagged."""
    model.eval()
    acts = _acts(model)
    flags = flags.to(x.device)
    P, N = vit.num_prefix(model), flags.shape[1]
    total, images = None, 0
    for i in range(0, len(x), batch):
        f = flags[i:i + batch]
        store = {}
        hooks = [a.register_forward_hook(lambda m, inp, o, k=k: store.__setitem__(k, o.detach()))
                 for k, a in enumerate(acts)]
        try:
            model.forward_features(x[i:i + batch])
        finally:
            for h in hooks:
                h.remove()
        has = f.any(1)
        w = f.float()[..., None]
        part = []
        for k in range(len(acts)):
            a = store[k][:, P:P + N].abs().float()                      # b x N x hidden
            per_image = (a * w).sum(1) / w.sum(1).clamp_min(1)          # b x hidden
            part.append(per_image[has].sum(0).cpu())
        part = torch.stack(part)
        total = part if total is None else total + part
        images += int(has.sum())
    return total / images if images else torch.zeros_like(total)


def select(scores: torch.Tensor, top_k: int, max_layer: int = 0) -> list:
    """The `top_k` neurons of highest score over the model, among blocks 1..max_layer (0: every block)."""
    s = scores.clone()
    if max_layer:
        s[max_layer:] = -float("inf")
    flat = s.flatten()
    idx = flat.topk(min(top_k, int(torch.isfinite(flat).sum()))).indices
    hidden = scores.shape[1]
    return [Neuron(block=int(i) // hidden, index=int(i) % hidden, score=float(flat[i])) for i in idx]


@contextlib.contextmanager
def attach(model, neurons: list):
    """Within the block, `model` has one test-time register (module docstring). Hooks only: the
    weights are untouched, and everything is restored on exit."""
    if getattr(model, vit.TEST_TIME_ATTR, 0):
        raise ValueError("the model already has a test-time register attached")
    acts = _acts(model)
    by_block = {}
    for n in neurons:
        by_block.setdefault(n.block, []).append(n.index)
    P = vit.num_prefix(model)
    pos_embed = model._pos_embed

    def with_register(x):        # after the position embedding: the extra token gets none
        x = pos_embed(x)
        return torch.cat([x, x.new_zeros(x.shape[0], 1, x.shape[2])], dim=1)

    def edit(idx):
        idx_t = torch.tensor(idx)

        def hook(module, inputs, out):
            out = out.clone()
            sel = out[..., idx_t.to(out.device)]                        # B x T x k
            pick = sel.abs().argmax(dim=1, keepdim=True)                # per image: the token of largest magnitude
            peak = sel.gather(1, pick).squeeze(1)                       # B x k, signed
            sel[:, P:-1] = 0                                            # the patches (the last token is the register)
            sel[:, -1] = peak
            out[..., idx_t.to(out.device)] = sel
            return out
        return hook

    hooks = [acts[b].register_forward_hook(edit(idx)) for b, idx in by_block.items()]
    head = model.forward_head
    model._pos_embed = with_register
    model.forward_head = lambda x, pre_logits=False: head(x[:, :-1], pre_logits=pre_logits)
    setattr(model, vit.TEST_TIME_ATTR, 1)
    try:
        yield model
    finally:
        for h in hooks:
            h.remove()
        del model.forward_head
        del model._pos_embed
        setattr(model, vit.TEST_TIME_ATTR, 0)


def find(model, x_uint8: torch.Tensor, top_k: int, max_layer: int = 0, background=None, rule=None) -> dict:
    """Steps 1-2 on uint8 images (normalised with the model's own statistics): the outliers (by `rule`,
    e.g. the run's own from tokens.json, or one fitted on these images), the neuron scores and the
    selected neurons (none when no token is flagged)."""
    x = data.normalize_for(model, x_uint8)
    if rule is None:
        flags, rule = outlier_flags(model, x, background)
    else:
        last = last_patch_norms(model, x)
        flags = rule.flag(last)
    scores = score_neurons(model, x, flags)
    return {"flags": flags, "rule": rule, "scores": scores,
            "neurons": select(scores, top_k, max_layer) if flags.any() else []}

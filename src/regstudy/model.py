"""The ViT of the study: timm's VisionTransformer, plus two helpers the analyses need.

Token order inside timm's ViT is ``[cls, reg_1 .. reg_R, patch_1 .. patch_N]`` (patches row-major).
* :func:`tokens` runs the model and returns, for the blocks asked for, the tokens split into named
  groups (:class:`TokenGroups`: ``cls``, ``registers``, ``patches``).
* :func:`attention` recomputes a block's attention probabilities from its input, so training keeps
  timm's fused attention (``F.scaled_dot_product_attention``) untouched.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer

from . import data
from .config import MAX_REGISTERS, ModelConfig

TEST_TIME_ATTR = "test_time_registers"   # set by regstudy.test_time_registers: tokens appended after the patches


def build(cfg: ModelConfig) -> VisionTransformer:
    """timm ViT with a class token, `cfg.registers` register tokens (no position embedding for the
    prefix tokens, as in DINOv2/DeiT-III) and LayerScale (`cfg.layerscale`, 0 = off)."""
    if not 0 <= cfg.registers <= MAX_REGISTERS:
        raise ValueError(f"registers={cfg.registers} is outside 0..{MAX_REGISTERS}")
    m = VisionTransformer(
        img_size=cfg.img_size, patch_size=cfg.patch_size, in_chans=cfg.in_chans,
        num_classes=cfg.num_classes, embed_dim=cfg.embed_dim, depth=cfg.depth,
        num_heads=cfg.num_heads, mlp_ratio=cfg.mlp_ratio, qkv_bias=True,
        init_values=cfg.layerscale or None, class_token=True, reg_tokens=cfg.registers,
        no_embed_class=True, global_pool="token", dynamic_img_size=True,
    )
    # the input config timm's resolve_data_config reads (data.normalize_for): Fashion-MNIST's statistics,
    # not the ImageNet defaults timm would assume for a model without one
    m.pretrained_cfg = {"mean": (data.MEAN,) * cfg.in_chans, "std": (data.STD,) * cfg.in_chans,
                        "input_size": (cfg.in_chans, cfg.img_size, cfg.img_size), "interpolation": "bilinear",
                        "crop_pct": 1.0, "crop_mode": "center", "num_classes": cfg.num_classes}
    return m


def num_prefix(model: VisionTransformer) -> int:
    return model.num_prefix_tokens


def num_registers(model: VisionTransformer) -> int:
    return model.num_reg_tokens


def has_cls(model: VisionTransformer) -> bool:
    return getattr(model, "cls_token", None) is not None


def positions(model: VisionTransformer, n_patches: int) -> dict:
    """Where each token group sits in the sequence, read from the model: {"cls": [0] or [],
    "registers": trained registers after [CLS], then any test-time registers appended after the
    patches, "patches": range}. timm orders the prefix [CLS] first, then the registers
    (`num_prefix_tokens` = has_class_token + num_reg_tokens); models without [CLS] (SigLIP,
    `class_token=False`) or with registers only (`..._reg4_gap_...`) follow the same rule."""
    C, P = int(has_cls(model)), num_prefix(model)
    if P != C + num_registers(model):
        raise ValueError(f"num_prefix_tokens={P} is not [CLS] ({C}) + num_reg_tokens ({num_registers(model)}): "
                         "a token layout this study does not know")
    E = getattr(model, TEST_TIME_ATTR, 0)
    return {"cls": list(range(C)), "registers": list(range(C, P)) + list(range(P + n_patches, P + n_patches + E)),
            "patches": list(range(P, P + n_patches)), "total": P + n_patches + E}


@torch.no_grad()
def token_layout(model: VisionTransformer) -> dict:
    """How the prefix tokens ([CLS], registers) enter and leave `model`, read from the timm model
    itself: the sequence layout, which tokens get a position embedding (`model.pos_embed` holds one
    row per patch when `no_embed_class`; measured too: a zero patch input through `_pos_embed` leaves
    the prefix tokens equal to their learned vectors) and which tokens the head reads (measured:
    changing the other tokens of a random output leaves the logits unchanged). `groups`: one row per
    token group, for a table."""
    C = 1 if model.cls_token is not None else 0
    R, P = model.num_reg_tokens, model.num_prefix_tokens
    h, w = model.patch_embed.grid_size
    N, D = h * w, model.embed_dim
    p0 = next(model.parameters())
    g = torch.Generator(device="cpu").manual_seed(0)
    rand = lambda *shape: torch.randn(*shape, generator=g).to(p0)
    was_training = model.training
    model.eval()   # no dropout in the measurements
    try:
        zeros = torch.zeros(1, h, w, D) if model.dynamic_img_size else torch.zeros(1, N, D)
        x = model._pos_embed(zeros.to(p0))
        learned = [t for t in (model.cls_token, model.reg_token) if t is not None]
        prefix_pos = P > 0 and not torch.equal(x[:, :P], torch.cat(learned, 1))
        patch_pos = model.pos_embed is not None and bool(x[:, P:].abs().sum() > 0)
        out = rand(2, P + N, D)
        logits = model.forward_head(out)

        def reads(lo, hi):   # do the logits change when tokens lo..hi-1 change?
            other = out.clone()
            other[:, lo:hi] += rand(2, hi - lo, D)
            return hi > lo and not torch.allclose(model.forward_head(other), logits)

        read = {"[CLS]": reads(0, C), "registers": reads(C, P), "patches": reads(P, P + N)}
    finally:
        model.train(was_training)
    span = lambda lo, hi: "—" if hi <= lo else (str(lo) if hi == lo + 1 else f"{lo}-{hi - 1}")
    yes = lambda b: "yes" if b else "no"
    groups = [{"group": "[CLS]", "positions": span(0, C), "tokens": C, "position embedding": yes(prefix_pos and C),
               "read by the head": yes(read["[CLS]"])},
              {"group": "registers", "positions": span(C, P), "tokens": R, "position embedding": yes(prefix_pos and R),
               "read by the head": yes(read["registers"])},
              {"group": f"patches ({h}x{w}, row-major)", "positions": span(P, P + N), "tokens": N,
               "position embedding": yes(patch_pos), "read by the head": yes(read["patches"])}]
    parts = (["[CLS]"] if C else []) + ([f"{R} register{'s' if R > 1 else ''}"] if R else []) + [f"{N} patches"]
    return {"sequence": " + ".join(parts) + f" = {P + N} tokens", "cls": C, "registers": R, "patches": N,
            "grid": (h, w), "num_prefix_tokens": P, "no_embed_class": bool(model.no_embed_class),
            "reg_token_shape": tuple(model.reg_token.shape) if model.reg_token is not None else None,
            "pos_embed_shape": tuple(model.pos_embed.shape) if model.pos_embed is not None else None,
            "prefix_position_embedding": bool(prefix_pos), "global_pool": model.global_pool,
            "head_reads": [k for k, v in read.items() if v], "groups": groups}


@dataclass
class TokenGroups:
    """Tokens of one block, by group. cls: B x D (None without a class token); registers: B x R x D
    (trained, then test-time ones); patches: B x N x D."""
    cls: torch.Tensor
    registers: torch.Tensor
    patches: torch.Tensor
    grid: tuple  # (h, w) of the patch grid

    @property
    def patch_map(self) -> torch.Tensor:
        """Patches as B x h x w x D."""
        B, N, D = self.patches.shape
        return self.patches.reshape(B, *self.grid, D)


def split_tokens(model: VisionTransformer, x: torch.Tensor, grid: tuple) -> TokenGroups:
    """Split a B x T x D token tensor into its named groups (`positions`); `cls` is None for a model
    without a class token."""
    pos = positions(model, grid[0] * grid[1])
    if x.shape[1] != pos["total"]:
        raise ValueError(f"expected {len(pos['cls'])} [CLS] + {len(pos['registers'])} registers + "
                         f"{grid[0]}*{grid[1]} patches = {pos['total']} tokens, got {x.shape[1]}")
    P, N = num_prefix(model), grid[0] * grid[1]
    regs = torch.cat([x[:, len(pos["cls"]):P], x[:, P + N:]], dim=1)
    return TokenGroups(cls=x[:, 0] if pos["cls"] else None, registers=regs, patches=x[:, P:P + N], grid=tuple(grid))


def _embed(model: VisionTransformer, images: torch.Tensor):
    x = model.patch_embed(images)            # B x h x w x D (dynamic_img_size)
    grid = tuple(x.shape[1:3]) if x.ndim == 4 else model.patch_embed.grid_size
    x = model._pos_embed(x)
    x = model.patch_drop(x)
    x = model.norm_pre(x)
    return x, grid


def tokens(model: VisionTransformer, images: torch.Tensor, blocks=None, *, inputs: bool = False,
           final_norm: bool = False) -> dict:
    """Run `model` on normalised `images` (B x C x H x W, sides multiples of the patch size) and
    return {block index: TokenGroups} for the output of each block in `blocks` (default: all;
    negative indices count from the end). With `inputs=True` the key ``"embed"`` holds the tokens
    entering block 0 (patch embedding + position embedding). With `final_norm=True` the key
    ``"norm"`` holds the last block's output after the final LayerNorm (what the head sees)."""
    depth = len(model.blocks)
    wanted = range(depth) if blocks is None else [b % depth for b in ([blocks] if isinstance(blocks, int) else blocks)]
    wanted = set(wanted)
    x, grid = _embed(model, images)
    out = {}
    if inputs:
        out["embed"] = split_tokens(model, x, grid)
    last = max(wanted) if wanted else -1
    if final_norm:
        last = depth - 1
    for i, blk in enumerate(model.blocks):
        if i > last:
            break
        x = blk(x)
        if i in wanted:
            out[i] = split_tokens(model, x, grid)
    if final_norm:
        out["norm"] = split_tokens(model, model.norm(x), grid)
    return out


def block_input(model: VisionTransformer, images: torch.Tensor, block: int):
    """The tokens entering block `block` (B x T x D) and the patch grid."""
    block = block % len(model.blocks)
    x, grid = _embed(model, images)
    for blk in model.blocks[:block]:
        x = blk(x)
    return x, grid


def qkv(attn_module, x: torch.Tensor):
    """q, k, v (each B x heads x T x head_dim) of a timm Attention module for its input `x`."""
    B, T, _ = x.shape
    q, k, v = attn_module.qkv(x).reshape(B, T, 3, attn_module.num_heads, attn_module.head_dim).permute(2, 0, 3, 1, 4)
    return attn_module.q_norm(q), attn_module.k_norm(k), v


def attention_from_input(attn_module, x_normed: torch.Tensor) -> torch.Tensor:
    """Softmax attention probabilities (B x heads x T x T) of a timm Attention module, recomputed
    explicitly from its (already LayerNorm-ed) input."""
    q, k, _ = qkv(attn_module, x_normed)
    return ((q * attn_module.scale) @ k.transpose(-2, -1)).float().softmax(dim=-1)


def attention(model: VisionTransformer, images: torch.Tensor, block: int = -1) -> tuple:
    """(probs, grid): attention probabilities B x heads x T x T of block `block` (default: last),
    tokens ordered [cls, registers, patches]."""
    block = block % len(model.blocks)
    x, grid = block_input(model, images, block)
    blk = model.blocks[block]
    return attention_from_input(blk.attn, blk.norm1(x)), grid


def prefix_attention_maps(model: VisionTransformer, images: torch.Tensor, block: int = -1) -> dict:
    """Attention of [CLS] and of each register to the patches, as maps.

    Returns {"cls": B x heads x h x w (None without a class token), "registers": B x R x heads x h x w}
    (token positions from `positions`). Rows are the attention probabilities over *all* tokens
    restricted to the patch columns (they sum to <= 1; the rest went to the other tokens)."""
    probs, (h, w) = attention(model, images, block)
    pos = positions(model, h * w)
    B, H = probs.shape[:2]
    cols = probs[:, :, :, pos["patches"][0]:pos["patches"][-1] + 1]      # B x heads x T x N
    cls_map = cols[:, :, pos["cls"][0]].reshape(B, H, h, w) if pos["cls"] else None
    R = len(pos["registers"])
    reg_map = cols[:, :, pos["registers"]].permute(0, 2, 1, 3).reshape(B, R, H, h, w)
    return {"cls": cls_map, "registers": reg_map}


def block_features(model: VisionTransformer, images: torch.Tensor, block: int = -1, kind: str = "key"):
    """Per-token features of block `block` used by LOST: ``key`` / ``value`` (the attention's k or v,
    heads concatenated) or ``output`` (the block's output). Returns (TokenGroups, grid)."""
    block = block % len(model.blocks)
    x, grid = block_input(model, images, block)
    blk = model.blocks[block]
    if kind == "output":
        feats = blk(x)
    elif kind in ("key", "value"):
        _, k, v = qkv(blk.attn, blk.norm1(x))
        t = k if kind == "key" else v
        feats = t.permute(0, 2, 1, 3).flatten(2)           # B x T x (heads * head_dim)
    else:
        raise ValueError(f"feature kind must be key, value or output, not {kind!r}")
    return split_tokens(model, feats, grid), grid


def pad_to_patch(images: torch.Tensor, patch: int, value: float = 0.0) -> torch.Tensor:
    """Pad B x C x H x W on the right/bottom so that H and W are multiples of `patch`."""
    H, W = images.shape[-2:]
    ph, pw = (-H) % patch, (-W) % patch
    if ph or pw:
        images = F.pad(images, (0, pw, 0, ph), value=value)
    return images


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def train_flops_per_image(cfg: ModelConfig) -> float:
    """Model FLOPs of one training step per image (forward + backward = 3 x forward), counting
    multiply-adds as 2: patch embedding, per block qkv/proj/MLP matmuls (2 * T * d * (4d + 2 r d))
    and attention (4 * T^2 * d), and the head."""
    d, T = cfg.embed_dim, cfg.num_patches + 1 + cfg.registers
    hidden = int(cfg.embed_dim * cfg.mlp_ratio)
    per_block = 2 * T * (4 * d * d + 2 * d * hidden) + 4 * T * T * d
    embed = 2 * cfg.num_patches * (cfg.patch_size ** 2 * cfg.in_chans) * d
    head = 2 * d * cfg.num_classes
    return 3.0 * (embed + cfg.depth * per_block + head)

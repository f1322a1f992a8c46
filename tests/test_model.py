import pytest
import torch

from regstudy import model as vit
from regstudy.config import ModelConfig


def tiny(registers, **kw):
    cfg = ModelConfig(embed_dim=8, depth=2, num_heads=2, patch_size=4, img_size=8, registers=registers, **kw)
    torch.manual_seed(0)
    return vit.build(cfg).eval(), cfg


@pytest.mark.parametrize("registers", [0, 1, 2, 4, 8, 16])
def test_token_groups_respect_the_prefix_count(registers):
    m, cfg = tiny(registers)
    x = torch.randn(3, 1, 8, 8)
    t = vit.tokens(m, x, final_norm=True, inputs=True)
    for k in ("embed", 0, 1, "norm"):
        g = t[k]
        assert g.cls.shape == (3, 8) and g.registers.shape == (3, registers, 8) and g.patches.shape == (3, 4, 8)
    full = m.forward_features(x)
    assert torch.allclose(t["norm"].cls, full[:, 0], atol=1e-6)
    assert torch.allclose(t["norm"].registers, full[:, 1:1 + registers], atol=1e-6)
    assert torch.allclose(t["norm"].patches, full[:, 1 + registers:], atol=1e-6)
    maps = vit.prefix_attention_maps(m, x)
    assert maps["cls"].shape == (3, 2, 2, 2) and maps["registers"].shape == (3, registers, 2, 2, 2)


def reference_attention(m, x, block):
    """Attention of `block`, computed by hand from the weights (no timm code path)."""
    h = m.patch_embed.proj(x).flatten(2).transpose(1, 2) + m.pos_embed       # no_embed_class: pos only on patches
    prefix = [m.cls_token.expand(len(x), -1, -1)]
    if m.reg_token is not None:
        prefix.append(m.reg_token.expand(len(x), -1, -1))
    h = torch.cat(prefix + [h], 1)
    for b in m.blocks[:block]:
        h = b(h)
    blk = m.blocks[block]
    z = torch.nn.functional.layer_norm(h, (h.shape[-1],), blk.norm1.weight, blk.norm1.bias, blk.norm1.eps)
    W, bias = blk.attn.qkv.weight, blk.attn.qkv.bias
    D, H = h.shape[-1], blk.attn.num_heads
    q, k = z @ W[:D].T + bias[:D], z @ W[D:2 * D].T + bias[D:2 * D]
    out = []
    for head in range(H):
        sl = slice(head * D // H, (head + 1) * D // H)
        s = q[..., sl] @ k[..., sl].transpose(1, 2) / (D // H) ** 0.5
        out.append(torch.softmax(s, -1))
    return torch.stack(out, 1)


@pytest.mark.parametrize("registers", [0, 2, 3])
def test_attention_maps_equal_a_hand_computed_reference(registers):
    m, cfg = tiny(registers)
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        ref = reference_attention(m, x, 1)
        probs, grid = vit.attention(m, x, block=1)
        maps = vit.prefix_attention_maps(m, x, block=1)
    assert grid == (2, 2)
    assert torch.allclose(probs, ref, atol=1e-5)
    P = 1 + registers
    assert torch.allclose(maps["cls"], ref[:, :, 0, P:].reshape(2, 2, 2, 2), atol=1e-5)
    for r in range(registers):
        assert torch.allclose(maps["registers"][:, r], ref[:, :, 1 + r, P:].reshape(2, 2, 2, 2), atol=1e-5)


def test_recomputed_attention_reproduces_the_fused_block():
    """attn @ v through the block's projection equals the fused (SDPA) attention branch."""
    m, _ = tiny(4)
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        h, _ = vit.block_input(m, x, 1)
        blk = m.blocks[1]
        z = blk.norm1(h)
        probs = vit.attention_from_input(blk.attn, z)
        _, _, v = vit.qkv(blk.attn, z)
        manual = blk.attn.proj((probs @ v).transpose(1, 2).reshape(2, h.shape[1], -1))
        assert blk.attn.fused_attn is True          # the model trains with the fused (SDPA) kernel ...
        assert torch.allclose(manual, blk.attn(z), atol=1e-5)   # ... and the recomputation reproduces it


def test_layerscale_and_registers_are_wired():
    m, _ = tiny(4, layerscale=1e-4)
    assert m.num_prefix_tokens == 5 and m.reg_token.shape == (1, 4, 8)
    assert torch.allclose(m.blocks[0].ls1.gamma, torch.full((8,), 1e-4))
    m0, _ = tiny(0, layerscale=0.0)
    assert isinstance(m0.blocks[0].ls1, torch.nn.Identity) and m0.reg_token is None


def test_features_of_keys_values_and_padding():
    m, _ = tiny(2)
    x = torch.randn(1, 1, 7, 6)
    xp = vit.pad_to_patch(x, 4)
    assert xp.shape[-2:] == (8, 8)
    for kind in ("key", "value", "output"):
        g, grid = vit.block_features(m, xp, -1, kind)
        assert g.patches.shape == (1, 4, 8) and grid == (2, 2)
    m2, _ = tiny(0)
    g, grid = vit.block_features(m2, torch.randn(1, 1, 12, 16), -1, "key")   # another input size
    assert grid == (3, 4) and g.patches.shape == (1, 12, 8)


def test_train_flops_count_matches_a_hand_count():
    cfg = ModelConfig(embed_dim=384, depth=12, num_heads=6, patch_size=4, img_size=28)
    T, d = 50, 384
    fwd = 2 * 49 * 16 * d + 12 * (2 * T * 12 * d * d + 4 * T * T * d) + 2 * d * 10
    assert vit.train_flops_per_image(cfg) == pytest.approx(3 * fwd)


def layout_of(**kw):
    from timm.models.vision_transformer import VisionTransformer
    torch.manual_seed(0)
    m = VisionTransformer(img_size=8, patch_size=4, in_chans=1, num_classes=3, embed_dim=8, depth=1, num_heads=2,
                          dynamic_img_size=True, **kw)
    return vit.token_layout(m.train()), m


def test_token_layout_of_the_study_models():
    """[CLS], then the registers, then the patches; only the patches get a position embedding; the
    head reads [CLS] alone (the registers are dropped at the output)."""
    for registers in (4, 0):
        m, _ = tiny(registers)
        lay = vit.token_layout(m)
        assert lay["sequence"] == ("[CLS] + 4 registers + 4 patches = 9 tokens" if registers else
                                   "[CLS] + 4 patches = 5 tokens")
        assert (lay["cls"], lay["registers"], lay["patches"]) == (1, registers, 4)
        assert lay["num_prefix_tokens"] == 1 + registers
        assert lay["reg_token_shape"] == ((1, registers, 8) if registers else None)
        assert lay["pos_embed_shape"] == (1, 4, 8) and lay["no_embed_class"] and not lay["prefix_position_embedding"]
        assert lay["head_reads"] == ["[CLS]"]
        rows = {g["group"].split(" ")[0]: g for g in lay["groups"]}
        assert rows["[CLS]"]["positions"] == "0" and rows["[CLS]"]["position embedding"] == "no"
        assert rows["registers"]["positions"] == ("1-4" if registers else "—")
        assert rows["registers"]["tokens"] == registers
        assert rows["registers"]["position embedding"] == rows["registers"]["read by the head"] == "no"
        assert rows["patches"]["positions"] == f"{1 + registers}-{4 + registers}"
        assert rows["patches"]["position embedding"] == "yes" and rows["patches"]["read by the head"] == "no"


def test_token_layout_is_measured_not_assumed():
    # registers only (no [CLS]): the head averages the patches, still not the registers
    lay, m = layout_of(class_token=False, reg_tokens=2, global_pool="avg", no_embed_class=True)
    assert lay["sequence"] == "2 registers + 4 patches = 6 tokens" and lay["num_prefix_tokens"] == 2
    assert lay["head_reads"] == ["patches"] and m.training   # the model's mode is given back
    # timm's original layout: the position embedding covers the prefix tokens too
    lay, _ = layout_of(class_token=True, reg_tokens=2, global_pool="token", no_embed_class=False)
    assert lay["prefix_position_embedding"] and lay["pos_embed_shape"] == (1, 4 + 3, 8)
    assert [g["position embedding"] for g in lay["groups"]] == ["yes", "yes", "yes"]
    # neither [CLS] nor registers
    lay, _ = layout_of(class_token=False, reg_tokens=0, global_pool="avg")
    assert lay["sequence"] == "4 patches = 4 tokens" and lay["num_prefix_tokens"] == 0
    assert not lay["prefix_position_embedding"] and lay["head_reads"] == ["patches"]

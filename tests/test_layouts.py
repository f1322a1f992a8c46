"""Any timm ViT read correctly: every token layout ([CLS] and registers, each present or not), a
non-square image, and the input normalisation taken from the model's own data config. Stock timm
architectures are built with random weights (pretrained=False): no download."""
from __future__ import annotations

import pytest
import timm
import torch
from timm.models.vision_transformer import VisionTransformer

from regstudy import attention_maps, data, extract, model as vit

LAYOUTS = [(True, 0), (True, 4), (False, 4), (False, 0)]   # (class token, registers)


def stock(cls: bool, regs: int, img=(16, 24)) -> VisionTransformer:
    torch.manual_seed(0)
    m = VisionTransformer(img_size=img, patch_size=4, in_chans=3, num_classes=5, embed_dim=16, depth=2, num_heads=2,
                          class_token=cls, reg_tokens=regs, global_pool="token" if cls else "avg",
                          no_embed_class=True, dynamic_img_size=True)
    m.pretrained_cfg = {"mean": (0.5, 0.4, 0.3), "std": (0.2, 0.25, 0.3), "input_size": (3, *img)}
    return m.eval()


@pytest.mark.parametrize("cls,regs", LAYOUTS)
def test_token_groups_of_every_layout_match_timms_own_forward(cls, regs):
    m = stock(cls, regs)
    x = torch.randn(2, 3, 16, 24)                                # non-square: a 4 x 6 grid
    t = vit.tokens(m, x, final_norm=True)
    full = m.forward_features(x)
    g = t["norm"]
    P = int(cls) + regs
    assert g.grid == (4, 6) and g.patches.shape == (2, 24, 16) and g.registers.shape == (2, regs, 16)
    assert torch.allclose(g.patches, full[:, P:]) and torch.allclose(g.registers, full[:, int(cls):P])
    assert (g.cls is None) == (not cls)
    if cls:
        assert torch.allclose(g.cls, full[:, 0])


def timm_attention(m, x, block):
    """The attention probabilities timm computes, caught from its own (non-fused) attention."""
    caught = {}
    attn = m.blocks[block].attn
    attn.fused_attn = False
    h = attn.attn_drop.register_forward_hook(lambda mod, i, o: caught.setdefault("p", o))
    m(x)
    h.remove()
    attn.fused_attn = True
    return caught["p"]


@pytest.mark.parametrize("cls,regs", LAYOUTS)
def test_prefix_attention_maps_of_every_layout_are_timms_rows(cls, regs):
    m = stock(cls, regs)
    x = torch.randn(2, 3, 16, 24)
    maps = vit.prefix_attention_maps(m, x, block=-1)
    p = timm_attention(m, x, -1)                                 # B x heads x T x T
    P = int(cls) + regs
    assert maps["registers"].shape == (2, regs, 2, 4, 6)
    for r in range(regs):                                        # register r is row [CLS] + r, not [CLS] itself
        assert torch.allclose(maps["registers"][:, r].flatten(-2), p[:, :, int(cls) + r, P:], atol=3e-7)
    if cls:
        assert torch.allclose(maps["cls"].flatten(-2), p[:, :, 0, P:], atol=3e-7)
    else:
        assert maps["cls"] is None


def test_an_unknown_prefix_layout_is_refused():
    m = stock(True, 2)
    m.num_prefix_tokens = 4
    with pytest.raises(ValueError, match="layout"):
        vit.tokens(m, torch.randn(1, 3, 16, 24))


def test_read_outs_normalise_with_the_models_own_mean_and_std():
    m = stock(True, 0)
    x = torch.randint(0, 256, (2, 3, 16, 24), dtype=torch.uint8)
    mean, std = torch.tensor([0.5, 0.4, 0.3]).reshape(1, 3, 1, 1), torch.tensor([0.2, 0.25, 0.3]).reshape(1, 3, 1, 1)
    by_hand = vit.tokens(m, (x.float() / 255 - mean) / std)[1].patches.norm(dim=-1)
    assert torch.allclose(extract.token_norms(m, x)["patch"][1], by_hand, atol=1e-5)
    fashion = vit.tokens(m, data.normalize(x))[1].patches.norm(dim=-1)
    assert not torch.allclose(fashion, by_hand, atol=1e-3)      # the old, fixed normalisation differs
    assert torch.isnan(extract.token_norms(stock(False, 4), x)["cls"]).all()


def test_the_study_models_carry_fashion_mnist_statistics():
    from regstudy.config import ModelConfig
    m = vit.build(ModelConfig(embed_dim=8, depth=1, num_heads=2, patch_size=4, img_size=8))
    cfg = data.data_config(m)
    assert cfg["mean"] == (data.MEAN,) and cfg["std"] == (data.STD,)
    x = torch.randint(0, 256, (2, 1, 8, 8), dtype=torch.uint8)
    assert torch.equal(data.normalize_for(m, x), data.normalize(x))


@pytest.mark.parametrize("name,cls,regs", [("vit_small_patch14_reg4_dinov2", True, 4),
                                           ("vit_small_patch14_dinov2", True, 0),
                                           ("deit3_small_patch16_224", True, 0),
                                           ("vit_betwixt_patch16_reg4_gap_256", False, 4)])
def test_stock_timm_models_at_another_resolution(name, cls, regs):
    m = timm.create_model(name, pretrained=False, dynamic_img_size=True, depth=2).eval()
    patch = m.patch_embed.patch_size[0]
    x = torch.randint(0, 256, (1, 3, 4 * patch, 6 * patch), dtype=torch.uint8)
    lay = vit.positions(m, 24)
    assert len(lay["cls"]) == int(cls) and len(lay["registers"]) == regs
    maps = attention_maps.maps(m, x)
    assert maps["registers"].shape[:2] == (1, regs) and (maps["cls"] is None) == (not cls)
    assert extract.token_norms(m, x)["patch"].shape == (2, 1, 24)
    assert data.data_config(m)["mean"] != (data.MEAN,)

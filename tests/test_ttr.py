"""Test-time registers on a tiny model with a planted "register neuron": a neuron of block 2 that
fires at one background position only and writes a large vector there, beside a decoy neuron of
block 1 that fires (weakly) everywhere and writes nothing."""
from __future__ import annotations

import pytest
import torch

from regstudy import data, model as vit, norms, test_time_registers as ttr
from regstudy.config import ModelConfig

P_BG, NEURON, DECOY = 0, 5, 7     # the planted position (top-left patch: background), the planted neurons


def planted_model():
    torch.manual_seed(0)
    m = vit.build(ModelConfig(embed_dim=32, depth=3, num_heads=2, patch_size=4, img_size=28, layerscale=0))
    with torch.no_grad():
        m.pos_embed.normal_(0, 0.3)
        m.pos_embed[0, :, 0] = 0                     # channel 0 carries nothing ...
        m.pos_embed[0, P_BG, 0] = 1.0                # ... but at the planted position
        m.patch_embed.proj.weight[0] = 0
        m.patch_embed.proj.bias[0] = 0
        m.cls_token[..., 0] = 0
        mlp = m.blocks[1].mlp                        # the register neuron: reads channel 0, writes a big vector
        mlp.fc1.weight[NEURON] = 0
        mlp.fc1.weight[NEURON, 0] = 8.0
        mlp.fc1.bias[NEURON] = -6.0
        mlp.fc2.weight[:, NEURON] = 40 * torch.nn.functional.normalize(torch.randn(32), dim=0)
        d = m.blocks[0].mlp                          # the decoy: active at every token, writes nothing
        d.fc1.weight[DECOY] = 0
        d.fc1.bias[DECOY] = 0.5
        d.fc2.weight[:, DECOY] = 0
    return m.eval()


def images(n=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(n, 1, 28, 28, dtype=torch.uint8)
    x[:, :, 6:22, 8:20] = torch.randint(120, 255, (n, 1, 16, 12), generator=g, dtype=torch.uint8)
    return x


def last_patch_norms(m, x):
    g = vit.tokens(m, data.normalize_for(m, x), blocks=[-1])[len(m.blocks) - 1]
    return g.patches.norm(dim=-1), g.registers.norm(dim=-1)


def test_the_planted_neuron_is_found_and_the_decoy_is_not():
    m, x = planted_model(), images()
    found = ttr.find(m, x, top_k=1, background=data.background_patches(x, 4))
    assert found["rule"].found and found["flags"][:, P_BG].all() and found["flags"].sum() == len(x)
    assert [(n.block, n.index) for n in found["neurons"]] == [(1, NEURON)]
    scores = found["scores"]
    assert scores[1, NEURON] > scores[0, DECOY]      # at the outliers ...
    everywhere = ttr.score_neurons(m, data.normalize_for(m, x), torch.ones_like(found["flags"]))
    assert everywhere[0, DECOY] > everywhere[1, NEURON]   # ... but a score over all patches would pick the decoy


def test_attached_the_outliers_leave_the_patches_for_the_extra_token():
    m, x = planted_model(), images()
    found = ttr.find(m, x, top_k=1, background=data.background_patches(x, 4))
    thr = found["rule"].threshold
    before, _ = last_patch_norms(m, x)
    logits = m(data.normalize_for(m, x))
    with ttr.attach(m, found["neurons"]):
        after, regs = last_patch_norms(m, x)
        logits_ttr = m(data.normalize_for(m, x))
        maps = vit.prefix_attention_maps(m, data.normalize_for(m, x))
    assert (before > thr).float().mean() == pytest.approx(1 / 49)
    assert (after > thr).sum() == 0                                   # no patch above the baseline's threshold
    assert regs.shape == (len(x), 1) and (regs[:, 0] > thr).all()     # the extra token carries the high norm
    assert maps["registers"].shape[1] == 1 and logits_ttr.shape == logits.shape
    assert vit.tokens(m, data.normalize_for(m, x))[0].registers.shape[1] == 0   # detached: as before


def test_the_hook_handles_every_image_of_a_batch_on_its_own():
    m, x = planted_model(), images(6)
    neurons = ttr.find(m, images(), top_k=3)["neurons"]
    with ttr.attach(m, neurons):
        batch = last_patch_norms(m, x)[1]
        single = torch.cat([last_patch_norms(m, x[i:i + 1])[1] for i in range(len(x))])
    assert torch.allclose(batch, single, atol=1e-5)


def test_the_wrong_neuron_leaves_the_outliers_in_place():
    """A control of the planted model: the outliers leave the patches because of the neuron chosen,
    not because a token was added (selecting the decoy leaves them where they are)."""
    m, x = planted_model(), images()
    rule = ttr.find(m, x, top_k=1, background=data.background_patches(x, 4))["rule"]
    with ttr.attach(m, [ttr.Neuron(block=0, index=DECOY, score=0.0)]):
        after, _ = last_patch_norms(m, x)
    assert (after > rule.threshold).sum() == len(x)


def test_max_layer_limits_the_candidates():
    scores = torch.tensor([[1.0, 5.0], [9.0, 2.0], [3.0, 4.0]])
    assert [(n.block, n.index) for n in ttr.select(scores, 2)] == [(1, 0), (0, 1)]
    assert [(n.block, n.index) for n in ttr.select(scores, 2, max_layer=1)] == [(0, 1), (0, 0)]


def test_the_runs_own_rule_can_be_used_to_find_the_neurons():
    m, x = planted_model(), images()
    own = ttr.find(m, x, top_k=1, background=data.background_patches(x, 4))
    again = ttr.find(m, images(seed=1), top_k=1, rule=own["rule"])
    assert again["rule"] is own["rule"] and [(n.block, n.index) for n in again["neurons"]] == [(1, NEURON)]
    assert torch.allclose(ttr.score_neurons(m, data.normalize_for(m, x), own["flags"], batch=7), own["scores"], atol=1e-6)


@pytest.mark.parametrize("cls,regs,pool", [(True, 0, "token"), (True, 4, "token"), (False, 4, "avg"), (False, 0, "avg")])
def test_attached_to_any_layout_the_head_never_sees_the_extra_token(cls, regs, pool):
    from timm.models.vision_transformer import VisionTransformer
    torch.manual_seed(0)
    m = VisionTransformer(img_size=(16, 24), patch_size=4, in_chans=3, num_classes=5, embed_dim=16, depth=2, num_heads=2,
                          class_token=cls, reg_tokens=regs, global_pool=pool, no_embed_class=True, dynamic_img_size=True).eval()
    x = torch.randn(2, 3, 16, 24)
    feats = None
    with ttr.attach(m, [ttr.Neuron(block=1, index=3, score=1.0)]):
        f = m.forward_features(x)
        assert f.shape[1] == int(cls) + regs + 24 + 1
        g = vit.tokens(m, x, final_norm=True)["norm"]
        assert g.registers.shape[1] == regs + 1 and g.patches.shape[1] == 24 and (g.cls is None) == (not cls)
        assert torch.allclose(g.registers[:, -1], f[:, -1]) and torch.allclose(g.patches, f[:, int(cls) + regs:-1])
        act = {}
        h = m.blocks[1].mlp.act.register_forward_hook(lambda mod, i, o: act.setdefault("o", o))
        logits = m(x)
        h.remove()
        feats = f
    assert torch.allclose(logits, m.forward_head(feats[:, :-1]))            # pooled without the extra token
    a = act["o"][..., 3]                                                     # B x T after the edit
    assert (a[:, int(cls) + regs:-1] == 0).all()                              # the patches' activation is zeroed ...
    assert (a[:, -1] != 0).all()                                              # ... and moved to the extra token

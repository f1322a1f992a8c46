"""Neighbour similarity, scene composition and boxes."""
import torch

from regstudy import scenes, similarity
from regstudy.config import SceneConfig


def test_neighbour_cosine_on_constructed_maps():
    same = torch.ones(1, 3, 3, 4)
    assert torch.allclose(similarity.neighbour_cosine(same), torch.ones(1, 3, 3))
    v = torch.tensor([1.0, 0, 0, 0])
    checker = torch.stack([torch.stack([v * (-1) ** (r + c) for c in range(3)]) for r in range(3)])[None]
    assert torch.allclose(similarity.neighbour_cosine(checker), -torch.ones(1, 3, 3))
    m = torch.zeros(1, 2, 2, 2)
    m[0, 0, 0] = torch.tensor([1.0, 0])
    m[0, 0, 1] = torch.tensor([1.0, 0])
    m[0, 1, 0] = torch.tensor([0.0, 1])
    m[0, 1, 1] = torch.tensor([0.0, 1])
    out = similarity.neighbour_cosine(m)   # each token: one identical, one orthogonal neighbour
    assert torch.allclose(out, torch.full((1, 2, 2), 0.5))


def test_scene_boxes_are_exact_and_reproducible():
    cfg = SceneConfig(canvas=48, patch_size=8, scale_min=12, scale_max=24, texture=0.0, epochs=1, test_scenes=10)
    items = torch.zeros(16, 1, 28, 28, dtype=torch.uint8)
    items[:, :, 4:24, 6:22] = 200
    x, boxes = scenes.compose(items, cfg, torch.Generator().manual_seed(0))
    assert x.shape == (16, 1, 48, 48) and x.dtype == torch.uint8
    for img, b in zip(x[:, 0], boxes):
        x0, y0, x1, y1 = b.long().tolist()
        ink = img > 0
        assert ink[y0:y1, x0:x1].sum() == ink.sum()                        # all ink inside
        assert ink[y0, x0:x1].any() and ink[y1 - 1, x0:x1].any()             # tight
        assert ink[y0:y1, x0].any() and ink[y0:y1, x1 - 1].any()
    a = scenes.fixed(items[:, 0].numpy(), torch.arange(16).numpy(), cfg, 8, seed=3)
    b = scenes.fixed(items[:, 0].numpy(), torch.arange(16).numpy(), cfg, 8, seed=3)
    assert torch.equal(a["x"], b["x"]) and torch.equal(a["boxes"], b["boxes"])


def test_texture_and_box_patch_mask():
    cfg = SceneConfig(canvas=32, patch_size=8, scale_min=10, scale_max=10, texture=0.3, epochs=1, test_scenes=4)
    items = torch.zeros(4, 1, 28, 28, dtype=torch.uint8)
    x, _ = scenes.compose(items, cfg, torch.Generator().manual_seed(0))
    assert 0 < x.float().mean() < 0.3 * 255 and x.max() <= round(0.3 * 255)
    mask = scenes.box_patch_mask(torch.tensor([[8.0, 0.0, 17.0, 8.0]]), 32, 8)
    expect = torch.zeros(16, dtype=torch.bool)
    expect[[1, 2]] = True
    assert torch.equal(mask[0], expect)

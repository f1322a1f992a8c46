import torch

from regstudy import lost, model as vit


def object_features(h=8, w=8, box=(2, 3, 5, 6), d=16, seed=0):
    """Background patches share one direction (high degree), object patches another (low degree)."""
    g = torch.Generator().manual_seed(seed)
    bgv, obv = torch.randn(d, generator=g), torch.randn(d, generator=g)
    obv = obv - (obv @ bgv) / (bgv @ bgv) * bgv            # orthogonal to background
    f = bgv.expand(h, w, d).clone() + 0.05 * torch.randn(h, w, d, generator=g)
    x0, y0, x1, y1 = box
    f[y0:y1, x0:x1] = obv - 0.3 * bgv + 0.05 * torch.randn(y1 - y0, x1 - x0, d, generator=g)
    return f.reshape(1, h * w, d)


def test_lost_finds_the_constructed_object():
    box = (2, 3, 5, 6)
    res = lost.lost(object_features(box=box), (8, 8), k=5)
    assert res.boxes[0].tolist() == list(box)
    s = int(res.seed[0])
    assert 2 <= s % 8 < 5 and 3 <= s // 8 < 6


def test_lost_is_batched_and_bias_is_applied():
    f = torch.cat([object_features(box=(0, 0, 3, 2), seed=1), object_features(box=(4, 4, 8, 8), seed=2)])
    res = lost.lost(f, (8, 8), k=4)
    assert res.boxes.tolist() == [[0, 0, 3, 2], [4, 4, 8, 8]]
    # a large positive bias makes every patch correlate with every other: the box covers the image
    big = lost.lost(f, (8, 8), k=4, bias=1e6)
    assert big.boxes.tolist() == [[0, 0, 8, 8]] * 2


def test_connected_component_keeps_only_the_seed_component():
    m = torch.zeros(1, 5, 5, dtype=torch.bool)
    m[0, 0, 0:2] = True
    m[0, 3:5, 3:5] = True
    comp = lost.connected_component(m, torch.tensor([18]))   # (3, 3)
    assert comp.sum() == 4 and not comp[0, 0].any()
    assert lost.mask_box(comp).tolist() == [[3, 3, 5, 5]]
    diag = torch.zeros(1, 3, 3, dtype=torch.bool)
    diag[0, 0, 0] = diag[0, 1, 1] = True                      # 4-connectivity: diagonal is not connected
    assert lost.connected_component(diag, torch.tensor([0])).sum() == 1


def test_iou_and_corloc_on_hand_made_boxes():
    a = torch.tensor([[0.0, 0, 10, 10]])
    b = torch.tensor([[0.0, 0, 10, 10], [5.0, 0, 15, 10], [20.0, 20, 30, 30]])
    assert torch.allclose(lost.iou(a, b).float(), torch.tensor([[1.0, 1 / 3, 0.0]]))
    pred = torch.tensor([[0.0, 0, 10, 10], [0.0, 0, 10, 10], [0.0, 0, 10, 10]])
    gts = [torch.tensor([[1.0, 1, 10, 10]]),                      # IoU 0.81: hit
           torch.tensor([[5.0, 0, 15, 10], [0.0, 0, 9, 9]]),     # second box IoU 0.81: hit
           torch.tensor([[5.0, 0, 15, 10]])]                      # IoU 1/3: miss
    assert lost.corloc_hits(pred, gts).tolist() == [True, True, False]
    assert abs(lost.corloc(pred, gts) - 2 / 3) < 1e-9
    assert lost.corloc_hits(pred[:1], [torch.zeros(0, 4)]).tolist() == [False]


def test_iou_of_exactly_one_half_is_a_miss_as_in_the_reference():
    """The reference adds 1e-7 to box heights and the union, so IoU exactly 0.5 falls just below."""
    pred = torch.tensor([[0.0, 0, 10, 10]])
    half = [torch.tensor([[0.0, 0, 10, 5]])]      # inside, half the area: IoU 0.5 without epsilons
    assert abs(float(lost.iou(pred, half[0])) - 0.5) < 1e-6
    assert lost.corloc_hits(pred, half).tolist() == [False]
    assert lost.corloc_hits(pred, [torch.tensor([[0.0, 0, 10, 5.01]])]).tolist() == [True]


def test_padding_is_the_mean_colour():
    """Padding after normalisation with 0 = the data's mean colour (the reference's convention)."""
    x = torch.ones(1, 1, 6, 6)
    xp = vit.pad_to_patch(x, 4, value=lost.PAD_VALUE)
    assert xp.shape[-2:] == (8, 8) and float(xp[..., 6:, :].abs().max()) == 0.0

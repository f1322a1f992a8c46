import pytest
import torch

from regstudy import probes
from regstudy.local_info import chance_position


def synthetic_tokens(n, grid, dim=32, noise=0.3, seed=0, encode=True):
    g = torch.Generator().manual_seed(seed)
    N = grid * grid
    code = torch.randn(N, dim, generator=g)
    pos = torch.randint(0, N, (n,), generator=g)
    x = torch.randn(n, dim, generator=g) * noise
    if encode:
        x = x + code[pos]
    return x, pos


def test_position_probe_recovers_an_encoded_position():
    x, p = synthetic_tokens(3500, 7)
    xtr, ptr, xte, pte = x[:3000], p[:3000], x[3000:], p[3000:]
    res = probes.position(xtr, ptr, xte, pte, (7, 7), epochs=30, lr=1e-2, seed=0)
    assert res.metric > 0.9 and res.extra["avg_distance"] < 0.3


def test_position_probe_fails_on_noise():
    x, p = synthetic_tokens(4000, 7, encode=False)
    xtr, ptr, xte, pte = x[:3000], p[:3000], x[3000:], p[3000:]
    res = probes.position(xtr, ptr, xte, pte, (7, 7), epochs=30, lr=1e-2, seed=0)
    chance = chance_position(7)
    assert res.metric < 4 * chance["position_top1"]
    assert res.extra["avg_distance"] > 0.7 * chance["position_avg_distance"]


def test_class_probe_recovers_a_class_and_fails_on_noise():
    g = torch.Generator().manual_seed(0)
    means = torch.randn(10, 16, generator=g) * 2
    y = torch.randint(0, 10, (2000,), generator=g)
    x = means[y] + torch.randn(2000, 16, generator=g)
    good = probes.classify(x[:1500], y[:1500], x[1500:], y[1500:], epochs=30, lr=1e-2, seed=0)
    assert good.metric > 0.9
    noise = torch.randn(2000, 16, generator=g)
    bad = probes.classify(noise[:1500], y[:1500], noise[1500:], y[1500:], epochs=30, lr=1e-2, seed=0)
    assert bad.metric < 0.2


def test_regression_probe_recovers_linear_pixels_and_not_noise():
    g = torch.Generator().manual_seed(0)
    W = torch.randn(16, 8, generator=g)
    x = torch.randn(3000, 16, generator=g)
    t = x @ W
    good = probes.regress(x[:2500], t[:2500], x[2500:], t[2500:], epochs=40, lr=1e-2, seed=0)
    noise = torch.randn(3000, 16, generator=g)
    bad = probes.regress(noise[:2500], t[:2500], noise[2500:], t[2500:], epochs=40, lr=1e-2, seed=0)
    assert good.metric < 0.2 * bad.metric


def test_class_iou():
    pred = torch.tensor([0, 0, 1, 2])
    truth = torch.tensor([0, 1, 1, 2])
    iou = probes.class_iou(pred, truth, 4)
    assert iou["per_class"][:3] == [0.5, 0.5, 1.0] and iou["miou"] == pytest.approx(2 / 3)   # class 3 absent: skipped


def test_balanced_indices_and_mean_sd():
    idx = probes.balanced_indices({"a": torch.arange(10), "b": torch.arange(100)}, 5, seed=0)
    assert len(idx["a"]) == len(idx["b"]) == 5 and len(set(idx["b"].tolist())) == 5
    m, s = probes.mean_sd([1.0, 2.0, 3.0])
    assert m == 2.0 and abs(s - 1.0) < 1e-12

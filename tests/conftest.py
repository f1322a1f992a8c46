"""Shared fixtures: a throw-away study root with synthetic Fashion-MNIST-like data, and tiny configs."""
from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from regstudy import config, data, paths

REPO = Path(__file__).resolve().parents[1]


def synthetic_images(n: int, seed: int) -> tuple:
    """28x28 uint8 images on a black background, like Fashion-MNIST items: class c is a centred
    bright rectangle whose width and height depend on c, with noise. Has background patches."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 10
    rng.shuffle(y)
    x = np.zeros((n, 28, 28), np.uint8)
    for i, c in enumerate(y):
        h, w = 8 + 12 * (c // 5), 4 + 4 * (c % 5)
        r0, c0 = (28 - h) // 2 + rng.integers(-1, 2), (28 - w) // 2 + rng.integers(-1, 2)
        x[i, r0:r0 + h, c0:c0 + w] = rng.integers(150, 255, (h, w))
    return x, y.astype(np.uint8)


@pytest.fixture()
def study_root(tmp_path, monkeypatch):
    """A study root (params.yaml + dvc.yaml copied from the repo) with a small synthetic split."""
    root = tmp_path / "study"
    root.mkdir()
    for f in ("params.yaml", "dvc.yaml"):
        shutil.copy(REPO / f, root / f)
    out = root / "data" / "prepared"
    out.mkdir(parents=True)
    xtr, ytr = synthetic_images(600, 0)
    xva, yva = synthetic_images(200, 1)
    xte, yte = synthetic_images(200, 2)
    np.savez_compressed(out / data.PREPARED_NAME, x_train=xtr, y_train=ytr, x_val=xva, y_val=yva, x_test=xte, y_test=yte)
    monkeypatch.setenv("REGSTUDY_ROOT", str(root))
    monkeypatch.setattr(paths, "ROOT", None)
    return root


@pytest.fixture()
def tiny_profile(study_root):
    p = config.load_profile("smoke")
    sizes = {k: config.SizeConfig(16, 2, 2) for k in p.sizes_table}
    train = dataclasses.replace(p.train, epochs=3, batch_size=32, train_images=512, eval_images=100,
                                probe_images=16, warmup_steps=2, lr=3e-3)
    scene = dataclasses.replace(p.scene, canvas=32, patch_size=8, scale_min=12, scale_max=20, epochs=1, test_scenes=40)
    analysis = dataclasses.replace(p.analysis, eval_images=100, map_images=4, probe_train_images=100,
                                   probe_test_images=60, probe_epochs=5, probe_seeds=1, lost_k=4)
    return dataclasses.replace(p, sizes_table=sizes, train=train, scene=scene, analysis=analysis)


@pytest.fixture()
def tiny_run(tiny_profile):
    return config.run_config(tiny_profile, "main", registers=2, seed=0)


@pytest.fixture(autouse=True)
def _threads():
    torch.manual_seed(0)
    yield

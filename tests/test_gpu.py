"""GPU-only checks: bf16 autocast training steps, torch.compile, device-resident augmentation."""
import dataclasses

import pytest
import torch

from regstudy import data, train

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def test_cuda_training_run_with_compile(tiny_run, tmp_path):
    cfg = dataclasses.replace(tiny_run, train=dataclasses.replace(tiny_run.train, compile=True))
    m = train.fit(cfg, tmp_path / "gpu", device="cuda")
    assert m["test_acc"] > 0.15


def test_augmentation_stays_on_the_device():
    x = torch.randint(0, 255, (64, 1, 28, 28), dtype=torch.uint8, device="cuda")
    g = torch.Generator(device="cuda").manual_seed(0)
    out = data.augment(x, 2, True, g)
    assert out.is_cuda and out.shape == x.shape

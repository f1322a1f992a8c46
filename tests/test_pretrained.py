"""The public-model read-outs, offline: sample photos, the message naming missing checkpoints, the
pairing of register twins, and a read-out of random-init twins of the stock architectures."""
from __future__ import annotations

import pytest
import torch

from regstudy import config, pretrained
from regstudy.config import ConfigError


def test_sample_photos_need_no_download_and_fit_the_size():
    x = pretrained.sample_images(len(pretrained.SAMPLES), 56)
    assert x.shape == (len(pretrained.SAMPLES), 3, 56, 56) and x.dtype == torch.uint8 and x.float().std() > 20


def test_missing_checkpoints_are_all_named_in_one_message(monkeypatch):
    monkeypatch.setattr(pretrained, "hub_reachable", lambda timeout=3.0: False)
    monkeypatch.setenv("HF_HOME", "/nonexistent-hf-home")
    cfg = pretrained.PretrainedConfig(models=("vit_small_patch14_dinov2.lvd142m", "no_such_vit"), weights="pretrained",
                                      images=2, image_size=56, only=True)
    with pytest.raises(pretrained.WeightsUnavailable) as e:
        pretrained.load_all(cfg)
    assert "vit_small_patch14_dinov2.lvd142m" in str(e.value) and "no_such_vit" in str(e.value)
    assert "weights: random" in str(e.value)


def test_register_twins_are_paired_by_name():
    names = ["vit_small_patch14_dinov2.lvd142m", "vit_small_patch14_reg4_dinov2.lvd142m", "vit_base_patch16_224.dino"]
    assert pretrained.twins(names) == [("vit_small_patch14_dinov2.lvd142m", "vit_small_patch14_reg4_dinov2.lvd142m")]
    assert pretrained.short(names[1]) == "vit_small_patch14\nreg4_dinov2"


def test_the_block_is_validated():
    ok = {"models": [], "weights": "random", "images": 2, "image_size": 0, "only": False}
    assert pretrained.parse(ok).models == ()
    for bad in ({**ok, "weights": "maybe"}, {**ok, "images": 99}, {**ok, "extra": 1}):
        with pytest.raises(ConfigError):
            pretrained.parse(bad)
    assert config.preset("pretrained").families == {} and config.preset("pretrained").pretrained.only


def test_a_random_twin_is_read_out_end_to_end():
    cfg = pretrained.PretrainedConfig(models=("vit_small_patch14_reg4_dinov2",), weights="random", images=2,
                                      image_size=60, only=False)
    m = pretrained.load_all(cfg)["vit_small_patch14_reg4_dinov2"]
    x = pretrained.sample_images(2, pretrained.side(m, cfg))
    assert x.shape[-1] == 56                        # rounded down to the patch size (14)
    r = pretrained.read_out(m, x, lost_k=4)
    assert r["norms"].shape == (2, 16) and r["registers"].shape[:2] == (2, 4) and r["boxes"].shape == (2, 4)
    row = pretrained.summary_row("twin", m, r)
    assert row["registers"] == 4 and row["patches"] == 16

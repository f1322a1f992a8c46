"""Runs trained together as one batched model are the runs trained alone."""
import dataclasses

import pytest
import torch

from regstudy import batched, checkpoint, model as vit, train
from regstudy.config import ModelConfig, run_config


@pytest.mark.parametrize("registers,layerscale,img,patch", [(0, 0.0, 28, 4), (4, 1e-4, 28, 4), (1, 1e-4, 32, 8),
                                                            (16, 1e-5, 28, 7)])
def test_batched_forward_is_timms_forward(registers, layerscale, img, patch):
    cfg = ModelConfig(embed_dim=24, depth=3, num_heads=3, patch_size=patch, img_size=img, registers=registers,
                      layerscale=layerscale)
    models = []
    for s in range(3):
        torch.manual_seed(s)
        models.append(vit.build(cfg).eval())
    p = batched.stack(models)
    x = torch.randn(3, 5, 1, img, img)
    with torch.no_grad():
        ref = torch.stack([m(x[i]) for i, m in enumerate(models)])
        assert torch.allclose(batched.forward(p, x, cfg), ref, atol=1e-6)
    assert set(p) == {n for n, _ in models[0].named_parameters()}
    models[1].load_state_dict(batched.state_dict_of(p, 1))        # the timm format, loadable as is


def test_per_model_clipping_matches_torch():
    g = torch.Generator().manual_seed(0)
    params = {"a": torch.zeros(2, 3, requires_grad=True), "b": torch.zeros(2, 4, 2, requires_grad=True)}
    params["a"].grad = torch.randn(2, 3, generator=g) * 5
    params["b"].grad = torch.randn(2, 4, 2, generator=g) * 0.01
    ref = []
    for m in range(2):
        a, b = params["a"].grad[m].clone().requires_grad_(), params["b"].grad[m].clone()
        pa, pb = torch.zeros(3, requires_grad=True), torch.zeros(4, 2, requires_grad=True)
        pa.grad, pb.grad = a.detach().clone(), b.clone()
        torch.nn.utils.clip_grad_norm_([pa, pb], 1.0)
        ref.append((pa.grad, pb.grad))
    batched.clip_grad_norm_(params, 1.0)
    for m in range(2):
        assert torch.allclose(params["a"].grad[m], ref[m][0]) and torch.allclose(params["b"].grad[m], ref[m][1])


@pytest.fixture()
def family(tiny_profile):
    """Three seeds of one configuration, 20 optimisation steps each (2 epochs of 10 steps)."""
    prof = dataclasses.replace(tiny_profile, train=dataclasses.replace(tiny_profile.train, epochs=2, train_images=320))
    return [run_config(prof, "main", registers=2, seed=s) for s in range(3)]


def weights(path):
    return checkpoint.load(path / "checkpoint.pt")["model"]


def test_a_family_trained_together_equals_its_runs_trained_alone(family, tmp_path):
    together = train.fit_family(family, [tmp_path / "fam" / c.name for c in family], device="cpu")
    for cfg, m in zip(family, together):
        alone = train.fit(cfg, tmp_path / "alone" / cfg.name, device="cpu")
        assert alone["final_train_loss"] == pytest.approx(m["final_train_loss"], abs=1e-4)
        assert alone["test_acc"] == pytest.approx(m["test_acc"], abs=0.02)
        a, b = weights(tmp_path / "alone" / cfg.name), weights(tmp_path / "fam" / cfg.name)
        assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-4
    # different seeds really are different runs
    w0, w1 = weights(tmp_path / "fam" / family[0].name), weights(tmp_path / "fam" / family[1].name)
    assert float((w0["head.weight"] - w1["head.weight"]).abs().max()) > 1e-3


def test_a_run_paused_in_a_family_resumes_alone(family, tmp_path):
    """Checkpoints of a family are ordinary single-run checkpoints (optimiser state included)."""
    dirs = [tmp_path / c.name for c in family]
    full = train.fit_family(family, [tmp_path / "full" / c.name for c in family], device="cpu")
    train.fit_family(family, dirs, device="cpu", stop_after_epoch=1)
    resumed = train.fit(family[2], dirs[2], device="cpu")
    assert resumed["final_train_loss"] == pytest.approx(full[2]["final_train_loss"], abs=1e-4)


def test_a_family_must_differ_in_seed_only(family, tiny_profile):
    other = run_config(tiny_profile, "main", registers=4, seed=5)
    with pytest.raises(ValueError, match="differ in more than their seed"):
        train.check_family([family[0], other])
    with pytest.raises(ValueError, match="share a seed"):
        train.check_family([family[0], family[0]])


def test_fp16_where_bf16_is_missing(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert train.amp_dtype("cuda") == torch.float16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert train.amp_dtype("cuda") == torch.bfloat16 and train.amp_dtype("cpu") is None


def test_the_fp16_step_with_its_gradient_scaler_trains(tiny_run):
    """The fp16 path (autocast + one gradient scaler for all stacked models), run on the CPU."""
    torch.manual_seed(0)
    models = [vit.build(tiny_run.model) for _ in range(2)]
    params = batched.stack(models)
    before = {k: v.detach().clone() for k, v in params.items()}
    opt = train.make_optimizer(params, tiny_run.train, "cpu")
    step = train.train_step(params, opt, tiny_run, "cpu", precision=torch.float16)
    x = torch.randn(2, 8, 1, 28, 28)
    y = torch.randint(0, 10, (2, 8))
    for _ in range(3):
        losses, logits = step(x, y)
    assert losses.shape == (2,) and torch.isfinite(losses).all() and logits.shape == (2, 8, 10)
    moved = [float((params[k].detach() - before[k]).abs().max()) for k in params]
    assert sum(m > 0 for m in moved) > len(moved) // 2

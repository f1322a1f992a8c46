"""Every architecture that the pipeline's families would train, under every profile the study ships
(src/regstudy/profiles/), builds and runs on a CPU batch of two images: a study config that could only fail on
the GPU machine fails here first."""
import pytest
import torch

from regstudy import config, model as vit



def pipeline_runs():
    """Each distinct architecture the families train (register counts: the smallest and the largest)."""
    for name in config.presets():
        study = config.preset(name)
        prof = study.active
        if not study.families:        # the pretrained profile trains nothing
            continue
        for r in sorted({min(study.ablation_registers), max(study.ablation_registers)}):
            yield name, prof, "main", r, None
        for s in study.sizes:
            yield name, prof, "size", 0, s
        yield name, prof, "scene", max(study.scene_registers), None


@pytest.mark.parametrize("profile,prof,family,registers,size", list(pipeline_runs()),
                         ids=lambda v: v if isinstance(v, (str, int)) else "")
def test_every_pipeline_run_builds_and_runs(profile, prof, family, registers, size):
    cfg = config.run_config(prof, family, registers=registers, seed=0, size=size)
    assert cfg.train.batch_size <= (cfg.train.train_images or 55_000)
    m = vit.build(cfg.model)
    torch.manual_seed(0)
    x = torch.randn(2, 1, cfg.model.img_size, cfg.model.img_size)
    with torch.no_grad():
        out = m(x)
        g = vit.tokens(m, x, blocks=-1)[cfg.model.depth - 1]
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    grid = cfg.model.img_size // cfg.model.patch_size
    assert g.cls.shape == (2, cfg.model.embed_dim) and g.registers.shape[1] == registers
    assert g.patches.shape[1] == grid * grid == cfg.model.num_patches


def emergence_runs():
    for name in config.presets():
        study = config.preset(name)
        for variant in study.emergence.grid:
            yield name, study, variant


@pytest.mark.parametrize("profile,study,variant", list(emergence_runs()), ids=lambda v: v if isinstance(v, str) else "")
def test_every_emergence_variant_builds_and_runs(profile, study, variant):
    from regstudy import emergence
    for r in study.emergence.registers:
        cfg = emergence.run_configs(study.active, study.emergence, variant, r)[0]
        m = vit.build(cfg.model)
        with torch.no_grad():
            assert m(torch.randn(2, 1, 28, 28)).shape == (2, 10)

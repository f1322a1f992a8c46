import copy

import pytest
import yaml

from regstudy import config
from conftest import REPO

RAW = yaml.safe_load((REPO / "params.yaml").read_text())


def test_repo_params_and_every_shipped_profile_validate():
    study = config.parse(RAW)
    assert study.profile == "smoke" and study.active.smoke
    assert set(config.presets()) >= {"smoke", "study"}
    s = config.preset("study").active
    assert not s.smoke and s.require_gpu
    # the study recipe: ViT-S (384/12/6), patch 4, LayerScale 1e-4, >= 60 epochs
    assert (s.size(s.model.size).embed_dim, s.size(s.model.size).depth, s.size(s.model.size).num_heads) == (384, 12, 6)
    assert s.model.patch_size == 4 and s.model.layerscale == pytest.approx(1e-4) and s.train.epochs >= 60
    for name in config.presets():
        p = config.preset(name)
        if p.pretrained.only:         # trains nothing: the public checkpoints only
            assert not p.families and p.pretrained.models, name
            continue
        assert {0, 4} <= set(p.ablation_registers) and len(p.seeds) >= 3, name


def test_params_yaml_is_the_shipped_smoke_profile():
    """The committed params.yaml (what CI's smoke run and results/smoke come from) is smoke's file."""
    assert config.parse(RAW) == config.preset("smoke")


def test_families_give_the_matrices():
    study = config.parse(RAW)
    assert study.ablation_registers == (0, 1, 2, 4, 8, 16) and study.seeds == (0, 1, 2)
    assert study.sizes == ("ti", "b") and study.size_seeds == (0,) and study.scene_registers == (0, 4)
    assert study.family("r4").run_names == ["r4-s0", "r4-s1", "r4-s2"]
    assert study.family("size-b").run_names == ["size-b-s0"]
    with pytest.raises(config.ConfigError, match="family 'r3' is not in"):
        study.family("r3")


def test_a_notebook_asked_for_another_profile_stops_with_a_clear_error():
    study = config.parse(RAW)
    assert study.select("smoke") is study.active
    with pytest.raises(config.ConfigError, match=r"holds profile 'smoke', not 'study'.*--profile study"):
        study.select("study")


def _set(path, value):
    def mutate(raw):
        *keys, last = path
        d = raw
        for k in keys:
            d = d[k]
        if value is DELETE:
            del d[last]
        else:
            d[last] = value
    return mutate


DELETE = object()
BAD = [
    (("train", "learning_rate"), 0.1, r"unknown key\(s\) \['learning_rate'\] in train"),
    (("train", "epochs"), "eighty", "train.epochs must be an integer"),
    (("train", "lr"), DELETE, "missing key train.lr"),
    (("seed",), [0], r"unknown key\(s\) \['seed'\] in the top level"),
    (("profiles",), {}, r"unknown key\(s\) \['profiles'\] in the top level"),
    (("families", "r4", "registers"), 32, "outside"),
    (("families", "r4", "registers"), 5, "must be named 'r5'"),
    (("families", "r4", "seeds"), [0, 1], "must share their seeds"),
    (("families", "scene-r4", "images"), "model", "images must be scene"),
    (("families", "size-b", "registers"), 2, "trains baselines only"),
    (("families", "size-b", "size"), "xl", "model size 'xl' is not in sizes_table"),
    (("families", "r0"), DELETE, "must include r0"),
    (("families", "r2", "kind"), "big", "kind must be one of"),
    (("model", "patch_size"), 5, "must divide 28"),
    (("analysis", "lost_feature"), "query", "key, value or output"),
    (("train", "compile"), "yes", "must be true or false"),
]


@pytest.mark.parametrize("path,value,message", BAD)
def test_bad_params_are_clear_errors(path, value, message):
    raw = copy.deepcopy(RAW)
    _set(path, value)(raw)
    with pytest.raises(config.ConfigError, match=message):
        config.parse(raw)


def test_scientific_notation_string_is_read_as_float():
    raw = copy.deepcopy(RAW)
    raw["train"]["lr"] = "1e-3"   # YAML 1.1 reads 1e-3 as a string
    assert config.parse(raw).active.train.lr == pytest.approx(1e-3)


def test_a_preset_must_carry_its_own_name(tmp_path, monkeypatch):
    raw = copy.deepcopy(RAW)
    raw["profile"] = "other"
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.setattr(config, "PRESETS", tmp_path)
    with pytest.raises(config.ConfigError, match="must say profile: mine"):
        config.preset("mine")
    with pytest.raises(config.ConfigError, match="no profile 'huge'"):
        config.preset("huge")


def test_run_config_names_and_families():
    p = config.parse(RAW).active
    assert config.run_config(p, "main", registers=4, seed=1).name == "r4-s1"
    assert config.run_config(p, "size", seed=0, size="ti").model.embed_dim == p.size("ti").embed_dim
    sc = config.run_config(p, "scene", registers=4)
    assert sc.model.img_size == p.scene.canvas and not sc.train.flip
    with pytest.raises(config.ConfigError):
        config.run_config(p, "main", registers=17)
    with pytest.raises(config.ConfigError):
        config.run_config(p, "size", registers=4)
    rc = config.run_config(p, "main", registers=2, seed=3)
    assert config.run_config_from_dict(rc.to_dict()) == rc


def test_notebook_parameters_must_name_trained_models():
    study = config.parse(RAW)
    study.check_trained(registers=4, seeds=[0, 2])
    study.check_trained(registers=4, seeds=[1], kind="scene")
    with pytest.raises(config.ConfigError, match=r"registers=3: params.yaml trains no main family .*\[0, 1, 2, 4, 8, 16\]"):
        study.check_trained(registers=3)
    with pytest.raises(config.ConfigError, match=r"seed 7 is not trained .*\[0, 1, 2\]"):
        study.check_trained(seeds=[7])
    with pytest.raises(config.ConfigError, match="no scene family with 8 registers"):
        study.check_trained(registers=8, kind="scene")

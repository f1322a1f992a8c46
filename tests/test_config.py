import copy

import pytest
import yaml

from regstudy import config
from conftest import REPO

RAW = yaml.safe_load((REPO / "params.yaml").read_text())


def test_repo_params_load_and_both_profiles_validate():
    study = config.parse(RAW)
    assert set(study.profiles) >= {"smoke", "study"}
    assert study.profiles["smoke"].smoke and not study.profiles["study"].smoke
    s = study.profiles["study"]
    # the study recipe the issue asks for: ViT-S (384/12/6), patch 4, LayerScale 1e-4, >= 60 epochs
    assert (s.size(s.model.size).embed_dim, s.size(s.model.size).depth, s.size(s.model.size).num_heads) == (384, 12, 6)
    assert s.model.patch_size == 4 and s.model.layerscale == pytest.approx(1e-4) and s.train.epochs >= 60
    assert {0, 4} <= set(study.ablation_registers) and len(study.seeds) >= 3


def test_unknown_key_is_an_error_naming_it():
    raw = copy.deepcopy(RAW)
    raw["profiles"]["smoke"]["train"]["learning_rate"] = 0.1
    with pytest.raises(config.ConfigError, match="learning_rate"):
        config.parse(raw)


def test_mistyped_value_is_an_error():
    raw = copy.deepcopy(RAW)
    raw["profiles"]["study"]["train"]["epochs"] = "eighty"
    with pytest.raises(config.ConfigError, match="epochs must be an integer"):
        config.parse(raw)


def test_missing_key_and_unknown_profile():
    raw = copy.deepcopy(RAW)
    del raw["profiles"]["smoke"]["train"]["lr"]
    with pytest.raises(config.ConfigError, match="missing key profiles.smoke.train.lr"):
        config.parse(raw)
    raw = copy.deepcopy(RAW)
    raw["profile"] = "huge"
    with pytest.raises(config.ConfigError, match="profile 'huge' is not defined"):
        config.parse(raw)


def test_top_level_typo_and_ranges():
    raw = copy.deepcopy(RAW)
    raw["seed"] = [0]
    with pytest.raises(config.ConfigError, match="unknown top-level"):
        config.parse(raw)
    raw = copy.deepcopy(RAW)
    raw["ablation_registers"] = [0, 32]
    with pytest.raises(config.ConfigError, match="outside"):
        config.parse(raw)
    raw = copy.deepcopy(RAW)
    raw["profiles"]["smoke"]["model"]["patch_size"] = 5
    with pytest.raises(config.ConfigError, match="must divide 28"):
        config.parse(raw)


def test_scientific_notation_string_is_read_as_float():
    raw = copy.deepcopy(RAW)
    raw["profiles"]["smoke"]["train"]["lr"] = "1e-3"   # YAML 1.1 reads 1e-3 as a string
    assert config.parse(raw).profiles["smoke"].train.lr == pytest.approx(1e-3)


def test_run_config_names_and_families():
    p = config.parse(RAW).profiles["smoke"]
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

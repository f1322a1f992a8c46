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
    (("profiles", "smoke", "train", "learning_rate"), 0.1, r"unknown key\(s\) \['learning_rate'\] in profiles.smoke.train"),
    (("profiles", "study", "train", "epochs"), "eighty", "profiles.study.train.epochs must be an integer"),
    (("profiles", "smoke", "train", "lr"), DELETE, "missing key profiles.smoke.train.lr"),
    (("profile",), "huge", "profile 'huge' is not defined"),
    (("seed",), [0], r"unknown key\(s\) \['seed'\] in the top level"),
    (("ablation_registers",), [0, 32], "outside"),
    (("profiles", "smoke", "model", "patch_size"), 5, "must divide 28"),
    (("profiles", "smoke", "analysis", "lost_feature"), "query", "key, value or output"),
    (("profiles", "study", "train", "compile"), "yes", "must be true or false"),
]


@pytest.mark.parametrize("path,value,message", BAD)
def test_bad_params_are_clear_errors(path, value, message):
    raw = copy.deepcopy(RAW)
    _set(path, value)(raw)
    with pytest.raises(config.ConfigError, match=message):
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

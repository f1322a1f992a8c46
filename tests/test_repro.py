"""`python -m regstudy.repro`: plain `dvc repro` (core first), and the time budget's exit 75 (no dvc
involved here: dvc is replaced by a fake)."""
import json
import time

import pytest

from regstudy import paths, repro


@pytest.fixture
def fake_root(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "root", lambda: tmp_path)
    monkeypatch.setattr(repro, "not_run", lambda: ["train@4", "report"])
    return tmp_path


def write_log(root, name, last_type):
    d = root / "runs" / "smoke" / "main" / name.rsplit("-s", 1)[0] / name
    d.mkdir(parents=True, exist_ok=True)
    (d / "log.jsonl").write_text(json.dumps({"type": "config"}) + "\n" + json.dumps({"type": last_type}) + "\n")


def test_core_first_then_everything(fake_root, monkeypatch):
    calls = []
    monkeypatch.setattr(repro, "dvc", lambda *a: calls.append(a) or 0)
    assert repro.run("smoke", None, []) == 0
    assert calls == [("repro", *repro.CORE), ("repro",)]
    calls.clear()
    assert repro.run("smoke", None, ["report"]) == 0 and calls == [("repro", "report")]
    calls.clear()
    assert repro.run("pretrained", None, [], only=True) == 0 and calls == [("repro", "pretrained")]


def test_paused_training_exits_75_and_says_run_again(fake_root, monkeypatch, capsys):
    def fake_dvc(*a):
        write_log(fake_root, "r0-s0", "paused")
        write_log(fake_root, "r0-s1", "paused")
        write_log(fake_root, "r1-s0", "final")
        return 1
    monkeypatch.setattr(repro, "dvc", fake_dvc)
    assert repro.run("smoke", time.time() + 100, []) == repro.EX_TEMPFAIL == 75
    err = capsys.readouterr().err
    assert "2 training run(s) paused at an epoch boundary (r0-s0, r0-s1)" in err
    assert "2 stage(s) not run (train@4, report)" in err and "Run the same command again" in err


def test_a_real_failure_is_not_mistaken_for_a_pause(fake_root, monkeypatch, capsys):
    write_log(fake_root, "r0-s0", "paused")          # an old pause, from before this call
    past = time.time() - 3600
    import os
    os.utime(fake_root / "runs" / "smoke" / "main" / "r0" / "r0-s0" / "log.jsonl", (past, past))
    monkeypatch.setattr(repro, "dvc", lambda *a: 1)
    assert repro.run("smoke", None, []) == 1
    assert "failed" in capsys.readouterr().err


def test_nothing_starts_after_the_deadline(fake_root, monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(repro, "dvc", lambda *a: calls.append(a) or 0)
    assert repro.run("smoke", time.time() - 1, []) == 75
    assert not calls and "time budget used up: 2 stage(s) not run" in capsys.readouterr().err


def test_switching_profile_copies_the_shipped_file_and_never_overwrites_edits(tmp_path):
    from regstudy import config
    p = tmp_path / "params.yaml"
    smoke = config.preset_path("smoke").read_text()
    p.write_text(smoke)
    assert not repro.switch_profile(p, "smoke")                       # already there: untouched
    assert repro.switch_profile(p, "study") and p.read_text() == config.preset_path("study").read_text()
    p.write_text(smoke.replace("epochs: 2\n", "epochs: 3\n", 1))    # an edit (e.g. by dvc exp run -S)
    assert not repro.switch_profile(p, "smoke") and "epochs: 3" in p.read_text()   # same profile: kept
    with pytest.raises(config.ConfigError, match="with edits"):
        repro.switch_profile(p, "study")
    assert "epochs: 3" in p.read_text()
    assert repro.switch_profile(p, "study", force=True) and config.load(p).profile == "study"
    with pytest.raises(config.ConfigError, match="no profile 'huge'"):
        repro.switch_profile(p, "huge")

"""The pipeline runner's handling of stages paused by the time budget (no dvc involved)."""
import pytest

from regstudy import paths, repro


@pytest.fixture
def fake_root(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "root", lambda: tmp_path)
    return tmp_path


def test_paused_training_stages_exit_75_and_say_run_again(fake_root, capsys):
    stages = [("train@a", "echo 'TimeBudgetReached: r0-s0: paused after epoch 3' >&2; exit 1"),
              ("train@b", "echo 'TimeBudgetReached: r4-s0: paused after epoch 2' >&2; exit 1")]
    with pytest.raises(repro.Paused) as e:
        repro.run_level(stages, jobs=2)
    assert e.value.code == repro.EX_TEMPFAIL == 75
    err = capsys.readouterr().err
    assert "2 training run(s) paused at an epoch boundary (train@a, train@b), 0 not started" in err
    assert "Run the same command again" in err
    assert (fake_root / "runs" / "logs" / "train_a.log").exists()


def test_a_real_failure_is_not_mistaken_for_a_pause(fake_root):
    stages = [("train@a", "echo 'TimeBudgetReached' >&2; exit 1"), ("train@b", "echo boom >&2; exit 1")]
    with pytest.raises(SystemExit, match=r"failed: .*train@b \(see .*train_b.log\)") as e:
        repro.run_level(stages, jobs=2)
    assert not isinstance(e.value, repro.Paused)


def test_no_level_starts_after_the_deadline(fake_root, monkeypatch, capsys):
    monkeypatch.setenv("REGSTUDY_DEADLINE", "1")
    monkeypatch.setattr(repro, "stage_levels", lambda: [[("report", "echo never")]])
    monkeypatch.setattr(repro, "changed", lambda names: set(names))
    with pytest.raises(repro.Paused):
        repro.run_parallel(jobs=2)
    assert "time budget used up before 1 stage(s) could start (report)" in capsys.readouterr().err


def test_stages_waiting_for_a_slot_do_not_start_after_the_deadline(fake_root, monkeypatch, capsys):
    monkeypatch.setenv("REGSTUDY_DEADLINE", "1")
    with pytest.raises(repro.Paused):
        repro.run_level([("train@a", "touch started"), ("train@b", "touch started")], jobs=1)
    assert not (fake_root / "started").exists()
    assert "0 training run(s) paused at an epoch boundary (-), 2 not started (train@a, train@b)" in capsys.readouterr().err


def test_a_kernel_that_dies_on_start_up_is_started_again(fake_root, monkeypatch, capsys):
    # the first attempt fails the way a ZMQ port race does; the second succeeds
    cmd = ("if [ -e tried ]; then echo ok; else touch tried; "
           "echo 'RuntimeError: Kernel died before replying to kernel_info' >&2; exit 1; fi")
    commits = []
    monkeypatch.setattr(repro, "_run", lambda c, **k: commits.append(c))   # no dvc in this test
    repro.run_level([("fig03_fig07_norms", cmd)], jobs=1)
    assert "starting it again" in capsys.readouterr().out
    assert (fake_root / "runs" / "logs" / "fig03_fig07_norms.log").read_text().strip() == "ok"
    assert commits and commits[0][-1] == "fig03_fig07_norms"               # committed once it succeeded


def test_other_failures_are_not_retried(fake_root):
    with pytest.raises(SystemExit, match="failed: x"):
        repro.run_level([("x", "echo once >> count; echo 'ValueError: bad' >&2; exit 1")], jobs=1)
    assert (fake_root / "count").read_text() == "once\n"

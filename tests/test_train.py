import json
import math

import pytest
import torch

from regstudy import checkpoint, model as vit, train
from regstudy.config import run_config


def test_training_learns_and_logs_provenance(tiny_run, tmp_path):
    m = train.fit(tiny_run, tmp_path / "run", device="cpu")
    assert m["test_acc"] > 0.15 and m["final_train_loss"] < 2.2     # 10 classes: chance is 0.1, ln 10 = 2.30
    log = [json.loads(l) for l in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["type"] for r in log] == ["config"] + ["epoch"] * tiny_run.train.epochs + ["final"]
    cfg = log[0]
    assert cfg["git"]["commit"] and cfg["device"]["device"] == "cpu" and cfg["run"]["model"]["registers"] == 2
    ep = log[1]
    assert ep["images_per_s"] > 0 and len(ep["probe"]["blocks"]) == tiny_run.model.depth
    assert sum(ep["probe"]["blocks"][-1]["hist"]) == tiny_run.train.probe_images * tiny_run.model.num_patches
    ruled = [b["block"] for b in ep["probe"]["blocks"] if "own_rule" in b]
    assert ruled == [tiny_run.model.depth - 1]          # a study family: only the last block is ruled (Fig. 4b)
    assert log[-1]["train_seconds"] > 0


def test_same_seed_same_metrics_on_cpu(tiny_run, tmp_path):
    a = train.fit(tiny_run, tmp_path / "a", device="cpu")
    b = train.fit(tiny_run, tmp_path / "b", device="cpu")
    assert a == b


def test_resume_gives_the_same_final_metrics(tiny_run, tmp_path):
    full = train.fit(tiny_run, tmp_path / "full", device="cpu")
    part = train.fit(tiny_run, tmp_path / "part", device="cpu", stop_after_epoch=1)
    assert part == {"interrupted_after_epoch": 1}
    assert checkpoint.load(tmp_path / "part" / "checkpoint.pt")["epoch"] == 1
    resumed = train.fit(tiny_run, tmp_path / "part", device="cpu")
    assert resumed == full
    types = [json.loads(l)["type"] for l in (tmp_path / "part" / "log.jsonl").read_text().splitlines()]
    assert types == ["config", "epoch", "resume"] + ["epoch"] * (tiny_run.train.epochs - 1) + ["final"]


def test_nan_loss_stops_with_a_message_and_keeps_the_last_good_checkpoint(tiny_profile, tmp_path):
    import dataclasses
    cfg = run_config(tiny_profile, "main", registers=0, seed=0)
    good = cfg
    train.fit(good, tmp_path / "r", device="cpu", stop_after_epoch=1)
    before = (tmp_path / "r" / "checkpoint.pt").read_bytes()
    # same config, but poison the weights of the checkpoint so the next epoch's loss is NaN
    state = checkpoint.load(tmp_path / "r" / "checkpoint.pt")
    state["model"]["head.weight"] = torch.full_like(state["model"]["head.weight"], float("nan"))
    checkpoint.save(tmp_path / "r" / "checkpoint.pt", {k: v for k, v in state.items() if k != "format"})
    poisoned = (tmp_path / "r" / "checkpoint.pt").read_bytes()
    with pytest.raises(train.NonFiniteLoss, match=r"last good checkpoint \(after epoch 1\).*Lower train.lr"):
        train.fit(good, tmp_path / "r", device="cpu")
    assert (tmp_path / "r" / "checkpoint.pt").read_bytes() == poisoned != before   # not overwritten
    assert json.loads((tmp_path / "r" / "log.jsonl").read_text().splitlines()[-1])["type"] == "error"


def test_corrupt_checkpoint_is_a_clear_error(tiny_run, tmp_path):
    d = tmp_path / "r"
    train.fit(tiny_run, d, device="cpu", stop_after_epoch=1)
    raw = (d / "checkpoint.pt").read_bytes()
    (d / "checkpoint.pt").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(checkpoint.CheckpointError, match="corrupt or truncated.*Delete it"):
        train.fit(tiny_run, d, device="cpu")
    with pytest.raises(checkpoint.CheckpointError, match="corrupt"):
        train.load_trained(d)


def test_checkpoint_of_another_config_is_a_clear_error(tiny_profile, tiny_run, tmp_path):
    d = tmp_path / "r"
    train.fit(tiny_run, d, device="cpu", stop_after_epoch=1)
    other = run_config(tiny_profile, "main", registers=4, seed=0)
    with pytest.raises(checkpoint.CheckpointError, match=r"model.registers: checkpoint has 2, config has 4"):
        train.fit(other, d, device="cpu")


def test_loading_an_unfinished_or_mismatched_checkpoint(tiny_run, tmp_path):
    d = tmp_path / "r"
    train.fit(tiny_run, d, device="cpu", stop_after_epoch=1)
    with pytest.raises(checkpoint.CheckpointError, match="unfinished"):
        train.load_trained(d)
    train.fit(tiny_run, d, device="cpu")
    model, cfg = train.load_trained(d)
    assert cfg == tiny_run
    state = checkpoint.load(d / "checkpoint.pt")
    state["model"]["pos_embed"] = torch.zeros(1, 3, 16)
    checkpoint.save(d / "checkpoint.pt", {k: v for k, v in state.items() if k != "format"})
    with pytest.raises(checkpoint.CheckpointError, match="does not fit the model"):
        train.load_trained(d)


def test_checkpoints_load_with_weights_only(tiny_run, tmp_path):
    train.fit(tiny_run, tmp_path / "r", device="cpu")
    state = torch.load(tmp_path / "r" / "checkpoint.pt", weights_only=True)
    assert state["complete"] and state["epoch"] == tiny_run.train.epochs


def test_lr_schedule_warms_up_then_decays_to_zero():
    lrs = [train.lr_at(s, 100, 1.0, 10) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:])) and lrs[-1] < 0.01


def test_scene_runs_train(tiny_profile, tmp_path):
    """A scene run trains a model on the scene canvas: its weights move from their initialisation,
    every epoch is logged, and the metrics are the scene test set's."""
    cfg = run_config(tiny_profile, "scene", registers=1, seed=0)
    m = train.fit(cfg, tmp_path / "s", device="cpu")
    model, loaded = train.load_trained(tmp_path / "s")
    canvas = tiny_profile.scene.canvas
    assert m["family"] == "scene" and loaded.model.img_size == canvas
    assert tuple(model.patch_embed.img_size) == (canvas, canvas)
    torch.manual_seed(cfg.seed)
    init = vit.build(cfg.model)
    moved = [not torch.equal(a, b) for a, b in zip(init.state_dict().values(), model.state_dict().values())]
    assert sum(moved) > len(moved) // 2
    epochs = [json.loads(l) for l in (tmp_path / "s" / "log.jsonl").read_text().splitlines()
              if json.loads(l)["type"] == "epoch"]
    assert len(epochs) == tiny_profile.scene.epochs and all(math.isfinite(e["train_loss"]) for e in epochs)
    d = train.run_data(cfg, "cpu")
    assert m["test_acc"] == train.evaluate(model, d["x_test"], d["y_test"], cfg.train.eval_batch_size)["acc"]


def test_time_budget_pauses_with_a_checkpoint_and_resumes_to_the_same_metrics(tiny_run, tmp_path):
    import time as real_time
    from types import SimpleNamespace
    full = train.fit(tiny_run, tmp_path / "full", device="cpu")
    # a clock that jumps 100 s whenever the model is evaluated (once per epoch, on the validation split)
    now = [0.0]
    evaluate = train.evaluate

    def slow_evaluate(*a, **k):
        now[0] += 100.0
        return evaluate(*a, **k)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(train, "time", SimpleNamespace(time=lambda: now[0], perf_counter=real_time.perf_counter))
        mp.setattr(train, "evaluate", slow_evaluate)
        with pytest.raises(train.TimeBudgetReached, match=r"paused after epoch 1 of \d+.*Run the same command again"):
            train.fit(tiny_run, tmp_path / "part", device="cpu", deadline=150.0)   # epoch 2 would end at ~200 s
        state = checkpoint.load(tmp_path / "part" / "checkpoint.pt")
        assert state["epoch"] == 1 and not state["complete"]
        with pytest.raises(train.TimeBudgetReached, match="paused after epoch 1 .*before training started"):
            train.fit(tiny_run, tmp_path / "part", device="cpu", deadline=50.0)   # already past: no epoch runs
        assert checkpoint.load(tmp_path / "part" / "checkpoint.pt")["epoch"] == 1
    assert train.fit(tiny_run, tmp_path / "part", device="cpu") == full
    types = [json.loads(l)["type"] for l in (tmp_path / "part" / "log.jsonl").read_text().splitlines()]
    assert types[:6] == ["config", "epoch", "paused", "resume", "paused", "resume"] and types[-1] == "final"


def test_deadline_env_must_be_a_unix_time(monkeypatch):
    monkeypatch.setenv(train.DEADLINE_ENV, "tomorrow")
    with pytest.raises(ValueError, match="REGSTUDY_DEADLINE='tomorrow'.*--time-budget"):
        train.deadline_from_env()
    monkeypatch.setenv(train.DEADLINE_ENV, "1700000000")
    assert train.deadline_from_env() == 1.7e9
    monkeypatch.delenv(train.DEADLINE_ENV)
    assert train.deadline_from_env() is None


def test_norm_probe_rules_the_blocks_asked_for(tiny_run):
    model = vit.build(tiny_run.model)
    x = torch.randint(0, 256, (8, 1, 28, 28), dtype=torch.uint8)
    bg = torch.rand(8, tiny_run.model.num_patches) > 0.5
    every = train.norm_probe(model, x, bg, "every")["blocks"]
    last = train.norm_probe(model, x, bg, "last")["blocks"]
    assert all("own_rule" in b for b in every)
    assert ["own_rule" in b for b in last] == [False] * (len(last) - 1) + [True]
    assert last[-1]["own_rule"] == every[-1]["own_rule"]
    with pytest.raises(ValueError, match="rule_blocks"):
        train.norm_probe(model, x, bg, "first")

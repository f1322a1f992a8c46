"""`regstudy.status` (progress and ETA from the run logs) and `regstudy.pack` (results to bring home)."""
import json
import os
import tarfile
import time

import pytest

from regstudy import config, pack, paths, status


def log(profile, family, name, records, age=0.0):
    d = paths.run_dir(profile, family, name)
    d.mkdir(parents=True, exist_ok=True)
    p = d / "log.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in records))
    t = time.time() - age
    os.utime(p, (t, t))
    return d


def cfg_line(epochs):
    return {"type": "config", "run": {"family": "main", "train": {"epochs": epochs}, "scene": None}}


def test_status_reads_done_running_paused_stopped_and_not_started(study_root, capsys):
    study = config.load()
    ep = {"type": "epoch", "seconds": 10.0}
    for s in study.seeds:                                    # r0: done (3 x 2 epochs of 10 s)
        log("smoke", "main", f"r0-s{s}", [cfg_line(2), ep, ep, {"type": "final"}])
        log("smoke", "main", f"r1-s{s}", [cfg_line(5), ep, ep])                       # running: 3 epochs left
    log("smoke", "main", "r2-s0", [cfg_line(5), ep, {"type": "paused"}])
    log("smoke", "main", "r4-s0", [cfg_line(5), ep], age=3600)                        # stopped
    rep = status.report("smoke")
    state = {r["run"]: r["state"] for r in rep["runs"]}
    assert state["r0-s1"] == "done" and state["r1-s2"] == "running" and state["r2-s0"] == "paused"
    assert state["r4-s0"] == "stopped" and state["r8-s0"] == "not started"
    by = {r["run"]: r for r in rep["runs"]}
    assert by["r1-s0"]["left_s"] == 30.0 and by["r2-s0"]["left_s"] == 40.0
    assert by["r8-s0"]["left_s"] == 20.0                     # the median finished main family: 2 x 10 s
    # r1 (30) + r2 (40) + r4 (stopped: 20) + r8, r16 (20 each): the seeds of a family count once
    assert rep["eta_s"] == 30 + 40 + 20 + 20 + 20
    assert rep["counts"]["done"] == len(study.seeds)
    assert status.main(["--profile", "smoke"]) == 0
    assert "training left: ~2.2 min" in capsys.readouterr().out


def test_pack_brings_results_and_logs_home_without_checkpoints(study_root, tmp_path):
    res = study_root / "results" / "smoke"
    (res / "fig03").mkdir(parents=True)
    (res / "fig03" / "a.png").write_bytes(b"png" * 100)
    (res / "fig03" / "a.pdf").write_bytes(os.urandom(50_000))
    (res / "paper_vs_ours.md").write_text("| x |\n")
    d = log("smoke", "main", "r0-s0", [{"type": "final"}])
    (d / "metrics.json").write_text("{}")
    (d / "checkpoint.pt").write_bytes(b"x" * 1000)
    (d / "norms.npz").write_bytes(b"x" * 1000)
    info = pack.pack(res, tmp_path / "out.tar.gz")
    with tarfile.open(tmp_path / "out.tar.gz") as t:
        names = set(t.getnames())
    assert {"results/smoke/fig03/a.png", "results/smoke/fig03/a.pdf", "results/smoke/paper_vs_ours.md",
            "runs/smoke/main/r0/r0-s0/log.jsonl", "runs/smoke/main/r0/r0-s0/metrics.json"} == names
    assert info["pdfs_left_out"] == 0
    small = pack.pack(res, tmp_path / "small.tar.gz", limit=20_000)        # the random PDF does not fit
    assert small["pdfs_left_out"] == 1 and small["bytes"] <= 20_000
    with pytest.raises(pack.TooLarge, match="largest files"):
        pack.pack(res, tmp_path / "tiny.tar.gz", limit=10)
    assert pack.main([str(res), "--out", str(tmp_path / "cli.tar.gz")]) == 0


def test_planned_flops_count_every_run(study_root, capsys):
    from regstudy.model import train_flops_per_image
    study = config.load()
    prof = study.active
    f = status.planned_flops(study)
    one = train_flops_per_image(config.run_config(prof, "main", registers=0, seed=0).model)
    per_reg = [train_flops_per_image(config.run_config(prof, "main", registers=r, seed=0).model)
               for r in study.ablation_registers]
    assert f["main"] == pytest.approx(sum(per_reg) * len(study.seeds) * prof.train.train_images * prof.train.epochs)
    assert per_reg[0] == one and f["total"] == pytest.approx(f["main"] + f["size"] + f["scene"])
    assert status.main(["--profile", "smoke", "--plan", "1"]) == 0
    assert "training needs" in capsys.readouterr().out

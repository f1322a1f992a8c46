"""`python -m regstudy.status`: what a (detached) `make repro` has done, is doing and has left, with
an estimate of the time left, read from the run logs alone (safe while the pipeline runs).

Per run of the active profile (or `--profile`): done (a `final` line), paused (a `paused` line:
run the same command again), running (epoch lines, the log written in the last `--stale` seconds),
stopped (epoch lines, but the log has not moved for longer: a crash or a killed job), or not started.
The estimate: the seeds of one configuration train together, so each such group counts once: for a
group under way, its remaining epochs x its median epoch time; for one not started, the median
training time of the finished groups of its kind (main, size, scene); analyses are not counted.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from . import config, paths

STALE_S = 600   # a log untouched for this long, without a final line, belongs to a stopped run


def expected_runs(study) -> list:
    """(family kind, run name) of every run the pipeline trains for params.yaml's families."""
    return [(f.kind, name) for f in study.families.values() for name in f.run_names]


FULL_TRAIN = 55_000   # training images when train.train_images is 0 (60,000 minus the validation split)


def planned_flops(study) -> dict:
    """Training FLOPs of every run the profile trains (model.train_flops_per_image x images x epochs),
    by family kind, for an estimate of the time a GPU needs at a given sustained TFLOP/s."""
    from .model import train_flops_per_image
    out = {}
    for fam in study.families.values():
        cfg = config.run_config(study.active, fam.kind, registers=fam.registers, seed=0, size=fam.size)
        images = (cfg.train.train_images or FULL_TRAIN) * cfg.train.epochs
        out[fam.kind] = out.get(fam.kind, 0.0) + train_flops_per_image(cfg.model) * images * len(fam.seeds)
    out["total"] = sum(out.values())
    return out


def read(log: Path) -> list:
    return [json.loads(l) for l in log.read_text().splitlines() if l.strip()] if log.is_file() else []


def run_state(log: Path, now: float, stale_s: float = STALE_S) -> dict:
    recs = read(log)
    types = [r["type"] for r in recs]
    epochs = [r for r in recs if r["type"] == "epoch"]
    cfg = next((r for r in recs if r["type"] == "config"), None)
    total = cfg["run"]["train"]["epochs"] if cfg else None
    if cfg and cfg["run"]["family"] == "scene":
        total = cfg["run"]["scene"]["epochs"]
    state = ("not started" if not recs else "done" if "final" in types else "paused" if types[-1] == "paused"
             else "running" if now - log.stat().st_mtime < stale_s else "stopped")
    per_epoch = statistics.median([e["seconds"] for e in epochs]) if epochs else None
    left = (total - len(epochs)) * per_epoch if state in ("running", "paused") and per_epoch and total else None
    trained = sum(e["seconds"] for e in epochs)
    return {"state": state, "epoch": len(epochs), "epochs": total, "left_s": left, "trained_s": trained}


def report(profile: str, now: float | None = None, stale_s: float = STALE_S) -> dict:
    now = now or time.time()
    study = config.load()
    rows = []
    for family, name in expected_runs(study):
        rows.append({"family": family, "run": name,
                     **run_state(paths.run_dir(profile, family, name) / "log.jsonl", now, stale_s)})
    done_s = {}
    for r in rows:
        if r["state"] == "done":
            done_s.setdefault(r["family"], []).append(r["trained_s"])
    for r in rows:
        if r["state"] in ("not started", "stopped") and r["family"] in done_s:
            r["left_s"] = statistics.median(done_s[r["family"]])
    groups = {}
    for r in rows:
        if r["state"] != "done":
            groups.setdefault(paths.run_group(r["run"]), []).append(r["left_s"])
    known = [max(v for v in lefts if v is not None) for lefts in groups.values() if any(v is not None for v in lefts)]
    unknown = sum(all(v is None for v in lefts) for lefts in groups.values())
    counts = {s: sum(r["state"] == s for r in rows) for s in ("done", "running", "paused", "stopped", "not started")}
    return {"profile": profile, "runs": rows, "counts": counts, "eta_s": sum(known), "eta_unknown_groups": unknown}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default=None, help="default: the profile in params.yaml")
    ap.add_argument("--stale", type=float, default=STALE_S, help="seconds after which a silent log means stopped")
    ap.add_argument("--plan", type=float, metavar="TFLOPS", default=None,
                    help="instead: the profile's training FLOPs and the time they take at this sustained TFLOP/s")
    args = ap.parse_args(argv)
    current = config.load()
    profile = args.profile or current.profile
    if args.plan:   # any shipped profile can be planned; params.yaml's as it stands (edits included)
        f = planned_flops(current if profile == current.profile else config.preset(profile))
        print(f"{profile}: training needs {f['total']:.3g} FLOPs (" + ", ".join(
            f"{k} {v:.2g}" for k, v in f.items() if k != "total") + f"): {f['total'] / (args.plan * 1e12) / 60:.0f} min "
            f"at a sustained {args.plan:g} TFLOP/s (analyses not counted)")
        return 0
    rep = report(profile, stale_s=args.stale)
    for r in rep["runs"]:
        prog = f"epoch {r['epoch']}/{r['epochs']}" if r["epochs"] else ""
        left = f"~{r['left_s'] / 60:.1f} min left" if r["left_s"] is not None and r["state"] != "done" else ""
        print(f"{r['family']:6s} {r['run']:16s} {r['state']:12s} {prog:14s} {left}")
    c = rep["counts"]
    print(f"\n{profile}: {c['done']} done, {c['running']} running, {c['paused']} paused, {c['stopped']} stopped, "
          f"{c['not started']} not started; training left: ~{rep['eta_s'] / 60:.1f} min"
          + (f", {rep['eta_unknown_groups']} configuration(s) without an estimate yet" if rep["eta_unknown_groups"] else "")
          + ". Analyses and the report come after.")
    return 0


if __name__ == "__main__":
    sys.exit(main())

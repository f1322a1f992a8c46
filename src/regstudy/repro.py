"""`python -m regstudy.repro` (what `make repro` runs): pick the profile, then plain `dvc repro`.

* `--profile auto` (default): `study` when CUDA is available, else `smoke`. params.yaml holds the
  settings of one profile; when it holds another one, the chosen profile's file
  (src/regstudy/profiles/<name>.yaml) is copied over it, so that dvc.lock records what ran. Edits
  to params.yaml are never overwritten: switching away from an edited profile stops with a message
  (`--force` discards the edits).
* The core of the study comes first: `dvc repro` of the stages behind Figs. 3, 4a/b and 7 (the
  baseline and 4-register families), then `dvc repro` of everything else (ablation, model sizes,
  scenes, the other analyses, the report). Each family of runs (the seeds of one configuration)
  trains as one batched model in one DVC stage; DVC does the rest (order, locking, caching).
* A profile with `pretrained.only: true` (`pretrained`) trains nothing: it runs the `pretrained`
  stage alone (public timm checkpoints read out on sample photos).
* `--time-budget SECONDS`: for machines rented by the minute. Training pauses at the first epoch
  boundary that would pass the deadline, with checkpoints (`train.TimeBudgetReached`); no `dvc
  repro` starts after it; the command exits with status 75 (EX_TEMPFAIL) naming the paused runs and
  the stages not yet run. The same command again resumes them. Analyses are not paused: leave them
  a few minutes of the budget.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from . import config, paths, train

EX_TEMPFAIL = 75   # paused by the time budget: run again to resume
CORE = ["analysis@fig03_fig07_norms", "analysis@fig04ab_norms_layers_training"]   # baseline + 4 registers, all seeds


def switch_profile(params: Path, profile: str, force: bool = False) -> bool:
    """Make params.yaml hold `profile`: left as it is (edits included) when it already does, else
    replaced by the shipped profile. True if it changed."""
    target = config.preset_path(profile)
    current = config.load(params)
    if current.profile == profile:
        return False
    edited = current.profile not in config.presets() or current != config.preset(current.profile)
    if edited and not force:
        raise config.ConfigError(
            f"params.yaml holds profile {current.profile!r} with edits (it differs from "
            f"src/regstudy/profiles/{current.profile}.yaml); switching to {profile!r} would overwrite them. "
            f"Keep them (commit params.yaml, or save it as src/regstudy/profiles/<name>.yaml with "
            f"`profile: <name>`), then run again with --force, or pass --profile {current.profile}.")
    params.write_text(target.read_text())
    return True


def _env() -> dict:
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def dvc(*args) -> int:
    cmd = [sys.executable, "-m", "dvc", *args]
    print("+ dvc " + " ".join(args), flush=True)
    return subprocess.run(cmd, env=_env(), cwd=paths.root()).returncode


def paused_runs(profile: str, since: float) -> list:
    """Names of the runs whose log ends with a `paused` line written after `since`."""
    out = []
    for log in sorted(paths.runs_dir(profile).glob("*/*/*/log.jsonl")):
        lines = log.read_text().splitlines()
        if lines:
            last = json.loads(lines[-1])
            if last.get("type") == "paused" and log.stat().st_mtime >= since:
                out.append(log.parent.name)
    return out


def not_run() -> list:
    """Stages that `dvc status` reports as changed (not yet run, or out of date)."""
    r = subprocess.run([sys.executable, "-m", "dvc", "status", "--json"], env=_env(), cwd=paths.root(),
                       capture_output=True, text=True)
    try:
        return sorted(json.loads(r.stdout or "{}"))
    except json.JSONDecodeError:
        return []


ONLY = ["pretrained"]   # what a profile with pretrained.only: true runs (it trains nothing)


def run(profile: str, deadline: float | None, extra: list, only: bool = False) -> int:
    """`only`: the profile trains nothing (pretrained.only) and runs ONLY."""
    start = time.time()
    if extra:
        steps = [["repro", *extra]]
    elif only:
        steps = [["repro", *ONLY]]
    else:
        steps = [["repro", *CORE], ["repro"]]
    for args in steps:
        if deadline is not None and time.time() >= deadline:
            left = not_run()
            print(f"time budget used up: {len(left)} stage(s) not run ({', '.join(left)}). "
                  "Run the same command again to continue.", file=sys.stderr, flush=True)
            return EX_TEMPFAIL
        rc = dvc(*args)
        if rc:
            paused = paused_runs(profile, start)
            if paused:
                left = not_run()
                print(f"time budget reached: {len(paused)} training run(s) paused at an epoch boundary "
                      f"({', '.join(paused)}); {len(left)} stage(s) not run ({', '.join(left)}). "
                      "Run the same command again to resume.", file=sys.stderr, flush=True)
                return EX_TEMPFAIL
            print(f"error: dvc {' '.join(args)} failed (exit {rc})", file=sys.stderr)
            return rc
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="auto", help="auto (study with a GPU, smoke without) or the name of a profile in src/regstudy/profiles/")
    ap.add_argument("--time-budget", type=float, default=None, metavar="SECONDS",
                    help="pause training (with checkpoints) before this many seconds have passed; exit 75 if paused")
    ap.add_argument("--force", action="store_true", help="switch profile even if params.yaml has edits (lost)")
    ap.add_argument("dvc_args", nargs="*", help="passed to dvc repro instead of the default order (e.g. a stage name)")
    args = ap.parse_args(argv)
    cuda = torch.cuda.is_available()
    profile = args.profile if args.profile != "auto" else ("study" if cuda else "smoke")
    try:
        if config.preset(profile).active.require_gpu and not cuda:
            print(f"error: profile {profile!r} needs a CUDA GPU and none is visible. Run `make repro` "
                  "(PROFILE=auto picks smoke here), or move to a machine with a GPU.", file=sys.stderr)
            return 2
        if switch_profile(paths.params_file(), profile, args.force):
            print(f"params.yaml: now profile {profile} (from src/regstudy/profiles/{profile}.yaml)")
    except config.ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"profile: {profile} ({'GPU: ' + torch.cuda.get_device_name(0) if cuda else 'no GPU'})", flush=True)
    deadline = None
    if args.time_budget is not None:
        if args.time_budget <= 0:
            print("error: --time-budget must be a positive number of seconds", file=sys.stderr)
            return 2
        deadline = time.time() + args.time_budget
        os.environ[train.DEADLINE_ENV] = f"{deadline:.0f}"
    return run(profile, deadline, args.dvc_args, only=config.load().pretrained.only)


if __name__ == "__main__":
    sys.exit(main())

"""`python -m regstudy.repro` (what `make repro` runs): pick the profile, then `dvc repro`.

* `--profile auto` (default): `study` when CUDA is available, else `smoke`. The choice is written
  into params.yaml's `profile:` line (so dvc.lock records it) and printed.
* `--jobs N`: run up to N stages at once. The pipeline is cut into levels (stages whose inputs
  are all made by earlier levels: prepare; all training runs; all analyses; the report); in each
  level the stages that `dvc status` reports as changed run concurrently, with the exact commands
  of dvc.yaml, and are then recorded with `dvc commit`. A final `dvc repro` checks that everything
  is up to date. Several small ViTs share one GPU better than they run one after another, and on a
  CPU the notebooks' start-up (kernel, imports) overlaps. A stage whose Jupyter kernel dies while
  starting (kernels started together can race for a TCP port) ran nothing and is started again.
  Default: 4 with a GPU, else the number of CPU cores (at most 4). Every stage runs with one CPU thread per process (OMP_NUM_THREADS=1 in
  dvc.yaml), so the results do not depend on --jobs; `--jobs 1` is a plain `dvc repro`.
* `--time-budget SECONDS`: for machines lent a few minutes per command. Training runs that would
  pass the deadline write a checkpoint and pause (`train.TimeBudgetReached`), no stage starts after
  it, and the command exits with status 75 (EX_TEMPFAIL) saying which runs paused and which stages
  did not start. The same command again resumes them. Analyses are not paused: leave them a few
  minutes of the budget.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from . import config, paths, train

EX_TEMPFAIL = 75   # paused by the time budget: run again to resume


class Paused(SystemExit):
    pass

PROFILE_LINE = re.compile(r"^profile:\s*\S+(.*)$", re.M)


def set_profile(params: Path, profile: str) -> bool:
    """Rewrite the `profile:` line of params.yaml, keeping its comment. True if it changed."""
    text = params.read_text()
    m = PROFILE_LINE.search(text)
    if not m:
        raise config.ConfigError(f"{params} has no top-level `profile:` line")
    new = PROFILE_LINE.sub(lambda mm: f"profile: {profile}{mm.group(1)}", text, count=1)
    if new != text:
        params.write_text(new)
    return new != text


def _env() -> dict:
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def _run(cmd, **kw) -> None:
    print("+", " ".join(cmd) if isinstance(cmd, list) else cmd, flush=True)
    subprocess.run(cmd, check=True, env=_env(), cwd=paths.root(), **kw)


def stage_levels() -> list:
    """[[(name, cmd), ...], ...]: the pipeline's stages by level, in dvc.yaml order within a level."""
    import networkx as nx
    from dvc.repo import Repo
    with Repo(str(paths.root())) as repo:
        order = {s.addressing: i for i, s in enumerate(repo.index.stages)}
        gens = nx.topological_generations(repo.index.graph.reverse(copy=True))
        return [sorted(((s.addressing, s.cmd) for s in gen), key=lambda t: order[t[0]]) for gen in gens]


def changed(names: list) -> set:
    from dvc.repo import Repo
    with Repo(str(paths.root())) as repo:
        return set(repo.status(targets=names))


KERNEL_START_TRIES = 3
KERNEL_START_FAILURE = "Kernel died before replying to kernel_info"


def kernel_start_failed(log: Path) -> bool:
    """Did papermill fail because its kernel died on start-up, before any cell ran? Kernels started
    at the same moment can race for the same free TCP port (ZMQ 'Address already in use'); such a
    stage ran nothing, so starting it again is safe."""
    return KERNEL_START_FAILURE in log.read_text(errors="replace")


def run_level(todo: list, jobs: int) -> None:
    """Run the (name, cmd) stages concurrently, `dvc commit` those that succeeded. Past the deadline
    of a time budget, stages still waiting for a slot are not started."""
    deadline = train.deadline_from_env()

    def one(item):
        name, cmd = item
        log = paths.root() / "runs" / "logs" / f"{name.replace('@', '_')}.log"
        if deadline is not None and time.time() >= deadline:
            return name, None, log
        log.parent.mkdir(parents=True, exist_ok=True)
        print(f"  running {name} (log: {log.relative_to(paths.root())})", flush=True)
        for attempt in range(1, KERNEL_START_TRIES + 1):
            with open(log, "w") as fh:
                r = subprocess.run(cmd, shell=True, env=_env(), cwd=paths.root(), stdout=fh, stderr=subprocess.STDOUT)
            if not r.returncode or not kernel_start_failed(log) or attempt == KERNEL_START_TRIES:
                return name, r.returncode, log
            print(f"  {name}: the Jupyter kernel died while starting (no cell ran); starting it again", flush=True)

    with ThreadPoolExecutor(jobs) as pool:
        results = list(pool.map(one, todo))
    done = [n for n, rc, _ in results if rc == 0]
    if done:
        _run([sys.executable, "-m", "dvc", "commit", "-f", "-q", *done])
    waiting = [n for n, rc, _ in results if rc is None]
    failed = [(n, log) for n, rc, log in results if rc]
    paused = [n for n, log in failed if train.TimeBudgetReached.__name__ in log.read_text(errors="replace")]
    if len(paused) == len(failed) and (paused or waiting):
        print(f"time budget reached: {len(done)} stage(s) of this level finished, {len(paused)} training run(s) "
              f"paused at an epoch boundary ({', '.join(paused) or '-'}), {len(waiting)} not started "
              f"({', '.join(waiting) or '-'}). Run the same command again to resume.", file=sys.stderr, flush=True)
        raise Paused(EX_TEMPFAIL)
    if failed:
        raise SystemExit("failed: " + ", ".join(f"{n} (see {log})" for n, log in failed))


def run_parallel(jobs: int) -> None:
    deadline = train.deadline_from_env()
    for level in stage_levels():
        todo_names = changed([n for n, _ in level])
        todo = [(n, c) for n, c in level if n in todo_names]
        if todo and deadline is not None and time.time() >= deadline:
            print(f"time budget used up before {len(todo)} stage(s) could start ({', '.join(n for n, _ in todo)}). "
                  "Run the same command again to continue.", file=sys.stderr, flush=True)
            raise Paused(EX_TEMPFAIL)
        if todo:
            print(f"{len(todo)} stage(s), {jobs} at a time: {', '.join(n for n, _ in todo)}", flush=True)
            run_level(todo, jobs)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="auto", help="auto (study with a GPU, smoke without), smoke or study")
    ap.add_argument("--jobs", type=int, default=None, help="training runs at a time")
    ap.add_argument("--time-budget", type=float, default=None, metavar="SECONDS",
                    help="pause training (with checkpoints) before this many seconds have passed; exit 75 if paused")
    ap.add_argument("dvc_args", nargs="*", help="passed to dvc repro (e.g. a stage name)")
    args = ap.parse_args(argv)
    cuda = torch.cuda.is_available()
    profile = args.profile if args.profile != "auto" else ("study" if cuda else "smoke")
    study = config.load()
    if profile not in study.profiles:
        print(f"error: profile {profile!r} is not in params.yaml ({sorted(study.profiles)})", file=sys.stderr)
        return 2
    if study.profiles[profile].require_gpu and not cuda:
        print(f"error: profile {profile!r} needs a CUDA GPU and none is visible. Run `make repro` "
              "(PROFILE=auto picks smoke here), or move to a machine with a GPU.", file=sys.stderr)
        return 2
    if set_profile(paths.params_file(), profile):
        print(f"params.yaml: profile set to {profile}")
    print(f"profile: {profile} ({'GPU: ' + torch.cuda.get_device_name(0) if cuda else 'no GPU'})", flush=True)
    jobs = args.jobs or (4 if cuda else min(4, os.cpu_count() or 1))
    if args.time_budget is not None:
        if args.time_budget <= 0:
            print("error: --time-budget must be a positive number of seconds", file=sys.stderr)
            return 2
        os.environ[train.DEADLINE_ENV] = f"{time.time() + args.time_budget:.0f}"
        if jobs == 1 or args.dvc_args:
            print("note: with --jobs 1 or stage names, a paused run shows as a failed dvc stage; "
                  "run the same command again to resume it", flush=True)
    try:
        if jobs > 1 and not args.dvc_args:
            run_parallel(jobs)
        _run([sys.executable, "-m", "dvc", "repro", *args.dvc_args])
    except Paused as e:
        return e.code
    except subprocess.CalledProcessError as e:
        print(f"error: {' '.join(map(str, e.cmd))} failed (exit {e.returncode})", file=sys.stderr)
        return e.returncode or 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

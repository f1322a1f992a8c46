"""Every path of the study, resolved from the repository root (never from the notebook's cwd)."""
from __future__ import annotations

import os
from pathlib import Path


def _looks_like_root(p: Path) -> bool:
    return (p / "dvc.yaml").is_file() and (p / "params.yaml").is_file()


def repo_root() -> Path:
    """The study's root: $REGSTUDY_ROOT, else the checkout holding this package, else the first
    parent of the current directory that holds dvc.yaml and params.yaml."""
    env = os.environ.get("REGSTUDY_ROOT")
    if env:
        root = Path(env).resolve()
        if not _looks_like_root(root):
            raise FileNotFoundError(f"REGSTUDY_ROOT={env} holds no dvc.yaml and params.yaml; "
                                    "point it at the study's checkout or unset it.")
        return root
    here = Path(__file__).resolve()
    for p in [here.parents[2], *Path.cwd().resolve().parents, Path.cwd().resolve()]:
        if _looks_like_root(p):
            return p
    raise FileNotFoundError("cannot find the study's root (a folder with dvc.yaml and params.yaml): "
                            "run from inside the checkout or set REGSTUDY_ROOT.")


ROOT = None  # resolved lazily so that importing the package never fails


def root() -> Path:
    global ROOT
    if ROOT is None:
        ROOT = repo_root()
    return ROOT


def params_file() -> Path:
    return root() / "params.yaml"


def raw_dir() -> Path:
    return root() / "data" / "raw"


def prepared_dir() -> Path:
    return root() / "data" / "prepared"


def runs_dir(profile: str) -> Path:
    return root() / "runs" / profile


def run_group(name: str) -> str:
    """The family a run belongs to (its name without the seed): r4-s0 -> r4, size-b-s1 -> size-b."""
    return name.rsplit("-s", 1)[0]


def run_dir(profile: str, family: str, name: str) -> Path:
    """runs/<profile>/<family>/<group>/<name>: the seeds of one configuration share a folder, the
    output of the DVC stage that trains them together."""
    return runs_dir(profile) / family / run_group(name) / name


def results_dir(profile: str) -> Path:
    return root() / "results" / profile


def stage_dir(profile: str, stage: str, output_dir: str | Path = "") -> Path:
    """results/<profile>/<stage>/: the figures, tables and paper comparisons of one notebook; or
    `output_dir` (relative to the root), where a notebook run by hand writes without touching the
    tracked results."""
    d = (root() / output_dir) if str(output_dir) else results_dir(profile) / stage
    d.mkdir(parents=True, exist_ok=True)
    return d


REFERENCE_DIR = Path(__file__).resolve().parent / "reference"

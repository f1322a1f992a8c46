"""Provenance like DINO's: every run writes JSON lines with its config, git commit, device and metrics."""
from __future__ import annotations

import json
import math
import platform
import socket
import subprocess
import time
from pathlib import Path

import torch

from . import paths


def git_commit() -> dict:
    def _git(*args):
        try:
            return subprocess.run(["git", *args], cwd=paths.root(), capture_output=True, text=True,
                                  timeout=10).stdout.strip()
        except Exception:
            return ""
    return {"commit": _git("rev-parse", "HEAD") or "unknown",
            "dirty": bool(_git("status", "--porcelain", "--untracked-files=no"))}


def device_info(device: torch.device | str | None = None) -> dict:
    device = torch.device(device) if device is not None else pick_device()
    info = {"device": str(device), "torch": torch.__version__, "python": platform.python_version(),
            "host": socket.gethostname(), "cpu": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads()}
    try:
        import timm
        info["timm"] = timm.__version__
    except Exception:
        pass
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info


def describe_device(info: dict) -> str:
    if info.get("gpu"):
        return info["gpu"]
    t = info.get("threads", "?")
    return f"CPU ({t} thread{'' if t == 1 else 's'}, {info.get('cpu', '')})"


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _clean(v):
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    return v


class RunLog:
    """Append-only JSON-lines log: one object per line, each with a `type` and a wall-clock `time`."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, type_: str, **fields) -> dict:
        rec = {"type": type_, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **_clean(fields)}
        with open(self.path, "a") as fh:
            fh.write(json.dumps(rec) + "\n")
        return rec

    def records(self, type_: str | None = None) -> list:
        return read_jsonl(self.path, type_)

    def truncate_after_epoch(self, epoch: int) -> None:
        """Keep the log consistent with a checkpoint taken after `epoch` epochs (for resume)."""
        if not self.path.exists():
            return
        keep = [r for r in read_jsonl(self.path)
                if r["type"] != "final" and not (r["type"] == "epoch" and r["epoch"] > epoch)]
        with open(self.path, "w") as fh:
            for r in keep:
                fh.write(json.dumps(r) + "\n")


def read_jsonl(path: Path, type_: str | None = None) -> list:
    out = []
    with open(path) as fh:
        for line in fh:
            if line.strip():
                r = json.loads(line)
                if type_ is None or r.get("type") == type_:
                    out.append(r)
    return out

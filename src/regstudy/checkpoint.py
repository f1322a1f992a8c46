"""Checkpoints: atomic writes, `weights_only=True` loads, and clear errors for bad files."""
from __future__ import annotations

import os
from pathlib import Path

import torch

FORMAT = 1


class CheckpointError(RuntimeError):
    """A checkpoint is unreadable, of another format, or of another configuration."""


def save(path: Path, state: dict) -> None:
    """Write `state` (tensors, numbers, strings, lists and dicts only) atomically: a crash while
    saving leaves the previous checkpoint in place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"format": FORMAT, **state}, tmp)
    os.replace(tmp, path)


def load(path: Path, map_location="cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}: train the run first (dvc repro, or the train notebook)")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        raise CheckpointError(
            f"checkpoint {path} is corrupt or truncated ({type(e).__name__}: {str(e)[:200]}). "
            "Delete it (and its run folder) and retrain: dvc repro, or run the train notebook again.") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a checkpoint of this study (format {FORMAT}); "
                              "delete it and retrain.")
    return state


def _diff(a, b, prefix=""):
    out = []
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            out += _diff(a.get(k, "<missing>"), b.get(k, "<missing>"), f"{prefix}{k}.")
    elif a != b:
        out.append(f"{prefix[:-1]}: checkpoint has {a!r}, config has {b!r}")
    return out


def check_config(path: Path, stored: dict, expected: dict, keys=("model", "train", "scene", "seed", "family")) -> None:
    """Raise CheckpointError listing every difference between a checkpoint's stored run config and
    the config it is being loaded for."""
    diffs = []
    for k in keys:
        diffs += _diff(stored.get(k), expected.get(k), f"{k}.")
    if diffs:
        raise CheckpointError(
            f"checkpoint {path} was trained with another configuration:\n  " + "\n  ".join(diffs) +
            "\nEither restore those values in params.yaml, or delete the run folder "
            f"{Path(path).parent} to train it again with the new ones.")


def stack_optimizer_states(states: list) -> dict:
    """One optimiser state for stacked parameters from the single-run states of its models (same
    parameter order): per-parameter tensors stacked on a new leading axis, the step kept."""
    out = {"param_groups": states[0]["param_groups"], "state": {}}
    for idx, st in states[0]["state"].items():
        out["state"][idx] = {k: (v if k == "step" else torch.stack([s["state"][idx][k] for s in states]))
                             for k, v in st.items()}
    return out


def slice_optimizer_state(state: dict, models: int) -> list:
    """The inverse of stack_optimizer_states: one single-run optimiser state per model."""
    out = []
    for m in range(models):
        out.append({"param_groups": state["param_groups"],
                    "state": {idx: {k: (v.clone() if k == "step" else v[m].clone()) for k, v in st.items()}
                              for idx, st in state["state"].items()}})
    return out


"""What DVC tracks of a trained family, outside its cached run folders: `dvc metrics show` reads
results/<profile>/metrics/<family>.json (mean and spread over its seeds) and `dvc plots show` the
per-epoch curves in results/<profile>/curves/<family>/<run>.csv (declared in dvc.yaml)."""
from __future__ import annotations

import csv
import json

import numpy as np

from . import paths

CURVE_COLUMNS = ("epoch", "train_loss", "val_loss", "val_acc", "bg_ratio", "outlier_share")


def curve_rows(epochs: list) -> list:
    """One row per epoch of a run's log: losses, accuracy and, at the last block on the fixed probe
    batch, max / median norm of the background patches (`bg_ratio`) and the share of patch tokens
    that the epoch's own outlier rule flags (`outlier_share`)."""
    rows = []
    for r in epochs:
        last = r["probe"]["blocks"][-1]
        ratio = last["bg_max"] / last["bg_median"] if last.get("bg_median") else None
        rows.append({"epoch": r["epoch"], "train_loss": r["train_loss"], "val_loss": r["val_loss"],
                     "val_acc": r["val_acc"], "bg_ratio": ratio,
                     "outlier_share": last.get("own_rule", {}).get("outlier_frac")})
    return rows


def family_metrics(trained: list, tokens: list) -> dict:
    """Mean and sd over the family's seeds of test accuracy and of the outlier share (last block,
    the run's own rule), and the number of seeds."""
    def spread(values):
        v = np.asarray(values, dtype=float)
        return {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if len(v) > 1 else 0.0}
    return {"seeds": len(trained),
            "test_acc": spread([t["metrics"]["test_acc"] for t in trained]),
            "outlier_frac": spread([tok["outlier_frac"] for tok in tokens])}


def write_family(profile: str, family: str, trained: list, tokens: list) -> dict:
    """Write the family's metrics file and one curve file per run; returns the metrics."""
    metrics = family_metrics(trained, tokens)
    mfile = paths.results_dir(profile) / "metrics" / f"{family}.json"
    mfile.parent.mkdir(parents=True, exist_ok=True)
    mfile.write_text(json.dumps(metrics, indent=1) + "\n")
    cdir = paths.results_dir(profile) / "curves" / family
    cdir.mkdir(parents=True, exist_ok=True)
    for t in trained:
        with open(cdir / f"{t['metrics']['name']}.csv", "w", newline="") as fh:
            w = csv.DictWriter(fh, CURVE_COLUMNS)
            w.writeheader()
            w.writerows(curve_rows(t["epochs"]))
    return metrics

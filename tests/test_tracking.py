"""What DVC tracks of a family: its metrics (mean and sd over seeds) and per-epoch curves."""
import csv
import json

import pytest

from regstudy import paths, tracking


def epoch(n, loss, acc, bg_max, bg_median, frac):
    return {"epoch": n, "train_loss": loss, "val_loss": loss + 0.1, "val_acc": acc,
            "probe": {"blocks": [{"block": 0}, {"block": 1, "bg_max": bg_max, "bg_median": bg_median,
                                                "own_rule": {"outlier_frac": frac}}]}}


def trained(name, acc, epochs):
    return {"metrics": {"name": name, "test_acc": acc}, "epochs": epochs}


def test_curves_read_the_last_block_and_metrics_summarise_the_seeds(study_root):
    runs = [trained("r0-s0", 0.80, [epoch(1, 2.0, 0.5, 6.0, 2.0, 0.0), epoch(2, 1.0, 0.7, 12.0, 2.0, 0.02)]),
            trained("r0-s1", 0.90, [epoch(1, 2.2, 0.4, 3.0, 1.0, 0.0), epoch(2, 1.2, 0.6, 3.0, 1.0, 0.0)])]
    tokens = [{"outlier_frac": 0.02}, {"outlier_frac": 0.0}]
    m = tracking.write_family("smoke", "r0", runs, tokens)
    assert m["seeds"] == 2 and m["test_acc"]["mean"] == pytest.approx(0.85)
    assert m["test_acc"]["sd"] == pytest.approx(0.0707107, rel=1e-5) and m["outlier_frac"]["mean"] == pytest.approx(0.01)
    res = paths.results_dir("smoke")
    assert json.loads((res / "metrics" / "r0.json").read_text()) == m
    with open(res / "curves" / "r0" / "r0-s0.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [float(r["bg_ratio"]) for r in rows] == [3.0, 6.0]          # max / median, last block
    assert [float(r["outlier_share"]) for r in rows] == [0.0, 0.02]
    assert tuple(rows[0]) == tracking.CURVE_COLUMNS


def test_one_seed_has_no_spread_and_a_block_without_background_has_no_ratio():
    e = epoch(1, 1.0, 0.5, 1.0, 1.0, 0.0)
    del e["probe"]["blocks"][-1]["bg_median"]
    assert tracking.curve_rows([e])[0]["bg_ratio"] is None
    m = tracking.family_metrics([trained("x-s0", 0.5, [e])], [{"outlier_frac": 0.1}])
    assert m["test_acc"] == {"mean": 0.5, "sd": 0.0} and m["seeds"] == 1

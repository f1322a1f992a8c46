"""Trained runs: their evaluation images, the token analysis written beside each checkpoint, and
loaders that gather runs for the figures.

Each finished run folder ``runs/<profile>/<family>/<name>/`` holds, after the train notebook:
``checkpoint.pt``, ``log.jsonl``, ``metrics.json`` (from training) and ``tokens.json`` +
``norms.npz`` (from :func:`analyse_tokens`: the norms of every token at every block for the
evaluation images, the outlier rule fitted at the last block and where the outliers sit).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import data, extract, norms, paths, provenance, scenes
from .config import Profile, RunConfig, run_name
from .train import TEST_SCENE_SEED, VAL_SCENE_SEED, load_trained

TRAIN_SCENE_SEED = 776    # fixed scenes made from training items (for probes on scene models)


@dataclass
class EvalSet:
    x: torch.Tensor            # uint8 B x 1 x H x W
    y: torch.Tensor            # B
    background: torch.Tensor   # B x N bool
    boxes: torch.Tensor | None = None   # B x 4 (scenes only)


def eval_set(cfg: RunConfig, n: int, split: str = "test") -> EvalSet:
    """The first `n` images of `split` as the run sees them (Fashion-MNIST, or the fixed scenes)."""
    raw = data.load_prepared()
    xs, ys = raw[f"x_{split}"], raw[f"y_{split}"]
    n = min(n, len(ys))
    if cfg.family == "scene":
        seed = {"test": TEST_SCENE_SEED, "val": VAL_SCENE_SEED, "train": TRAIN_SCENE_SEED}[split]
        sc = scenes.fixed(xs, ys, cfg.scene, n, seed)
        bg = ~scenes.box_patch_mask(sc["boxes"], cfg.scene.canvas, cfg.scene.patch_size)
        return EvalSet(sc["x"], sc["y"], bg, sc["boxes"])
    x = data.to_device(xs[:n], "cpu")
    return EvalSet(x, torch.from_numpy(ys[:n].astype(np.int64)),
                   data.background_patches(x, cfg.model.patch_size))


def analyse_tokens(run_dir: Path, profile: Profile, device=None) -> dict:
    """Measure a finished run's tokens on the evaluation images; write tokens.json and norms.npz."""
    run_dir = Path(run_dir)
    device = device or provenance.pick_device()
    model, cfg = load_trained(run_dir, device)
    n = profile.scene.test_scenes if cfg.family == "scene" else profile.analysis.eval_images
    ev = eval_set(cfg, n)
    tn = extract.token_norms(model, ev.x, device=device)
    depth = tn["patch"].shape[0]
    rule = norms.fit_outlier_rule(tn["patch"][-1], ev.background)
    summary = norms.outlier_summary(tn["patch"][-1], ev.background, rule)
    flags = rule.flag(tn["patch"][-1])
    per_block = []
    for b in range(depth):
        pn = tn["patch"][b]
        r = norms.fit_outlier_rule(pn, ev.background)
        per_block.append({"block": b, **norms.stats(pn.numpy()), "hist": norms.log_hist(pn.numpy()),
                          "own_rule": norms.outlier_summary(pn, ev.background, r),
                          "cls_norm_median": float(tn["cls"][b].median()),
                          "reg_norm_median": float(tn["registers"][b].median()) if tn["registers"].shape[-1] else None,
                          "bg_median": float(pn[ev.background].median()) if ev.background.any() else None,
                          "fg_median": float(pn[~ev.background].median()) if (~ev.background).any() else None})
    last = tn["patch"][-1]
    bg_median = float(last[ev.background].median()) if ev.background.any() else float(last.median())
    result = {"name": cfg.name, "family": cfg.family, "registers": cfg.model.registers, "seed": cfg.seed,
              "profile": profile.name, "smoke": profile.smoke, "n_images": int(len(ev.y)),
              "n_patches": int(last.shape[1]), "rule": rule.to_dict(), **summary,
              "norm_stats": norms.stats(last.numpy()),
              "register_norm_median": float(tn["registers"][-1].median()) if cfg.model.registers else None,
              "register_norm_max": float(tn["registers"][-1].max()) if cfg.model.registers else None,
              "cls_norm_median": float(tn["cls"][-1].median()),
              # magnitude of the artifact: median outlier norm / median background norm (Fig. 3)
              "norm_ratio": float(last[flags].median()) / bg_median if flags.any() else None,
              "tracked": norms.track_through_depth(tn["patch"], flags, ev.background),
              "per_block": per_block}
    (run_dir / "tokens.json").write_text(json.dumps(result, indent=1) + "\n")
    # float32: the analyses re-apply thresholds to these norms, and float16 would move tokens across them
    np.savez_compressed(run_dir / "norms.npz", patch=tn["patch"].float().numpy(),
                        embed_patch=tn["embed_patch"].float().numpy(), cls=tn["cls"].float().numpy(),
                        registers=tn["registers"].float().numpy(), background=ev.background.numpy(),
                        y=ev.y.numpy())
    return result


# --------------------------------------------------------------------------------------------
# gathering runs for figures
# --------------------------------------------------------------------------------------------
def run_dir(profile: str, family: str, registers: int = 0, seed: int = 0, size: str | None = None) -> Path:
    return paths.run_dir(profile, family, run_name(family, registers, seed, size))


def load_run(path: Path) -> dict:
    """metrics.json + tokens.json + the final log line of one finished run folder."""
    path = Path(path)
    missing = [f for f in ("metrics.json", "tokens.json", "log.jsonl") if not (path / f).is_file()]
    if missing:
        raise FileNotFoundError(f"run {path} lacks {missing}: train it first (dvc repro)")
    final = provenance.read_jsonl(path / "log.jsonl", "final")
    if not final:
        raise FileNotFoundError(f"run {path} did not finish (no final line in log.jsonl): dvc repro")
    cfg = provenance.read_jsonl(path / "log.jsonl", "config")[0]
    return {"dir": path, "metrics": json.loads((path / "metrics.json").read_text()),
            "tokens": json.loads((path / "tokens.json").read_text()), "final": final[-1],
            "config": cfg, "epochs": provenance.read_jsonl(path / "log.jsonl", "epoch")}


def load_norms(path: Path) -> dict:
    with np.load(Path(path) / "norms.npz") as z:
        return {k: torch.from_numpy(z[k]) for k in z.files}


def share_at_baseline_threshold(run: dict, base: dict) -> float:
    """Share of `run`'s last-block patch tokens above the same-seed baseline's threshold
    (norms.baseline_threshold_for); 0 when the baseline has no outliers."""
    thr = norms.baseline_threshold_for(base["tokens"]["rule"], run["tokens"]["rule"])
    if thr is None:
        return 0.0
    return float((load_norms(run["dir"])["patch"][-1] > thr).float().mean())


def summary_row(run: dict) -> dict:
    """One entry of norms_summary.json / ablation_summary.json."""
    t, m, f = run["tokens"], run["metrics"], run["final"]
    return {"name": m["name"], "family": m["family"], "registers": m["registers"], "seed": m["seed"],
            "epochs": m["epochs"], "test_acc": m["test_acc"], "outlier_frac": t["outlier_frac"],
            "outlier_bg_share": t["outlier_bg_share"], "threshold": t["threshold"],
            "found": t["threshold"] is not None, "norm_ratio": t.get("norm_ratio"),
            "background_frac": t["background_frac"], "bimodal": t["bimodal"], "ashman_d": t["ashman_d"], "n_outliers": t["n_outliers"],
            "n_tokens": t["n_tokens"], "n_images": t["n_images"],
            "device": provenance.describe_device(f["device"]), "train_seconds": f["train_seconds"],
            "images_per_s": f["images_per_s"], "smoke": t["smoke"]}


def gather(profile: str, family: str, *, registers=(0,), seeds=(0,), size: str | None = None) -> list:
    """load_run() of every (registers, seed) run of a family, in that order; a missing run is an error."""
    return [load_run(run_dir(profile, family, r, s, size)) for r in registers for s in seeds]


def run_provenance(run_list: list) -> str:
    """'N runs, seeds [..], on <device>, X min of training in all' for captions and reports."""
    devices = sorted({provenance.describe_device(r["final"]["device"]) for r in run_list})
    seeds = sorted({r["metrics"]["seed"] for r in run_list})
    secs = sum(r["final"]["train_seconds"] for r in run_list)
    return (f"{len(run_list)} runs, seeds {seeds}, trained on {', '.join(devices)}, "
            f"{secs / 60:.1f} min of training in all")

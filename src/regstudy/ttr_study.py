"""Test-time registers on the study's own runs: a baseline, before and after, beside the model
trained with registers (notebooks/ttr_test_time_registers.ipynb). The neurons are found on
validation images and everything is measured on test images, the same for every model."""
from __future__ import annotations

import numpy as np
import torch

from . import attention_maps, data, discovery, extract, norms, runs, test_time_registers as ttr, train


def _accuracy(model, prof, device) -> float:
    raw = data.load_prepared()
    n = prof.train.eval_images or len(raw["y_test"])
    x = data.to_device(raw["x_test"][:n], device)
    y = torch.from_numpy(raw["y_test"][:n].astype(np.int64)).to(device)
    return train.evaluate(model, x, y, prof.train.eval_batch_size)["acc"]


def on_run(run: dict, prof, device="cpu") -> dict:
    """One baseline run (runs.load_run), before and after a test-time register: the neurons, the
    share of patch tokens above the baseline's own threshold, the extra token's norms, test
    accuracy, and the maps of the first `map_images` test images."""
    A = prof.analysis
    model, cfg = train.load_trained(run["dir"], device)
    rule = norms.as_rule(run["tokens"]["rule"])     # the run's own rule: the same threshold everywhere
    found_on = runs.eval_set(cfg, A.ttr_images, split="val")
    found = ttr.find(model, found_on.x.to(device), A.ttr_top_k, A.ttr_max_layer, rule=rule)
    ev = runs.eval_set(cfg, A.eval_images)
    before = runs.load_norms(run["dir"])["patch"][-1]
    n = A.map_images
    out = {"seed": cfg.seed, "threshold": rule.threshold, "n_neurons": len(found["neurons"]),
           "neurons": [{"block": n_.block + 1, "neuron": n_.index, "score": n_.score} for n_ in found["neurons"]],
           "base_frac": float(rule.flag(before).float().mean()),
           "base_images_with": float(rule.flag(before).any(1).float().mean()), "acc_base": _accuracy(model, prof, device),
           "before": before, "background": ev.background, "x": ev.x[:n],
           "cls_before": attention_maps.maps(model, ev.x[:n], device=device)["cls"]}
    with ttr.attach(model, found["neurons"]):
        tn = extract.token_norms(model, ev.x, device=device)
        out.update(after=tn["patch"][-1], extra_norm=tn["registers"][-1][:, -1], acc_ttr=_accuracy(model, prof, device),
                   cls_after=attention_maps.maps(model, ev.x[:n], device=device)["cls"])
    out["ttr_frac"] = float(rule.flag(out["after"]).float().mean())
    out["extra_above"] = float(rule.flag(out["extra_norm"]).float().mean())   # share of images whose extra token is above the threshold
    return out


def on_scenes(scene_run: dict, prof, device="cpu", trained: dict | None = None) -> dict:
    """LOST CorLoc of one scene baseline on the test scenes, before and after a test-time register
    (neurons found on validation scenes), and of the same-seed model `trained` with registers."""
    A, S = prof.analysis, prof.scene
    model, cfg = train.load_trained(scene_run["dir"], device)
    rule = norms.as_rule(scene_run["tokens"]["rule"])
    val = runs.eval_set(cfg, A.ttr_images, split="val")
    found = ttr.find(model, val.x.to(device), A.ttr_top_k, A.ttr_max_layer, rule=rule)
    ev = runs.eval_set(cfg, S.test_scenes)
    kw = dict(k=A.lost_k, feature=A.lost_feature, bias=A.lost_bias, device=device)
    before = discovery.on_scenes(model, ev, rule, runs.load_norms(scene_run["dir"])["patch"][-1], **kw)
    with ttr.attach(model, found["neurons"]):
        after_norms = extract.token_norms(model, ev.x, device=device)["patch"][-1]
        after = discovery.on_scenes(model, ev, rule, after_norms, **kw)
    out = {"seed": cfg.seed, "corloc_base": before["corloc"], "corloc_ttr": after["corloc"],
           "scene_base_frac": before["outlier_frac"], "scene_ttr_frac": after["outlier_frac"]}
    if trained is not None:
        reg, _ = train.load_trained(trained["dir"], device)
        out["corloc_trained_registers"] = discovery.on_scenes(
            reg, ev, norms.as_rule(trained["tokens"]["rule"]), runs.load_norms(trained["dir"])["patch"][-1], **kw)["corloc"]
    return out

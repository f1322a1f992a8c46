"""Training a family of runs (the seeds of one configuration) as one batched model, or one run
alone: data held on the device, batched augmentation there, AdamW with warm-up then
cosine, label smoothing, gradient clipping, bf16 autocast and optional torch.compile on CUDA,
checkpoints with resume, a NaN guard, a time budget, per-epoch token-norm statistics of a
fixed probe batch, and a progress bar of each epoch's steps (regstudy.progress).

Time budget: when the environment holds ``REGSTUDY_DEADLINE`` (a Unix time, set by
``python -m regstudy.repro --time-budget SECONDS``), a run that would not finish its next epoch
before it writes a checkpoint and stops with `TimeBudgetReached`; running it again resumes there.
This is how the study fits into machines rented for a few minutes per command.

Outputs in the run folder:
* ``checkpoint.pt``: model + optimiser + progress (loads with ``weights_only=True``);
* ``log.jsonl``: provenance (config, git commit, device) then one line per epoch, then a final line;
* ``metrics.json``: the run's deterministic results (no timings), for DVC and the analyses.
"""
from __future__ import annotations

import functools
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import batched, checkpoint, data, model as vit, norms, progress, provenance, scenes
from .config import RunConfig, TrainConfig

SUBSET_SEED = 12345       # which training images a `train_images` subset keeps (same for all runs)
VAL_SCENE_SEED = 777      # the fixed validation scenes
TEST_SCENE_SEED = 779     # the fixed test scenes (LOST and accuracy)


class NonFiniteLoss(FloatingPointError):
    """The training loss became NaN or infinite."""


class TimeBudgetReached(RuntimeError):
    """Training paused (checkpoint written) because the next epoch would pass the deadline."""


DEADLINE_ENV = "REGSTUDY_DEADLINE"


def deadline_from_env() -> float | None:
    raw = os.environ.get(DEADLINE_ENV, "").strip()
    if not raw:
        return None
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"{DEADLINE_ENV}={raw!r} is not a Unix time in seconds; unset it, or set it with "
                         "python -m regstudy.repro --time-budget SECONDS") from None


def lr_at(step: int, total: int, base: float, warmup: int) -> float:
    """Linear warm-up over `warmup` steps, then cosine decay to 0 at `total`."""
    if warmup and step < warmup:
        return base * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return base * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


# --------------------------------------------------------------------------------------------
# data of a run
# --------------------------------------------------------------------------------------------
def run_data(cfg: RunConfig, device) -> dict:
    """Tensors of the run on `device`: uint8 images, labels, the probe batch and its background mask."""
    raw = data.load_prepared()
    n = cfg.train.train_images or len(raw["y_train"])
    if n > len(raw["y_train"]):
        raise ValueError(f"train.train_images={n} exceeds the {len(raw['y_train'])} training images")
    keep = np.sort(np.random.default_rng(SUBSET_SEED).permutation(len(raw["y_train"]))[:n])
    out = {"x_train": data.to_device(raw["x_train"][keep], device),
           "y_train": torch.from_numpy(raw["y_train"][keep].astype(np.int64)).to(device)}
    P = cfg.train.probe_images
    n_val = min(cfg.train.eval_images or len(raw["y_val"]), len(raw["y_val"]))
    n_test = min(cfg.train.eval_images or len(raw["y_test"]), len(raw["y_test"]))
    if cfg.family == "scene":
        sc = cfg.scene
        val = scenes.fixed(raw["x_val"], raw["y_val"], sc, n_val, VAL_SCENE_SEED)
        test = scenes.fixed(raw["x_test"], raw["y_test"], sc, n_test, TEST_SCENE_SEED)
        out.update(x_val=val["x"].to(device), y_val=val["y"].to(device),
                   x_test=test["x"].to(device), y_test=test["y"].to(device))
        out["x_probe"] = out["x_val"][:P]
        out["bg_probe"] = ~scenes.box_patch_mask(val["boxes"][:P], sc.canvas, sc.patch_size).to(device)
    else:
        for s, n_s in (("val", n_val), ("test", n_test)):
            out[f"x_{s}"] = data.to_device(raw[f"x_{s}"][:n_s], device)
            out[f"y_{s}"] = torch.from_numpy(raw[f"y_{s}"][:n_s].astype(np.int64)).to(device)
        out["x_probe"] = out["x_val"][:P]
        out["bg_probe"] = data.background_patches(out["x_probe"], cfg.model.patch_size)
    if P > len(out["x_val"]):
        raise ValueError(f"train.probe_images={P} exceeds the {len(out['x_val'])} validation images")
    return out


def batch_maker(cfg: RunConfig, d: dict):
    """fn(indices, generator) -> (normalised images, labels): augmentation or scene composition on
    the device, for the whole batch at once."""
    if cfg.family == "scene":
        def make(idx, g):
            x, _ = scenes.compose(d["x_train"][idx], cfg.scene, g)
            return data.normalize(x), d["y_train"][idx]
    else:
        def make(idx, g):
            x = data.augment(d["x_train"][idx], cfg.train.shift, cfg.train.flip, g)
            return data.normalize(x), d["y_train"][idx]
    return make


# --------------------------------------------------------------------------------------------
# evaluation and the norm probe
# --------------------------------------------------------------------------------------------
def _autocast(device):
    dtype = amp_dtype(device)
    return torch.autocast("cuda", dtype=dtype or torch.bfloat16, enabled=dtype is not None)


@torch.no_grad()
def evaluate(model, x_uint8, y, batch_size: int) -> dict:
    model.eval()
    correct, loss = 0, 0.0
    for i in range(0, len(y), batch_size):
        with _autocast(x_uint8.device):
            logits = model(data.normalize(x_uint8[i:i + batch_size])).float()
        yb = y[i:i + batch_size]
        correct += int((logits.argmax(1) == yb).sum())
        loss += float(F.cross_entropy(logits, yb, reduction="sum"))
    return {"acc": correct / len(y), "loss": loss / len(y)}


def _own_rule(pn: torch.Tensor, background: torch.Tensor) -> dict:
    """One block of one epoch judged by its own outlier rule (Fig. 4b, the emergence map): no
    threshold carried over from another epoch or block. Where the flagged tokens sit (share on
    background) and whether the background ones stand above every other foreground token (the
    lowest flagged background norm against the highest norm of the unflagged foreground)."""
    rule = norms.fit_outlier_rule(pn, background)
    flags = rule.flag(pn)
    n = int(flags.sum())
    on_bg = flags & background
    fg = pn[~background & ~flags]          # the foreground tokens that are not outliers themselves
    return {"found": rule.found, "threshold": rule.threshold, "reference_median": rule.reference_median,
            "outlier_frac": n / pn.numel(), "relative_frac": float(rule.relative_flag(pn).float().mean()),
            "mode_ratio": rule.mode_ratio,
            "bg_share": int(on_bg.sum()) / n if n else None,
            "flagged_min": float(pn[on_bg].min()) if on_bg.any() else None,   # the lowest background outlier
            "fg_max": float(fg.max()) if fg.numel() else None}


# Families whose training probe judges every block by its own rule (the others: the last block).
PROBE_RULE_BLOCKS = {"emergence": "every"}   # the map's onset may sit at any block


@torch.no_grad()
def norm_probe(model, x_uint8, background, rule_blocks: str = "last") -> dict:
    """Norms of the tokens of a fixed batch at the output of every block (float32, eval mode).
    `rule_blocks`: the blocks judged by their own outlier rule, "last" (Fig. 4b reads the last block)
    or "every" (the emergence map). The rule is a mixture fit (~0.5 s a block on one CPU thread), so
    the study's families fit it where it is read and no more."""
    if rule_blocks not in ("last", "every"):
        raise ValueError(f"rule_blocks is 'last' or 'every', not {rule_blocks!r}")
    model.eval()
    toks = vit.tokens(model, data.normalize(x_uint8))
    blocks = []
    for i in range(len(model.blocks)):
        g = toks[i]
        pn = g.patches.float().norm(dim=-1)
        rec = {"block": i, **norms.stats(pn.cpu().numpy()), "hist": norms.log_hist(pn.cpu().numpy()),
               "cls_norm": float(g.cls.float().norm(dim=-1).mean())}
        if g.registers.shape[1]:
            rn = g.registers.float().norm(dim=-1)
            rec.update(reg_norm_mean=float(rn.mean()), reg_norm_max=float(rn.max()))
        if background.any():
            rec["bg_median"] = float(pn[background].median())
            rec["bg_max"] = float(pn[background].max())
        if (~background).any():
            rec["fg_median"] = float(pn[~background].median())
            rec["fg_max"] = float(pn[~background].max())
        if rule_blocks == "every" or i == len(model.blocks) - 1:
            rec["own_rule"] = _own_rule(pn.cpu(), background.cpu())
        blocks.append(rec)
    return {"blocks": blocks, "hist_bins_log10": [float(norms.LOG10_BINS[0]), float(norms.LOG10_BINS[-1]),
                                                  len(norms.LOG10_BINS) - 1]}


# --------------------------------------------------------------------------------------------
# the loop
# --------------------------------------------------------------------------------------------
def no_decay(name: str, ndim: int) -> bool:
    return ndim <= 1 or name in ("pos_embed", "cls_token", "reg_token") or name.endswith(".gamma")


def stacked_param_groups(params: dict, weight_decay: float) -> list:
    """AdamW groups for stacked parameters (one leading model axis): weight decay except on biases,
    norms, LayerScale gammas, position embedding and prefix tokens (no_decay), in parameter order, so
    that a stacked optimiser's state slices into single-run states index by index."""
    decay = [p for n, p in params.items() if not no_decay(n, p.ndim - 1)]
    other = [p for n, p in params.items() if no_decay(n, p.ndim - 1)]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": other, "weight_decay": 0.0}]


def make_optimizer(params: dict, tc: TrainConfig, device) -> torch.optim.Optimizer:
    """AdamW on stacked parameters. AdamW is element-wise, so each model's slice is updated exactly
    as its own optimiser would update it."""
    return torch.optim.AdamW(stacked_param_groups(params, tc.weight_decay), lr=tc.lr, betas=(0.9, 0.999),
                             **({"fused": True} if torch.device(device).type == "cuda" else {}))


def amp_dtype(device) -> torch.dtype | None:
    """bf16 on GPUs that have it, fp16 (with a gradient scaler) on older ones, none on the CPU."""
    if torch.device(device).type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def train_step(params: dict, opt, cfg: RunConfig, device, precision: torch.dtype | None | str = "auto"):
    """fn(images M x B x C x H x W, labels M x B) -> (per-model losses M, logits M x B x K): one
    optimisation step of every stacked model (batched.forward, autocast on CUDA, label smoothing,
    per-model gradient clipping). The learning rate is whatever opt.param_groups hold. With fp16,
    one gradient scaler serves all models (a step skipped for overflow is skipped for all).
    `precision`: "auto" (amp_dtype) or an autocast dtype (None: float32), e.g. to test fp16 on a CPU."""
    tc = cfg.train
    kind = torch.device(device).type
    fwd = functools.partial(batched.forward, cfg=cfg.model)
    if tc.compile and kind == "cuda":
        fwd = torch.compile(fwd)
    dtype = amp_dtype(device) if precision == "auto" else precision
    scaler = torch.amp.GradScaler(kind) if dtype == torch.float16 else None

    def step(xb, yb):
        with torch.autocast(kind, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            logits = fwd(params, xb)
        M, B, K = logits.shape
        losses = F.cross_entropy(logits.float().reshape(M * B, K), yb.reshape(-1), reduction="none",
                                 label_smoothing=tc.label_smoothing).reshape(M, B).mean(1)
        opt.zero_grad(set_to_none=True)
        if scaler is None:
            losses.sum().backward()
            batched.clip_grad_norm_(params, tc.grad_clip)
            opt.step()
        else:
            scaler.scale(losses.sum()).backward()
            scaler.unscale_(opt)
            batched.clip_grad_norm_(params, tc.grad_clip)
            scaler.step(opt)
            scaler.update()
        return losses.detach(), logits.detach()
    return step


def check_family(cfgs: list) -> None:
    """Runs trained together must differ in their seed only."""
    ref = {k: v for k, v in cfgs[0].to_dict().items() if k not in ("seed", "name")}
    for c in cfgs[1:]:
        other = {k: v for k, v in c.to_dict().items() if k not in ("seed", "name")}
        if other != ref:
            raise ValueError(f"runs {cfgs[0].name} and {c.name} differ in more than their seed: train them apart")
    if len({c.seed for c in cfgs}) != len(cfgs):
        raise ValueError(f"two runs of one family share a seed: {[c.name for c in cfgs]}")


def _resume_states(cfgs: list, out_dirs: list, device, resume: bool) -> list:
    """Each run's unfinished checkpoint (or None to start afresh); all must stand at the same epoch."""
    states = []
    for cfg, d in zip(cfgs, out_dirs):
        path = d / "checkpoint.pt"
        state = checkpoint.load(path, map_location=device) if resume and path.exists() else None
        if state is not None and state.get("complete"):
            print(f"{path} holds a finished run; training it again from scratch.")
            state = None
        if state is not None:
            checkpoint.check_config(path, state["config"], cfg.to_dict())
        states.append(state)
    epochs = {0 if s is None else int(s["epoch"]) for s in states}
    if len(epochs) > 1:
        raise ValueError(f"the runs {[c.name for c in cfgs]} stopped at different epochs ({sorted(epochs)}); "
                         "train them one by one (train.fit) to resume each")
    return states


def _running_note(loss_sum, correct, steps: int, batch_size: int, seconds: float) -> str:
    """The progress bar's postfix: running loss and accuracy of the epoch (mean over the models)
    and images/s. Read where the loop checks the loss for NaN, which already waits for the device,
    so that the bar adds no synchronisation of its own."""
    M = len(loss_sum)
    loss, hits = torch.stack([loss_sum.sum(), correct.sum().to(loss_sum.dtype)]).tolist()
    images = M * steps * batch_size
    return f"loss {loss / (M * steps):.3f}, acc {hits / images:.3f}, {images / max(seconds, 1e-9):,.0f} img/s"


def fit_family(cfgs: list, out_dirs: list, *, device=None, resume: bool = True,
               stop_after_epoch: int | None = None, check_every: int | None = None,
               deadline: float | None = None) -> list:
    """Train runs `cfgs` (differing in seed only) together as one batched model, each into its own
    folder of `out_dirs`, as if each were trained alone: same initialisation (its seed), same data
    order and augmentation (a generator per run), same optimiser state. Resumes from the folders'
    checkpoints. Returns each run's final metrics (also in its metrics.json).

    `stop_after_epoch` stops early (after checkpointing), to test resuming. `deadline` (Unix time;
    default: $REGSTUDY_DEADLINE) pauses every run with `TimeBudgetReached` when the next epoch would
    end after it, with checkpoints to resume from."""
    check_family(cfgs)
    out_dirs = [Path(d) for d in out_dirs]
    for d in out_dirs:
        d.mkdir(parents=True, exist_ok=True)
    device = torch.device(device) if device is not None else provenance.pick_device()
    cfg0, tc, M = cfgs[0], cfgs[0].train, len(cfgs)
    is_cuda = device.type == "cuda"
    if is_cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    check_every = check_every or (50 if is_cuda else 1)
    deadline = deadline if deadline is not None else deadline_from_env()

    d = run_data(cfg0, device)                       # the same data for every seed of a family
    n_train = len(d["y_train"])
    steps_per_epoch = n_train // tc.batch_size
    if steps_per_epoch < 1:
        raise ValueError(f"train.batch_size={tc.batch_size} exceeds the {n_train} training images")
    total_steps = steps_per_epoch * tc.epochs

    states = _resume_states(cfgs, out_dirs, device, resume)
    models = []
    for cfg, state in zip(cfgs, states):
        torch.manual_seed(cfg.seed)
        m = vit.build(cfg.model).to(device)
        if state is not None:
            m.load_state_dict(state["model"])
        models.append(m)
    params = batched.stack(models)
    opt = make_optimizer(params, tc, device)
    if states[0] is not None:
        opt.load_state_dict(checkpoint.stack_optimizer_states([s["optimizer"] for s in states]))
    start_epoch = 0 if states[0] is None else int(states[0]["epoch"])
    logs = [provenance.RunLog(o / "log.jsonl") for o in out_dirs]
    for cfg, log, o in zip(cfgs, logs, out_dirs):
        if start_epoch == 0:
            log.path.unlink(missing_ok=True)
            log.write("config", run=cfg.to_dict(), git=provenance.git_commit(), device=provenance.device_info(device),
                      n_train=n_train, steps_per_epoch=steps_per_epoch, params=vit.count_params(models[0]),
                      flops_per_image=vit.train_flops_per_image(cfg.model), family_runs=[c.name for c in cfgs])
        else:
            log.truncate_after_epoch(start_epoch)
            log.write("resume", epoch=start_epoch, git=provenance.git_commit(), device=provenance.device_info(device))
            print(f"resuming {cfg.name} from {o / 'checkpoint.pt'} after epoch {start_epoch}")

    def save(epoch_done: int, complete: bool):
        opt_states = checkpoint.slice_optimizer_state(opt.state_dict(), M)
        for m, (cfg, o) in enumerate(zip(cfgs, out_dirs)):
            checkpoint.save(o / "checkpoint.pt", {"model": batched.state_dict_of(params, m), "optimizer": opt_states[m],
                                                  "epoch": epoch_done, "config": cfg.to_dict(), "complete": complete})

    def pause(epoch_done: int, reason: str):
        names = ", ".join(c.name for c in cfgs)
        msg = (f"{names}: paused after epoch {epoch_done} of {tc.epochs} to stay within the time budget ({reason}); "
               + ("checkpoints are in the run folders. " if epoch_done else "nothing trained yet. ")
               + "Run the same command again to resume.")
        for log in logs:
            log.write("paused", epoch=epoch_done, message=msg)
        raise TimeBudgetReached(msg)

    if deadline is not None and time.time() >= deadline and start_epoch < tc.epochs:
        pause(start_epoch, "the deadline had passed before training started")

    step_fn = train_step(params, opt, cfg0, device)
    make_batch = batch_maker(cfg0, d)
    flops = vit.train_flops_per_image(cfg0.model)
    names = cfg0.name if M == 1 else f"{cfg0.name}..{cfgs[-1].name}"

    for epoch in range(start_epoch, tc.epochs):
        gens = [torch.Generator(device=device).manual_seed(c.seed * 1_000_003 + epoch) for c in cfgs]
        perms = [torch.randperm(n_train, generator=g, device=device) for g in gens]
        loss_sum = torch.zeros(M, device=device)
        correct = torch.zeros(M, device=device, dtype=torch.long)
        if is_cuda:
            torch.cuda.synchronize()
        t0, wall0 = time.perf_counter(), time.time()
        steps = progress.bar(range(steps_per_epoch), desc=f"train {names} epoch {epoch + 1}/{tc.epochs}", unit="steps")
        for i in steps:
            lr = lr_at(epoch * steps_per_epoch + i, total_steps, tc.lr, tc.warmup_steps)
            for pg in opt.param_groups:
                pg["lr"] = lr
            parts = [make_batch(p[i * tc.batch_size:(i + 1) * tc.batch_size], g) for p, g in zip(perms, gens)]
            xb, yb = torch.stack([x for x, _ in parts]), torch.stack([y for _, y in parts])
            losses, logits = step_fn(xb, yb)
            loss_sum += losses
            correct += (logits.argmax(-1) == yb).sum(1)
            checking = (i + 1) % check_every == 0 or i + 1 == steps_per_epoch
            if checking and not torch.isfinite(loss_sum).all():
                bad = [c.name for c, ok in zip(cfgs, torch.isfinite(loss_sum).tolist()) if not ok]
                ckpt = out_dirs[0] / "checkpoint.pt"
                last = int(checkpoint.load(ckpt)["epoch"]) if ckpt.exists() else None
                msg = (f"{', '.join(bad)}: the training loss became non-finite at epoch {epoch + 1}, step {i + 1} "
                       f"(lr {lr:.3g}). Training stopped; "
                       + (f"the last good checkpoint (after epoch {last}) is kept in each run folder. "
                          if last is not None else "no checkpoint had been written yet. ")
                       + "Lower train.lr, raise train.warmup_steps or train.grad_clip in params.yaml, "
                         "or check the input data.")
                for log in logs:
                    log.write("error", error="non-finite loss", message=msg)
                raise NonFiniteLoss(msg)
            if checking:
                steps.set_postfix(_running_note(loss_sum, correct, i + 1, tc.batch_size, time.perf_counter() - t0))
        if is_cuda:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        images = steps_per_epoch * tc.batch_size
        for m, (cfg, model, log) in enumerate(zip(cfgs, models, logs)):
            model.load_state_dict(batched.state_dict_of(params, m))
            val = evaluate(model, d["x_val"], d["y_val"], tc.eval_batch_size)
            probe = norm_probe(model, d["x_probe"], d["bg_probe"], PROBE_RULE_BLOCKS.get(cfg.family, "last"))
            log.write("epoch", epoch=epoch + 1, step=(epoch + 1) * steps_per_epoch, lr=lr,
                      train_loss=float(loss_sum[m]) / steps_per_epoch, train_acc=float(correct[m]) / images,
                      val_acc=val["acc"], val_loss=val["loss"], seconds=seconds, models=M,
                      images_per_s=M * images / seconds, tflops=flops * M * images / seconds / 1e12, probe=probe)
            print(f"{cfg.name} epoch {epoch + 1}/{tc.epochs}: loss {float(loss_sum[m]) / steps_per_epoch:.4f} "
                  f"val acc {val['acc']:.4f} ({M} models, {M * images / seconds:,.0f} img/s)")
        done = epoch + 1 == tc.epochs
        now = time.time()
        out_of_time = deadline is not None and not done and now + (now - wall0) > deadline
        stop = bool(stop_after_epoch and epoch + 1 >= stop_after_epoch)
        if done or (epoch + 1) % tc.ckpt_every == 0 or stop or out_of_time:
            save(epoch + 1, done)
        if stop and not done:
            return [{"interrupted_after_epoch": epoch + 1}] * M
        if out_of_time:
            pause(epoch + 1, "the next epoch would end after the deadline")

    results = []
    for cfg, model, log, o in zip(cfgs, models, logs, out_dirs):
        test = evaluate(model.eval(), d["x_test"], d["y_test"], tc.eval_batch_size)
        val = evaluate(model, d["x_val"], d["y_val"], tc.eval_batch_size)
        epochs = log.records("epoch")
        metrics = {"name": cfg.name, "family": cfg.family, "registers": cfg.model.registers, "seed": cfg.seed,
                   "epochs": tc.epochs, "test_acc": test["acc"], "test_loss": test["loss"],
                   "val_acc": val["acc"], "final_train_loss": epochs[-1]["train_loss"]}
        (o / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        log.write("final", **metrics, train_seconds=sum(r["seconds"] for r in epochs),
                  images_per_s=float(np.median([r["images_per_s"] for r in epochs])), models=M,
                  device=provenance.device_info(device))
        results.append(metrics)
    return results


def fit(cfg: RunConfig, out_dir: Path, **kw) -> dict:
    """Train one run alone (a family of one); see fit_family."""
    return fit_family([cfg], [out_dir], **kw)[0]


def load_trained(run_dir: Path, device="cpu"):
    """(model in eval mode, RunConfig) of a finished run folder."""
    from .config import run_config_from_dict
    run_dir = Path(run_dir)
    state = checkpoint.load(run_dir / "checkpoint.pt", map_location=device)
    cfg = run_config_from_dict(state["config"])
    m = vit.build(cfg.model)
    try:
        m.load_state_dict(state["model"])
    except RuntimeError as e:
        raise checkpoint.CheckpointError(
            f"{run_dir / 'checkpoint.pt'} does not fit the model its config describes ({str(e)[:300]}); "
            "delete the run folder and retrain it.") from None
    if not state.get("complete"):
        raise checkpoint.CheckpointError(f"{run_dir} holds an unfinished run (epoch {state['epoch']}); "
                                         "finish it with dvc repro (training resumes) before analysing it")
    return m.to(device).eval(), cfg

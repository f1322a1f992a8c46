"""Training one run: data held on the device, batched augmentation there, AdamW with warm-up then
cosine, label smoothing, gradient clipping, bf16 autocast and optional torch.compile on CUDA,
checkpoints with resume, a NaN guard, a time budget, and per-epoch token-norm statistics of a
fixed probe batch.

Time budget: when the environment holds ``REGSTUDY_DEADLINE`` (a Unix time, set by
``python -m regstudy.repro --time-budget SECONDS``), a run that would not finish its next epoch
before it writes a checkpoint and stops with `TimeBudgetReached`; running it again resumes there.
This is how the study fits into machines lent for a few minutes per command.

Outputs in the run folder:
* ``checkpoint.pt``: model + optimiser + progress (loads with ``weights_only=True``);
* ``log.jsonl``: provenance (config, git commit, device) then one line per epoch, then a final line;
* ``metrics.json``: the run's deterministic results (no timings), for DVC and the analyses.
"""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import checkpoint, data, model as vit, norms, provenance, scenes
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


def param_groups(model: torch.nn.Module, weight_decay: float) -> list:
    """No weight decay on biases, norms, LayerScale gammas, position embedding and prefix tokens."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.ndim <= 1 or name in ("pos_embed", "cls_token", "reg_token") or name.endswith(".gamma"):
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


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
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=torch.device(device).type == "cuda")


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


@torch.no_grad()
def norm_probe(model, x_uint8, background) -> dict:
    """Norms of the tokens of a fixed batch at the output of every block (float32, eval mode)."""
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
        if i == len(model.blocks) - 1:
            # this epoch judged by its own rule (Fig. 4b): no threshold carried over from another epoch
            rule = norms.fit_outlier_rule(pn.cpu(), background.cpu())
            rec["own_rule"] = {"found": rule.found, "threshold": rule.threshold,
                               "outlier_frac": float(rule.flag(pn.cpu()).float().mean()),
                               "relative_frac": float(rule.relative_flag(pn.cpu()).float().mean()),
                               "mode_ratio": rule.mode_ratio}
        blocks.append(rec)
    return {"blocks": blocks, "hist_bins_log10": [float(norms.LOG10_BINS[0]), float(norms.LOG10_BINS[-1]),
                                                  len(norms.LOG10_BINS) - 1]}


# --------------------------------------------------------------------------------------------
# the loop
# --------------------------------------------------------------------------------------------
def make_optimizer(model, tc: TrainConfig, device) -> torch.optim.Optimizer:
    return torch.optim.AdamW(param_groups(model, tc.weight_decay), lr=tc.lr, betas=(0.9, 0.999),
                             **({"fused": True} if torch.device(device).type == "cuda" else {}))


def train_step(model, opt, tc: TrainConfig, device):
    """fn(images, labels) -> (loss, logits): one optimisation step (bf16 autocast on CUDA, the model
    compiled when `tc.compile` on CUDA, label smoothing, gradient clipping). The learning rate is
    whatever opt.param_groups hold."""
    fwd = torch.compile(model) if (tc.compile and torch.device(device).type == "cuda") else model

    def step(xb, yb):
        with _autocast(device):
            logits = fwd(xb)
        loss = F.cross_entropy(logits.float(), yb, label_smoothing=tc.label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if tc.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
        opt.step()
        return loss, logits
    return step


def fit(cfg: RunConfig, out_dir: Path, *, device=None, resume: bool = True,
        stop_after_epoch: int | None = None, check_every: int | None = None,
        deadline: float | None = None) -> dict:
    """Train run `cfg` into `out_dir`; resume from `out_dir/checkpoint.pt` when it holds an
    unfinished run of the same config. Returns the final metrics (also in metrics.json).

    `stop_after_epoch` stops early (after checkpointing), to test resuming. `deadline` (Unix time;
    default: $REGSTUDY_DEADLINE) pauses the run with `TimeBudgetReached` when the next epoch would
    end after it, with a checkpoint to resume from."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = torch.device(device) if device is not None else provenance.pick_device()
    torch.manual_seed(cfg.seed)
    tc = cfg.train
    is_cuda = device.type == "cuda"
    if is_cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    check_every = check_every or (50 if is_cuda else 1)
    deadline = deadline if deadline is not None else deadline_from_env()

    d = run_data(cfg, device)
    n_train = len(d["y_train"])
    steps_per_epoch = n_train // tc.batch_size
    if steps_per_epoch < 1:
        raise ValueError(f"train.batch_size={tc.batch_size} exceeds the {n_train} training images")
    total_steps = steps_per_epoch * tc.epochs

    model = vit.build(cfg.model).to(device)
    opt = make_optimizer(model, tc, device)
    ckpt_path = out_dir / "checkpoint.pt"
    log = provenance.RunLog(out_dir / "log.jsonl")
    cfg_dict = cfg.to_dict()
    start_epoch = 0
    if resume and ckpt_path.exists():
        state = checkpoint.load(ckpt_path, map_location=device)
        if state.get("complete"):
            print(f"{ckpt_path} holds a finished run; training it again from scratch.")
        else:
            checkpoint.check_config(ckpt_path, state["config"], cfg_dict)
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            start_epoch = int(state["epoch"])
            print(f"resuming {cfg.name} from {ckpt_path} after epoch {start_epoch}")
    if start_epoch == 0:
        log.path.unlink(missing_ok=True)
        log.write("config", run=cfg_dict, git=provenance.git_commit(),
                  device=provenance.device_info(device), n_train=n_train,
                  steps_per_epoch=steps_per_epoch, params=vit.count_params(model),
                  flops_per_image=vit.train_flops_per_image(cfg.model))
    else:
        log.truncate_after_epoch(start_epoch)
        log.write("resume", epoch=start_epoch, git=provenance.git_commit(), device=provenance.device_info(device))

    def pause(epoch_done: int, reason: str):
        msg = (f"{cfg.name}: paused after epoch {epoch_done} of {tc.epochs} to stay within the time budget "
               f"({reason}); " + (f"the checkpoint is at {ckpt_path}. " if epoch_done else "nothing trained yet. ")
               + "Run the same command again to resume.")
        log.write("paused", epoch=epoch_done, message=msg)
        raise TimeBudgetReached(msg)

    if deadline is not None and time.time() >= deadline and start_epoch < tc.epochs:
        pause(start_epoch, "the deadline had passed before training started")

    train_one = train_step(model, opt, tc, device)
    make_batch = batch_maker(cfg, d)
    flops = vit.train_flops_per_image(cfg.model)

    for epoch in range(start_epoch, tc.epochs):
        model.train()
        g = torch.Generator(device=device).manual_seed(cfg.seed * 1_000_003 + epoch)
        perm = torch.randperm(n_train, generator=g, device=device)
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        if is_cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        wall0 = time.time()
        for i in range(steps_per_epoch):
            step = epoch * steps_per_epoch + i
            lr = lr_at(step, total_steps, tc.lr, tc.warmup_steps)
            for pg in opt.param_groups:
                pg["lr"] = lr
            xb, yb = make_batch(perm[i * tc.batch_size:(i + 1) * tc.batch_size], g)
            loss, logits = train_one(xb, yb)
            loss_sum += loss.detach()
            correct += (logits.detach().argmax(1) == yb).sum()
            if (i + 1) % check_every == 0 or i + 1 == steps_per_epoch:
                if not torch.isfinite(loss_sum):
                    last = int(checkpoint.load(ckpt_path)["epoch"]) if ckpt_path.exists() else None
                    msg = (f"{cfg.name}: the training loss became {float(loss.detach()):.4g} at epoch {epoch + 1}, "
                           f"step {i + 1} (lr {lr:.3g}). Training stopped; "
                           + (f"the last good checkpoint (after epoch {last}) is kept at {ckpt_path}. "
                              if last is not None else "no checkpoint had been written yet. ")
                           + "Lower train.lr, raise train.warmup_steps or train.grad_clip in params.yaml, "
                             "or check the input data.")
                    log.write("error", error="non-finite loss", message=msg)
                    raise NonFiniteLoss(msg)
        if is_cuda:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        images = steps_per_epoch * tc.batch_size
        val = evaluate(model, d["x_val"], d["y_val"], tc.eval_batch_size)
        probe = norm_probe(model, d["x_probe"], d["bg_probe"])
        log.write("epoch", epoch=epoch + 1, step=(epoch + 1) * steps_per_epoch, lr=lr,
                  train_loss=float(loss_sum) / steps_per_epoch, train_acc=float(correct) / images,
                  val_acc=val["acc"], val_loss=val["loss"], seconds=seconds, images_per_s=images / seconds,
                  tflops=flops * images / seconds / 1e12, probe=probe)
        print(f"{cfg.name} epoch {epoch + 1}/{tc.epochs}: loss {float(loss_sum) / steps_per_epoch:.4f} "
              f"val acc {val['acc']:.4f} {images / seconds:,.0f} img/s")
        done = epoch + 1 == tc.epochs
        now = time.time()
        out_of_time = deadline is not None and not done and now + (now - wall0) > deadline
        if (done or (epoch + 1) % tc.ckpt_every == 0 or (stop_after_epoch and epoch + 1 >= stop_after_epoch)
                or out_of_time):
            checkpoint.save(ckpt_path, {"model": model.state_dict(), "optimizer": opt.state_dict(),
                                        "epoch": epoch + 1, "config": cfg_dict, "complete": done})
        if stop_after_epoch and epoch + 1 >= stop_after_epoch and not done:
            return {"interrupted_after_epoch": epoch + 1}
        if out_of_time:
            pause(epoch + 1, "the next epoch would end after the deadline")

    test = evaluate(model, d["x_test"], d["y_test"], tc.eval_batch_size)
    val = evaluate(model, d["x_val"], d["y_val"], tc.eval_batch_size)
    epochs = log.records("epoch")
    metrics = {"name": cfg.name, "family": cfg.family, "registers": cfg.model.registers, "seed": cfg.seed,
               "epochs": tc.epochs, "test_acc": test["acc"], "test_loss": test["loss"],
               "val_acc": val["acc"], "final_train_loss": epochs[-1]["train_loss"]}
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    train_seconds = sum(r["seconds"] for r in epochs)
    log.write("final", **metrics, train_seconds=train_seconds,
              images_per_s=float(np.median([r["images_per_s"] for r in epochs])),
              device=provenance.device_info(device))
    return metrics


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

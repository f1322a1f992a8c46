"""`python -m regstudy.bench`: training throughput (images/s) and model-FLOPs utilisation.

Times the study's own training step (data held on the device as uint8, batched augmentation there,
bf16 autocast (fp16 + gradient scaler where bf16 is missing), fused attention, torch.compile, fused
AdamW, per-model gradient clipping) for ViT-S/4, ViT-S/2 and ViT-B/2 on 28x28 Fashion-MNIST-sized
inputs at batch 512 per model, for one model alone and for N models trained together as one
batched model (`regstudy.batched`: the seeds of a family), side by side. MFU = model FLOPs per
second of all N models (forward + backward = 3x forward, see model.train_flops_per_image) over the
peak of this device, measured here with a large matrix product (bf16 on CUDA, float32 on the CPU).
On a CPU the default is a smoke size (the smoke profile's 32-d, 4-block ViT, batch 64, N = 1, 3):
its numbers say how the CPU does, not what the study's GPU runs do.

Timing: warm-up steps first (compilation), then the median of `--repeats` timed windows of
`--steps` steps each, synchronised with the device. Prints a table and writes JSON with `--out`.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch

from . import batched, data, model as vit, provenance, train
from .config import ModelConfig, TrainConfig

CONFIGS = {
    "smoke": dict(embed_dim=32, depth=4, num_heads=2, patch_size=4),
    "vit-s/4": dict(embed_dim=384, depth=12, num_heads=6, patch_size=4),
    "vit-s/2": dict(embed_dim=384, depth=12, num_heads=6, patch_size=2),
    "vit-b/2": dict(embed_dim=768, depth=12, num_heads=12, patch_size=2),
}


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_peak(device, n: int | None = None, repeats: int = 10) -> float:
    """Measured FLOP/s of an n x n x n matrix product (bf16 on CUDA, float32 on CPU), median."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    n = n or (8192 if device.type == "cuda" else 1024)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(repeats):
        _sync(device)
        t = time.perf_counter()
        a @ b
        _sync(device)
        times.append(time.perf_counter() - t)
    return 2 * n ** 3 / statistics.median(times)


def bench_one(name: str, device, batch: int, models: int, steps: int, warmup: int, repeats: int,
              compile_: bool) -> dict:
    """Time `models` stacked copies of model `name` (distinct seeds) training together."""
    cfg = ModelConfig(img_size=28, registers=0, **CONFIGS[name])
    tc = TrainConfig(epochs=1, batch_size=batch, lr=1e-3, weight_decay=0.05, warmup_steps=0, label_smoothing=0.1,
                     grad_clip=1.0, train_images=0, ckpt_every=1, compile=compile_, probe_images=1, shift=2, flip=True)
    nets = []
    for s in range(models):
        torch.manual_seed(s)
        nets.append(vit.build(cfg).to(device))
    params = batched.stack(nets)
    opt = train.make_optimizer(params, tc, device)
    step = train.train_step(params, opt, SimpleNamespace(model=cfg, train=tc), device)
    g = torch.Generator(device=device).manual_seed(0)
    n_data = max(4 * batch, 4096)
    x_all = torch.randint(0, 256, (n_data, 1, 28, 28), dtype=torch.uint8, generator=g, device=device)
    y_all = torch.randint(0, 10, (n_data,), generator=g, device=device)

    def one():
        idx = torch.randint(0, n_data, (models, batch), generator=g, device=device)
        xb = torch.stack([data.normalize(data.augment(x_all[i], tc.shift, tc.flip, g)) for i in idx])
        step(xb, y_all[idx])

    t0 = time.perf_counter()
    for _ in range(warmup):
        one()
    _sync(device)
    warm_s = time.perf_counter() - t0
    windows = []
    for _ in range(repeats):
        _sync(device)
        t = time.perf_counter()
        for _ in range(steps):
            one()
        _sync(device)
        windows.append(time.perf_counter() - t)
    sec = statistics.median(windows)
    ips = steps * batch * models / sec
    flops = vit.train_flops_per_image(cfg)
    return {"model": name, "models": models, "tokens": cfg.num_patches + 1, "params": vit.count_params(nets[0]),
            "batch": batch, "images_per_s": ips, "tflops": ips * flops / 1e12, "gflops_per_image": flops / 1e9,
            "step_ms": 1000 * sec / steps, "warmup_s": warm_s, "spread": (max(windows) - min(windows)) / sec}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=None, help=f"comma-separated, from {list(CONFIGS)} "
                                                   "(default: vit-s/4,vit-s/2,vit-b/2 on a GPU, smoke on a CPU)")
    ap.add_argument("--n", default=None, help="models trained together, comma-separated (default 1,3,6,18 GPU; 1,3 CPU)")
    ap.add_argument("--batch", type=int, default=None, help="images per model per step (default 512 GPU, 64 CPU)")
    ap.add_argument("--steps", type=int, default=None, help="steps per timed window (default 50 GPU, 5 CPU)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 15 GPU, 1 CPU)")
    ap.add_argument("--repeats", type=int, default=None, help="timed windows (default 5 GPU, 3 CPU)")
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--out", type=Path, help="write the results as JSON here")
    args = ap.parse_args(argv)
    device = provenance.pick_device()
    gpu = device.type == "cuda"
    names = [m.strip() for m in (args.models or ("vit-s/4,vit-s/2,vit-b/2" if gpu else "smoke")).split(",") if m.strip()]
    ns = [int(n) for n in (args.n or ("1,3,6,18" if gpu else "1,3")).split(",")]
    batch = args.batch or (512 if gpu else 64)
    steps = args.steps or (50 if gpu else 5)
    warmup = args.warmup if args.warmup is not None else (15 if gpu else 1)
    repeats = args.repeats or (5 if gpu else 3)
    bad = [n for n in names if n not in CONFIGS]
    if bad:
        print(f"error: unknown model {bad[0]!r}; choose from {list(CONFIGS)}", file=sys.stderr)
        return 2
    if gpu:
        torch.backends.cuda.matmul.allow_tf32 = True
    peak = matmul_peak(device)
    info = provenance.device_info(device)
    print(f"device: {provenance.describe_device(info)}; measured peak {peak / 1e12:.2f} TFLOP/s "
          f"({'bf16' if gpu else 'fp32'} matmul); compile: {gpu and not args.no_compile}; batch {batch} per model"
          + ("" if gpu else " -- CPU: smoke size, not the study's GPU numbers"))
    rows = []
    for name in names:
        for n in ns:
            r = bench_one(name, device, batch, n, steps, warmup, repeats, compile_=gpu and not args.no_compile)
            r["mfu"] = r["tflops"] * 1e12 / peak
            rows.append(r)
            print(f"{name:8s} N={n:<3d} tokens {r['tokens']:4d}  {r['images_per_s']:10,.0f} img/s  "
                  f"{r['tflops']:8.3f} TFLOP/s  MFU {r['mfu']:6.1%}  ({r['step_ms']:.1f} ms/step, "
                  f"window spread {r['spread']:.1%})")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"device": info, "peak_tflops": peak / 1e12, "batch": batch, "steps": steps,
                                        "repeats": repeats, "smoke_size": not gpu and names == ["smoke"],
                                        "results": rows, "time": time.strftime("%Y-%m-%dT%H:%M:%S")}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

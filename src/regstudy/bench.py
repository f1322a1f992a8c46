"""`python -m regstudy.bench`: training throughput (images/s) and model-FLOPs utilisation.

Times the study's own training step (data held on the device as uint8, batched augmentation there,
bf16 autocast, fused attention, torch.compile, fused AdamW, gradient clipping) for ViT-S/4, ViT-S/2
and ViT-B/2 on 28x28 Fashion-MNIST-sized inputs at batch 512. MFU = model FLOPs per second
(forward + backward = 3x forward, see model.train_flops_per_image) over the peak of this device,
measured here with a large matrix product (bf16 on CUDA, float32 on the CPU).

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

import torch

from . import data, model as vit, provenance, train
from .config import ModelConfig, TrainConfig

CONFIGS = {
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


def bench_one(name: str, device, batch: int, steps: int, warmup: int, repeats: int, compile_: bool) -> dict:
    cfg = ModelConfig(img_size=28, registers=0, **CONFIGS[name])
    tc = TrainConfig(epochs=1, batch_size=batch, lr=1e-3, weight_decay=0.05, warmup_steps=0, label_smoothing=0.1,
                     grad_clip=1.0, train_images=0, ckpt_every=1, compile=compile_, probe_images=1, shift=2, flip=True)
    torch.manual_seed(0)
    model = vit.build(cfg).to(device).train()
    opt = train.make_optimizer(model, tc, device)
    step = train.train_step(model, opt, tc, device)
    g = torch.Generator(device=device).manual_seed(0)
    n_data = max(4 * batch, 4096)
    x_all = torch.randint(0, 256, (n_data, 1, 28, 28), dtype=torch.uint8, generator=g, device=device)
    y_all = torch.randint(0, 10, (n_data,), generator=g, device=device)

    def one():
        idx = torch.randint(0, n_data, (batch,), generator=g, device=device)
        xb = data.normalize(data.augment(x_all[idx], tc.shift, tc.flip, g))
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
    ips = steps * batch / sec
    flops = vit.train_flops_per_image(cfg)
    return {"model": name, "tokens": cfg.num_patches + 1, "params": vit.count_params(model), "batch": batch,
            "images_per_s": ips, "tflops": ips * flops / 1e12, "gflops_per_image": flops / 1e9,
            "step_ms": 1000 * sec / steps, "warmup_s": warm_s, "spread": (max(windows) - min(windows)) / sec}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(CONFIGS), help=f"comma-separated, from {list(CONFIGS)}")
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--steps", type=int, default=None, help="steps per timed window (default 50 GPU, 2 CPU)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 15 GPU, 1 CPU)")
    ap.add_argument("--repeats", type=int, default=None, help="timed windows (default 5 GPU, 2 CPU)")
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--out", type=Path, help="write the results as JSON here")
    args = ap.parse_args(argv)
    device = provenance.pick_device()
    gpu = device.type == "cuda"
    steps = args.steps or (50 if gpu else 2)
    warmup = args.warmup if args.warmup is not None else (15 if gpu else 1)
    repeats = args.repeats or (5 if gpu else 2)
    if gpu:
        torch.backends.cuda.matmul.allow_tf32 = True
    peak = matmul_peak(device)
    info = provenance.device_info(device)
    print(f"device: {provenance.describe_device(info)}; measured peak {peak / 1e12:.1f} TFLOP/s "
          f"({'bf16' if gpu else 'fp32'} matmul); compile: {gpu and not args.no_compile}")
    rows = []
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        if name not in CONFIGS:
            print(f"error: unknown model {name!r}; choose from {list(CONFIGS)}", file=sys.stderr)
            return 2
        r = bench_one(name, device, args.batch, steps, warmup, repeats, compile_=gpu and not args.no_compile)
        r["mfu"] = r["tflops"] * 1e12 / peak
        rows.append(r)
        print(f"{name:8s} tokens {r['tokens']:4d}  {r['images_per_s']:10,.0f} img/s  {r['tflops']:7.1f} TFLOP/s  "
              f"MFU {r['mfu']:6.1%}  ({r['step_ms']:.1f} ms/step, window spread {r['spread']:.1%})")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"device": info, "peak_tflops": peak / 1e12, "batch": args.batch,
                                        "steps": steps, "repeats": repeats, "results": rows,
                                        "time": time.strftime("%Y-%m-%dT%H:%M:%S")}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

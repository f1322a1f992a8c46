"""The paper's own kind of models: public timm ViTs, with and without registers, read out by the
study's library (token norms and the outlier rule, attention of [CLS] and registers, LOST) on a
few real photos that need no download (the sample images scikit-image ships).

`weights: pretrained` loads each checkpoint through timm (from the Hugging Face hub, or its local
cache); without network access :func:`load_all` stops with one message that names every missing
checkpoint. `weights: random` builds random-init twins of the same architectures
(`pretrained=False`): every code path runs offline, which is how the tests run this profile; their
figures say so and give no verdict.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from . import data, extract, model as vit, norms

# scikit-image's bundled photos (skimage.data, no download): objects on backgrounds of their own
SAMPLES = ("astronaut", "chelsea", "coffee", "rocket", "motorcycle", "camera", "coins")
WEIGHTS = ("pretrained", "random")


class WeightsUnavailable(RuntimeError):
    """One or more checkpoints could not be loaded (no network, no local cache)."""


@dataclass(frozen=True)
class PretrainedConfig:
    models: tuple        # timm names, e.g. vit_small_patch14_reg4_dinov2.lvd142m
    weights: str         # pretrained | random
    images: int          # how many of SAMPLES
    image_size: int      # side fed to every model (0: each model's own input size)
    only: bool           # the profile runs the pretrained stage alone (no training)


def parse(raw, where: str = "pretrained") -> PretrainedConfig:
    from .config import ConfigError, _check_keys, _coerce
    _check_keys(raw, {"models", "weights", "images", "image_size", "only"}, where)
    models = raw["models"] or []
    if not isinstance(models, list) or not all(isinstance(m, str) for m in models):
        raise ConfigError(f"{where}.models must be a list of timm model names")
    if raw["weights"] not in WEIGHTS:
        raise ConfigError(f"{where}.weights must be one of {WEIGHTS}, not {raw['weights']!r}")
    n = _coerce(raw["images"], "int", f"{where}.images")
    if not 1 <= n <= len(SAMPLES):
        raise ConfigError(f"{where}.images must be 1..{len(SAMPLES)} (the sample photos), not {n}")
    size = _coerce(raw["image_size"], "int", f"{where}.image_size")
    if size < 0:
        raise ConfigError(f"{where}.image_size must be >= 0 (0 = each model's own)")
    return PretrainedConfig(models=tuple(models), weights=raw["weights"], images=n, image_size=size,
                            only=_coerce(raw["only"], "bool", f"{where}.only"))


def sample_images(n: int, size: int) -> torch.Tensor:
    """The first `n` SAMPLES as uint8 n x 3 x size x size: shorter side resized to `size`
    (bicubic, antialiased), centre crop; grey photos repeated over three channels."""
    import skimage.data as sk
    out = []
    for name in SAMPLES[:n]:
        im = sk.stereo_motorcycle()[0] if name == "motorcycle" else getattr(sk, name)()
        im = np.repeat(im[..., None], 3, -1) if im.ndim == 2 else im[..., :3]
        x = torch.from_numpy(np.ascontiguousarray(im)).permute(2, 0, 1)[None].float()
        h, w = x.shape[-2:]
        s = size / min(h, w)
        x = F.interpolate(x, size=(max(size, round(h * s)), max(size, round(w * s))), mode="bicubic",
                          antialias=True, align_corners=False)
        top, left = (x.shape[-2] - size) // 2, (x.shape[-1] - size) // 2
        out.append(x[..., top:top + size, left:left + size].clamp(0, 255).round().to(torch.uint8))
    return torch.cat(out)


def load(name: str, weights: str):
    """A timm model in eval mode, with any input size (dynamic_img_size)."""
    import timm
    return timm.create_model(name, pretrained=weights == "pretrained", dynamic_img_size=True).eval()


HUB = ("huggingface.co", 443)


def hub_reachable(timeout: float = 3.0) -> bool:
    import socket
    try:
        socket.create_connection(HUB, timeout=timeout).close()
        return True
    except OSError:
        return False


def _offline() -> None:
    """Cached checkpoints only, and a missing one fails at once (instead of minutes of retries each)."""
    import os
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        import huggingface_hub.constants as hc
        hc.HF_HUB_OFFLINE = True
    except ImportError:
        pass


def load_all(cfg: PretrainedConfig) -> dict:
    """{name: model} for every model of the profile; stops with one message naming every checkpoint
    that could not be loaded, and why, when weights are `pretrained` and some are out of reach.
    Without network access only the local Hugging Face cache is tried."""
    if cfg.weights == "pretrained" and cfg.models and not hub_reachable():
        print(f"{HUB[0]} cannot be reached: using the local Hugging Face cache only")
        _offline()
    models, missing = {}, []
    for name in cfg.models:
        try:
            models[name] = load(name, cfg.weights)
        except Exception as e:   # no network, no cache, an unknown name: report them all at once
            missing.append(f"  - {name}: {type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}")
    if missing:
        raise WeightsUnavailable(
            "these checkpoints could not be loaded:\n" + "\n".join(missing) + "\n"
            "With internet access timm downloads them from the Hugging Face hub on first use (then they are "
            "cached in ~/.cache/huggingface). Offline, set pretrained.weights: random in params.yaml to run "
            "the same architectures with random weights (every code path, no result).")
    return models


def has_registers(model) -> bool:
    return vit.num_registers(model) > 0


def side(model, cfg: PretrainedConfig) -> int:
    """The image side fed to `model`: cfg.image_size rounded down to its patch size, or its own."""
    patch = model.patch_embed.patch_size[0]
    size = cfg.image_size or data.data_config(model)["input_size"][-1]
    return max(patch, size // patch * patch)


@torch.no_grad()
def read_out(model, x_uint8: torch.Tensor, lost_k: int, device="cpu") -> dict:
    """Everything the notebook draws for one model on the photos: last-block patch-token norms,
    the outlier rule (no background mask: photos have none; the relative bar is then 3x the median
    of all patches), [CLS] and register attention maps, and LOST's boxes and seeds on keys."""
    from . import attention_maps, lost   # here, so that validating params.yaml (config) needs neither
    tn = extract.token_norms(model, x_uint8, batch=8, device=device)
    last = tn["patch"][-1]
    rule = norms.fit_outlier_rule(last)
    flags = rule.flag(last)
    maps = attention_maps.maps(model, x_uint8, batch=8, device=device)
    found = lost.discover(model, x_uint8, k=lost_k, feature="key", batch=8, device=device)
    grid = found["grid"]
    seed = found["seed"]
    return {"norms": last, "rule": rule, "flags": flags, "grid": grid, "cls": maps["cls"], "registers": maps["registers"],
            "register_norms": tn["registers"][-1], "boxes": found["boxes"], "seed": seed,
            "degree": found["result"].degree, "seed_on_outlier": float(flags[torch.arange(len(seed)), seed].float().mean()),
            "layout": vit.positions(model, grid[0] * grid[1])}


def summary_row(name: str, model, r: dict) -> dict:
    last = r["norms"]
    med = float(last.median())
    return {"model": name, "registers": vit.num_registers(model), "class token": vit.has_cls(model),
            "patches": int(last.shape[1]), "median norm": med, "max / median": float(last.max()) / med,
            "outlier mode": r["rule"].found, "outlier share": float(r["flags"].float().mean()),
            "register norm / patch median": float(r["register_norms"].median()) / med if r["register_norms"].numel() else None,
            "LOST seed on an outlier": r["seed_on_outlier"]}


def twins(names) -> list:
    """(without, with registers) pairs among `names`: the same name but for `_reg<k>` in the architecture."""
    import re
    base = {re.sub(r"_reg\d+", "", n): n for n in names if re.search(r"_reg\d+", n)}
    return [(b, r) for b, r in base.items() if b in names]


def pair_row(base: dict, reg: dict) -> dict:
    """One (without, with registers) pair: the baseline's outlier share, and the register twin's
    share above the baseline's threshold carried over as the same multiple of its own median norm
    (norm scales differ between checkpoints)."""
    thr = base["rule"].threshold
    bm, rm = float(base["norms"].median()), float(reg["norms"].median())
    at_base = float((reg["norms"] > thr / bm * rm).float().mean()) if thr is not None else 0.0
    return {"base_frac": float(base["flags"].float().mean()), "base_found": base["rule"].found,
            "reg_frac_at_base": at_base, "reg_found": reg["rule"].found}


def short(name: str) -> str:
    """A model's name for a figure's row label, on two lines: 'vit_small_patch14\\nreg4_dinov2'."""
    arch = name.split(".")[0]
    parts = arch.split("_")
    cut = next((i + 1 for i, p in enumerate(parts) if p.startswith("patch")), len(parts) // 2)
    return "_".join(parts[:cut]) + ("\n" + "_".join(parts[cut:]) if parts[cut:] else "")

"""Fashion-MNIST: read the raw files (found and checked by `regstudy.sources`), split them once,
and hold them on the training device."""
from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import numpy as np
import torch

from . import paths
from .sources import DEBIAN_DIR, FILES, DataError, locate_raw  # noqa: F401 (re-exported)

CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
           "Ankle boot")
MEAN, STD = 0.286, 0.353          # Fashion-MNIST pixel statistics (of x/255)
BACKGROUND_MAX = 10               # a patch whose mean pixel is <= 10 (of 255) is background
VAL_SIZE = 5000                   # held out of the 60,000 training images, fixed by SPLIT_SEED
SPLIT_SEED = 20240116
PREPARED_NAME = "fashion_mnist.npz"


# --------------------------------------------------------------------------------------------
# raw files
# --------------------------------------------------------------------------------------------
def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped) into a uint8 array."""
    opener = gzip.open if str(path).endswith(".gz") else open
    try:
        with opener(path, "rb") as fh:
            data = fh.read()
    except (OSError, EOFError) as e:
        raise DataError(f"{path} is unreadable ({e}); delete it and fetch it again") from None
    if len(data) < 8 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DataError(f"{path} is not an IDX file of unsigned bytes; delete it and fetch it again")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    offset = 4 + 4 * ndim
    n = int(np.prod(shape))
    if len(data) - offset != n:
        raise DataError(f"{path} is truncated or padded: header says {shape} ({n} bytes), "
                        f"file holds {len(data) - offset}; delete it and fetch it again")
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(shape)


def load_raw(files: dict) -> dict:
    arrays = {k: read_idx(p) for k, p in files.items()}
    expected = {"train_images": (60000, 28, 28), "train_labels": (60000,),
                "test_images": (10000, 28, 28), "test_labels": (10000,)}
    for k, shape in expected.items():
        if arrays[k].shape != shape:
            raise DataError(f"{files[k]} has shape {arrays[k].shape}, Fashion-MNIST's is {shape}")
    for split, per_class in (("train", 6000), ("test", 1000)):
        counts = np.bincount(arrays[f"{split}_labels"], minlength=10)
        if len(counts) != 10 or not (counts == per_class).all():
            raise DataError(f"{files[split + '_labels']}: class counts {counts.tolist()} are not "
                            f"Fashion-MNIST's {per_class} per class")
    return arrays


# --------------------------------------------------------------------------------------------
# the prepared split
# --------------------------------------------------------------------------------------------
def split(arrays: dict, val_size: int = VAL_SIZE, seed: int = SPLIT_SEED) -> dict:
    """Fixed train/val/test split: `val_size` training images held out, stratified by nothing,
    chosen by a permutation seeded with `seed`."""
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(arrays["train_labels"]))
    val, train = np.sort(perm[:val_size]), np.sort(perm[val_size:])
    return {
        "x_train": arrays["train_images"][train], "y_train": arrays["train_labels"][train],
        "x_val": arrays["train_images"][val], "y_val": arrays["train_labels"][val],
        "x_test": arrays["test_images"], "y_test": arrays["test_labels"],
    }


def sha256(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def _shown(path: Path) -> str:
    """A source file as the provenance records it: relative to the study's root when inside it
    (the tracked JSON then reads the same on every machine), else absolute (e.g. the Debian package)."""
    try:
        return str(path.resolve().relative_to(paths.root()))
    except ValueError:
        return str(path)


def prepare(out_dir: Path | None = None, raw_dir: Path | None = None, download: bool = True,
            **locate) -> dict:
    """Write data/prepared/fashion_mnist.npz (uint8) and its provenance JSON; return the provenance.
    `locate`: passed to sources.locate_raw (debian_dir, checksums: for tests)."""
    out_dir = Path(out_dir) if out_dir else paths.prepared_dir()
    files = locate_raw(raw_dir, download=download, **locate)
    arrays = split(load_raw(files))
    out_dir.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out_dir / PREPARED_NAME, **arrays)
    meta = {"source": {k: _shown(Path(v)) for k, v in files.items()},
            "split_seed": SPLIT_SEED, "val_size": VAL_SIZE,
            "sizes": {k: int(len(v)) for k, v in arrays.items() if k.startswith("y_")},
            "sha256": {k: sha256(v) for k, v in arrays.items()}}
    (out_dir / "fashion_mnist.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def load_prepared(path: Path | None = None) -> dict:
    """The prepared split as numpy uint8 arrays (x_*: N x 28 x 28, y_*: N)."""
    path = Path(path) if path else paths.prepared_dir() / PREPARED_NAME
    if not path.is_file():
        raise DataError(f"{path} not found: run `dvc repro prepare` (or python -m regstudy.prepare) first")
    try:
        with np.load(path) as z:
            out = {k: z[k] for k in z.files}
    except Exception as e:
        raise DataError(f"{path} is unreadable ({e}); delete it and run `dvc repro prepare`") from None
    for k in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        if k not in out:
            raise DataError(f"{path} lacks {k}; delete it and run `dvc repro prepare`")
    return out


# --------------------------------------------------------------------------------------------
# on-device tensors and batched augmentation
# --------------------------------------------------------------------------------------------
def to_device(x: np.ndarray, device) -> torch.Tensor:
    """uint8 images N x H x W -> uint8 tensor N x 1 x H x W on `device` (kept uint8: 4x less memory)."""
    t = torch.from_numpy(np.ascontiguousarray(x))
    if t.ndim == 3:
        t = t[:, None]
    return t.to(device)


def normalize(x_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 -> float32 normalised with the Fashion-MNIST mean/std."""
    return (x_uint8.float() / 255.0 - MEAN) / STD


def data_config(model) -> dict:
    """The model's own input config, as timm resolves it (`timm.data.resolve_data_config`): its mean,
    std, input size. The study's models carry Fashion-MNIST's (`model.build` attaches it); a timm
    checkpoint carries its own (ImageNet's, CLIP's ...)."""
    from timm.data import resolve_data_config
    if getattr(model, "pretrained_cfg", None) is None:
        raise ValueError("the model has no data config (pretrained_cfg): build it with regstudy.model.build "
                         "or timm.create_model, so that its input normalisation is known")
    return resolve_data_config({}, model=model)


def normalize_for(model, x_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 B x C x H x W -> float32 normalised with the model's own mean/std (per channel)."""
    cfg = data_config(model)
    mean = torch.tensor(cfg["mean"], dtype=torch.float32, device=x_uint8.device).reshape(1, -1, 1, 1)
    std = torch.tensor(cfg["std"], dtype=torch.float32, device=x_uint8.device).reshape(1, -1, 1, 1)
    if x_uint8.shape[1] != mean.shape[1]:
        raise ValueError(f"{x_uint8.shape[1]}-channel images for a model normalised over {mean.shape[1]} channels")
    return (x_uint8.float() / 255.0 - mean) / std


def augment(x: torch.Tensor, shift: int, flip: bool, generator: torch.Generator) -> torch.Tensor:
    """Random shift (zero-pad by `shift`, random crop back) and horizontal flip, for a whole batch
    at once on its device, by one gather: no per-image Python loop. `x` is B x C x H x W."""
    B, C, H, W = x.shape
    dev = x.device
    rows = torch.arange(H, device=dev).expand(B, H)
    cols = torch.arange(W, device=dev).expand(B, W)
    if flip:
        do_flip = torch.rand(B, generator=generator, device=dev) < 0.5
        cols = torch.where(do_flip[:, None], (W - 1) - cols, cols)
    if shift:
        dy = torch.randint(-shift, shift + 1, (B, 1), generator=generator, device=dev)
        dx = torch.randint(-shift, shift + 1, (B, 1), generator=generator, device=dev)
        rows, cols = rows + dy, cols + dx
    valid = ((rows >= 0) & (rows < H))[:, :, None] & ((cols >= 0) & (cols < W))[:, None, :]
    r = rows.clamp(0, H - 1)[:, :, None].expand(B, H, W)
    c = cols.clamp(0, W - 1)[:, None, :].expand(B, H, W)
    b = torch.arange(B, device=dev)[:, None, None].expand(B, H, W)
    out = x[b, :, r, c]                       # B x H x W x C
    out = out * valid[..., None].to(out.dtype)
    return out.permute(0, 3, 1, 2).contiguous()


def patch_means(x_uint8: torch.Tensor, patch: int) -> torch.Tensor:
    """Mean pixel (0..255) of each patch, B x (H/p * W/p), in the ViT's row-major token order."""
    x = x_uint8.float()
    if x.ndim == 3:
        x = x[:, None]
    m = torch.nn.functional.avg_pool2d(x.mean(1, keepdim=True), patch)
    return m.flatten(1)


def background_patches(x_uint8: torch.Tensor, patch: int, max_mean: float = BACKGROUND_MAX) -> torch.Tensor:
    """Boolean B x N: patches whose mean pixel is <= `max_mean` (of 255)."""
    return patch_means(x_uint8, patch) <= max_mean

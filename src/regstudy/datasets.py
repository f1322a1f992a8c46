"""Image-classification datasets for the global-information probe (Table 1): Fashion-MNIST, plus
CIFAR-10/100 and STL-10 through torchvision, or any folder of images, when the user has them.
Every dataset is turned into what the study's models read: grey uint8 images of the model's size.

Names: ``fashion-mnist``, ``cifar10``, ``cifar100``, ``stl10`` (looked for under `root`,
downloaded there if `download`), or ``imagefolder:<path>`` with ``<path>/train/<class>/*`` and
``<path>/test/<class>/*``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import data

TORCHVISION = {"cifar10": "CIFAR10", "cifar100": "CIFAR100", "stl10": "STL10"}


class DatasetMissing(FileNotFoundError):
    pass


def _to_grey_uint8(images, size: int) -> torch.Tensor:
    """List of PIL images -> uint8 N x 1 x size x size (grey, resized with antialiasing)."""
    out = []
    for img in images:
        g = torch.from_numpy(np.asarray(img.convert("L"), dtype=np.float32))[None, None]
        if g.shape[-2:] != (size, size):
            g = F.interpolate(g, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        out.append(g.round().clamp(0, 255).to(torch.uint8)[0])
    return torch.stack(out) if out else torch.zeros(0, 1, size, size, dtype=torch.uint8)


def _take(ds, n: int):
    n = min(n, len(ds)) if n else len(ds)
    items = [ds[i] for i in range(n)]
    return [im for im, _ in items], torch.tensor([int(y) for _, y in items])


def load(name: str, *, root: str | Path = "", size: int = 28, max_train: int = 0, max_test: int = 0,
         download: bool = False) -> dict:
    """{"x_train", "y_train", "x_test", "y_test" (uint8 N x 1 x size x size / int64), "classes": n}."""
    if name == "fashion-mnist":
        raw = data.load_prepared()
        nt = max_train or len(raw["y_train"])
        ne = max_test or len(raw["y_test"])
        d = {"x_train": data.to_device(raw["x_train"][:nt], "cpu"),
             "y_train": torch.from_numpy(raw["y_train"][:nt].astype(np.int64)),
             "x_test": data.to_device(raw["x_test"][:ne], "cpu"),
             "y_test": torch.from_numpy(raw["y_test"][:ne].astype(np.int64))}
        if size != 28:
            for k in ("x_train", "x_test"):
                d[k] = F.interpolate(d[k].float(), size=(size, size), mode="bilinear",
                                     align_corners=False).round().to(torch.uint8)
        return {**d, "classes": 10}
    if name.startswith("imagefolder:"):
        from torchvision.datasets import ImageFolder
        path = Path(name.split(":", 1)[1])
        if not (path / "train").is_dir() or not (path / "test").is_dir():
            raise DatasetMissing(f"{path} must hold train/<class>/ and test/<class>/ folders of images")
        tr, te = ImageFolder(str(path / "train")), ImageFolder(str(path / "test"))
        if tr.classes != te.classes:
            raise DatasetMissing(f"{path}: train and test have different classes ({tr.classes} vs {te.classes})")
        xtr, ytr = _take(tr, max_train)
        xte, yte = _take(te, max_test)
        return {"x_train": _to_grey_uint8(xtr, size), "y_train": ytr, "x_test": _to_grey_uint8(xte, size),
                "y_test": yte, "classes": len(tr.classes)}
    if name in TORCHVISION:
        import torchvision.datasets as tvd
        cls = getattr(tvd, TORCHVISION[name])
        root = Path(root or "data/external")
        try:
            if name == "stl10":
                tr, te = cls(str(root), split="train", download=download), cls(str(root), split="test", download=download)
            else:
                tr, te = cls(str(root), train=True, download=download), cls(str(root), train=False, download=download)
        except RuntimeError as e:
            raise DatasetMissing(f"{name} not found under {root} ({e}). Put torchvision's files there, or "
                                 "allow the download (download=True, needs the internet).") from None
        xtr, ytr = _take(tr, max_train)
        xte, yte = _take(te, max_test)
        return {"x_train": _to_grey_uint8(xtr, size), "y_train": ytr, "x_test": _to_grey_uint8(xte, size),
                "y_test": yte, "classes": int(max(ytr.max(), yte.max())) + 1}
    raise ValueError(f"unknown dataset {name!r}: use fashion-mnist, {', '.join(TORCHVISION)} or imagefolder:<path>")

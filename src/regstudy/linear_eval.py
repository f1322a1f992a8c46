"""Linear evaluation of frozen features (Table 2a, Fig. 8): image classification from [CLS] and a
dense task standing in for ADE20k segmentation: from each patch token, a linear layer predicts
which pixels of its patch are foreground (pixel > 10 of 255); scored by mIoU over fg/bg pixels."""
from __future__ import annotations

import torch

from . import data, extract, probes


def pixel_masks(x_uint8: torch.Tensor, patch: int) -> torch.Tensor:
    """B x N x (patch*patch) foreground masks of every patch (row-major)."""
    fg = (x_uint8.float().mean(1) > data.BACKGROUND_MAX)
    return fg.unfold(1, patch, patch).unfold(2, patch, patch).reshape(len(x_uint8), -1, patch * patch)


def linear_eval(model, train_x, train_y, test_x, test_y, patch: int, *, epochs: int, lr: float, seed: int,
                max_tokens: int = 200_000, device="cpu") -> dict:
    ftr = extract.features(model, train_x, block="norm", device=device)
    fte = extract.features(model, test_x, block="norm", device=device)
    cls = probes.classify(ftr["cls"], train_y, fte["cls"], test_y, epochs=epochs, lr=lr, seed=seed, num_classes=10)
    D = ftr["patches"].shape[-1]
    xtr, mtr = ftr["patches"].reshape(-1, D), pixel_masks(train_x, patch).reshape(-1, patch * patch)
    if len(xtr) > max_tokens:
        keep = torch.randperm(len(xtr), generator=torch.Generator().manual_seed(seed))[:max_tokens]
        xtr, mtr = xtr[keep], mtr[keep]
    seg = probes.mask_probe(xtr, mtr, fte["patches"].reshape(-1, D), pixel_masks(test_x, patch).reshape(-1, patch * patch),
                            epochs=epochs, lr=lr, seed=seed)
    return {"probe_acc": cls.metric, "seg_miou": seg["miou"], "seg_iou_fg": seg["iou_fg"],
            "seg_iou_bg": seg["iou_bg"], "n_train_images": len(train_y), "n_test_images": len(test_y)}

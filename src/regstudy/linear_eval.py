"""Linear evaluation of frozen features (Table 2a, Fig. 8): image classification from [CLS], and a
dense task standing in for ADE20k segmentation: from each frozen patch token, a linear layer
predicts the patch's class: the item's class (10 Fashion-MNIST classes) where the patch shows the
item, "background" (an 11th class) elsewhere; scored by mIoU over the 11 classes. (A
foreground/background task saturates at ~95% on these images and cannot show a difference.)"""
from __future__ import annotations

import torch

from . import data, extract, probes

BACKGROUND_CLASS = 10   # the 11th class of the dense task


def patch_labels(x_uint8: torch.Tensor, y: torch.Tensor, patch: int) -> torch.Tensor:
    """B x N dense labels: the image's class on item patches, BACKGROUND_CLASS on background ones."""
    bg = data.background_patches(x_uint8, patch)
    return torch.where(bg, torch.full_like(bg, BACKGROUND_CLASS, dtype=torch.long), y.long()[:, None].expand_as(bg))


def linear_eval(model, train_x, train_y, test_x, test_y, patch: int, *, epochs: int, lr: float, seed: int,
                max_tokens: int = 200_000, device="cpu") -> dict:
    ftr = extract.features(model, train_x, block="norm", device=device)
    fte = extract.features(model, test_x, block="norm", device=device)
    cls = probes.classify(ftr["cls"], train_y, fte["cls"], test_y, epochs=epochs, lr=lr, seed=seed, num_classes=10)
    D = ftr["patches"].shape[-1]
    xtr, ltr = ftr["patches"].reshape(-1, D), patch_labels(train_x, train_y, patch).reshape(-1)
    if len(xtr) > max_tokens:
        keep = torch.randperm(len(xtr), generator=torch.Generator().manual_seed(seed))[:max_tokens]
        xtr, ltr = xtr[keep], ltr[keep]
    lte = patch_labels(test_x, test_y, patch).reshape(-1)
    dense = probes.classify(xtr, ltr, fte["patches"].reshape(-1, D), lte, epochs=epochs, lr=lr, seed=seed,
                            num_classes=BACKGROUND_CLASS + 1)
    iou = probes.class_iou(dense.predictions, lte, BACKGROUND_CLASS + 1)
    return {"probe_acc": cls.metric, "dense_miou": iou["miou"], "dense_acc": dense.metric,
            "dense_iou_background": iou["per_class"][BACKGROUND_CLASS],
            "n_train_images": len(train_y), "n_test_images": len(test_y)}

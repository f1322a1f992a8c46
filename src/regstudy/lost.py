"""LOST unsupervised object discovery (Siméoni et al., BMVC 2021) and CorLoc.

For each image, from the features F (N x d) of its patch tokens only ([CLS] and registers left
out) of the last block (keys by default):

1. similarity A = F F^T (+ `bias`, as the registers paper allows);
2. degree of a patch = number of patches it correlates positively with (A > 0);
3. seed = the patch of lowest degree (objects cover less of the image than background);
4. expansion: among the `k` lowest-degree patches, keep those that correlate positively with the
   seed (set S);
5. mask = patches whose summed similarity to S is positive; the box is the bounding box of the
   4-connected component of the mask that holds the seed.

Everything is batched over images; images of any size are padded to a multiple of the patch size.

**Against the published implementation** (valeoai/LOST), what we match and what we change on purpose:
- padding: bottom and right, with zeros *after* normalisation, i.e. the data set's mean colour, as
  there (our models are grey: the mean grey);
- CorLoc: a hit is IoU >= 0.5 with any ground-truth box, and the IoU is computed with the same small
  epsilons (1e-7 added to each box height and to the union), so a box at exactly 0.5 counts as the
  reference counts it (a miss); boxes have exclusive ends, without +1 terms;
- ground truth: VOC boxes are 1-based inclusive, so xmin and ymin lose 1 (all objects kept, difficult
  ones too, as by default there); COCO boxes [x, y, w, h] become [x, y, x + w, y + h] rounded to
  whole pixels, crowd boxes dropped (`detection_data`);
- degree ties: the reference sorts degrees with an unstable sort, so the seed among patches of equal
  degree is whatever the sort gives; we sort stably, so the lowest patch index wins (deterministic);
- the degree counts a patch's similarity to itself (always positive), which adds 1 to every degree and
  changes no order; the seed is always put in its own mask (there it is, through its self-similarity,
  in every case we have seen);
- deliberate: `discovery.on_benchmark` feeds our grey models grey images resized so that the longer
  side is `analysis.real_image_size` (the reference runs full-resolution RGB ImageNet models: a grey
  28x28-trained ViT at 500 px would need ~10^4 patches per image). Numbers on VOC/COCO are therefore
  ours, not comparable to the paper's in absolute terms.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from . import data, model as vit


PAD_VALUE = 0.0   # padding after normalisation = the mean colour, as in the reference implementation
IOU_EPS = 1e-7    # the reference's epsilon (box heights and union)


@dataclass
class LostResult:
    seed: torch.Tensor       # B, patch index (row-major) of the seed
    seed_set: torch.Tensor   # B x N bool, the expanded seed set S
    mask: torch.Tensor       # B x h x w bool, the seed's connected component
    boxes: torch.Tensor      # B x 4 (x0, y0, x1, y1) in patch units, exclusive ends
    degree: torch.Tensor     # B x N


def connected_component(mask: torch.Tensor, seed: torch.Tensor) -> torch.Tensor:
    """The 4-connected component of `mask` (B x h x w bool) that holds patch `seed` (B, row-major);
    empty where the seed is not in the mask. Batched flood fill by repeated cross-shaped dilation."""
    B, h, w = mask.shape
    comp = torch.zeros(B, h * w, dtype=torch.bool, device=mask.device)
    comp[torch.arange(B, device=mask.device), seed] = True
    comp = comp.view(B, h, w) & mask
    kernel = torch.tensor([[0, 1, 0], [1, 1, 1], [0, 1, 0]], dtype=torch.float32, device=mask.device)[None, None]
    for _ in range(h * w):
        grown = (F.conv2d(comp[:, None].float(), kernel, padding=1)[:, 0] > 0) & mask
        if torch.equal(grown, comp):
            break
        comp = grown
    return comp


def mask_box(mask: torch.Tensor) -> torch.Tensor:
    """Tight boxes (x0, y0, x1, y1), exclusive ends, of B x h x w masks (all-zero boxes for empty masks)."""
    B, h, w = mask.shape
    rows, cols = mask.any(2), mask.any(1)
    ar_h = torch.arange(h, device=mask.device)
    ar_w = torch.arange(w, device=mask.device)
    y0 = torch.where(rows, ar_h, h).min(1).values
    y1 = torch.where(rows, ar_h, -1).max(1).values + 1
    x0 = torch.where(cols, ar_w, w).min(1).values
    x1 = torch.where(cols, ar_w, -1).max(1).values + 1
    box = torch.stack([x0, y0, x1, y1], 1)
    return torch.where(mask.flatten(1).any(1)[:, None], box, torch.zeros_like(box))


def lost(feats: torch.Tensor, grid: tuple, k: int, bias: float = 0.0) -> LostResult:
    """LOST on patch features `feats` (B x N x d, N = h * w row-major). See the module docstring."""
    B, N, _ = feats.shape
    h, w = grid
    if N != h * w:
        raise ValueError(f"{N} features do not fill a {h}x{w} grid")
    ar = torch.arange(B, device=feats.device)
    A = feats.float() @ feats.float().transpose(1, 2) + bias                  # B x N x N
    degree = (A > 0).sum(-1)                                                   # B x N
    order = torch.argsort(degree, dim=1, stable=True)
    seed = order[:, 0]
    k = max(1, min(k, N))
    potentials = order[:, :k]                                                  # B x k
    seed_sim = A[ar[:, None], seed[:, None], potentials]                       # B x k
    seed_set = torch.zeros(B, N, dtype=torch.bool, device=feats.device)
    seed_set.scatter_(1, potentials, seed_sim > 0)
    seed_set[ar, seed] = True
    score = (A * seed_set[:, :, None].float()).sum(1)                          # B x N: sum over S
    mask = (score > 0).view(B, h, w)
    mask.view(B, N)[ar, seed] = True                                           # the seed is in its own box
    comp = connected_component(mask, seed)
    return LostResult(seed=seed, seed_set=seed_set, mask=comp, boxes=mask_box(comp), degree=degree)


@torch.no_grad()
def discover(model, images_uint8: torch.Tensor, *, k: int, feature: str = "key", bias: float = 0.0,
             batch: int = 256, device="cpu") -> dict:
    """LOST boxes in pixels for uint8 images (B x 1 x H x W, any H, W: padded to the patch size).
    Returns {"boxes": B x 4 pixel boxes clipped to the image, "seed": B, "grid": (h, w), "result": LostResult}."""
    model = model.to(device).eval()
    patch = model.patch_embed.patch_size[0]
    H, W = images_uint8.shape[-2:]
    parts = []
    for i in range(0, len(images_uint8), batch):
        x = vit.pad_to_patch(data.normalize_for(model, images_uint8[i:i + batch].to(device)), patch, value=PAD_VALUE)
        groups, grid = vit.block_features(model, x, -1, feature)
        parts.append((lost(groups.patches, grid, k, bias), grid))
    grid = parts[0][1]
    res = LostResult(*[torch.cat([getattr(p[0], f).cpu() for p in parts]) for f in
                       ("seed", "seed_set", "mask", "boxes", "degree")])
    boxes = res.boxes.float() * patch
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clamp(0, W)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clamp(0, H)
    return {"boxes": boxes, "seed": res.seed, "grid": grid, "result": res}


def iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of boxes a (A x 4) against b (M x 4), (x0, y0, x1, y1) with exclusive ends -> A x M,
    with the reference implementation's epsilons (see the module docstring)."""
    a, b = a.double(), b.double()
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp_min(0).prod(-1)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1] + IOU_EPS)
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1] + IOU_EPS)
    return inter / (area_a[:, None] + area_b[None] - inter + IOU_EPS)


def corloc_hits(pred: torch.Tensor, gts: list, thr: float = 0.5) -> torch.Tensor:
    """Per image: does the predicted box (pred[i]) reach IoU >= thr with any of gts[i] (M_i x 4)?"""
    if len(pred) != len(gts):
        raise ValueError(f"{len(pred)} predicted boxes for {len(gts)} images")
    return torch.tensor([bool(len(g)) and bool((iou(p[None], torch.as_tensor(g).reshape(-1, 4)) >= thr).any())
                         for p, g in zip(pred, gts)])


def corloc(pred: torch.Tensor, gts: list, thr: float = 0.5) -> float:
    """CorLoc: share of images whose predicted box has IoU >= thr with at least one ground-truth box."""
    hits = corloc_hits(pred, gts, thr)
    return int(hits.sum()) / len(hits)

"""Readers for the object-discovery benchmarks of Table 3, when the user has them locally:
VOC2007 / VOC2012 trainval (through torchvision's VOCDetection) and COCO20k (the 19,817-image
subset of COCO train2014 used by LOST, crowd boxes removed). Each reader yields
(image path or PIL image, boxes N x 4 as x0, y0, x1, y1 in pixels with exclusive ends)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


class BenchmarkMissing(FileNotFoundError):
    """A benchmark's folder is not where params.yaml says."""


def voc(root: str | Path, year: str, image_set: str = "trainval", drop_difficult: bool = False) -> list:
    """[(PIL image, boxes)] of VOC`year` `image_set`. `root` holds VOCdevkit/VOC<year>/."""
    from torchvision.datasets import VOCDetection
    root = Path(root)
    if not (root / "VOCdevkit" / f"VOC{year}").is_dir():
        raise BenchmarkMissing(f"{root}/VOCdevkit/VOC{year} not found: point analysis.voc_root at the folder "
                               "that holds VOCdevkit/ (torchvision's VOCDetection layout), or leave it empty")
    ds = VOCDetection(str(root), year=year, image_set=image_set, download=False)
    out = []
    for img, target in ds:
        objs = target["annotation"].get("object", [])
        objs = objs if isinstance(objs, list) else [objs]
        boxes = []
        for o in objs:
            if drop_difficult and str(o.get("difficult", "0")) == "1":
                continue
            b = o["bndbox"]
            # VOC boxes are 1-based inclusive pixel indices: (1, W) covers the whole width
            boxes.append([float(b["xmin"]) - 1, float(b["ymin"]) - 1, float(b["xmax"]), float(b["ymax"])])
        out.append((img, np.asarray(boxes, dtype=np.float32).reshape(-1, 4)))
    return out


def coco20k(root: str | Path, list_file: str | Path) -> list:
    """[(image path, boxes)] for the images named in `list_file` (one file name per line, with or
    without a folder), read from root/train2014/ with boxes from
    root/annotations/instances_train2014.json; crowd annotations are removed."""
    root, list_file = Path(root), Path(list_file)
    ann_path = root / "annotations" / "instances_train2014.json"
    if not ann_path.is_file():
        raise BenchmarkMissing(f"{ann_path} not found: point analysis.coco_root at the COCO folder holding "
                               "annotations/ and train2014/, or leave it empty")
    if not list_file.is_file():
        raise BenchmarkMissing(f"{list_file} not found: analysis.coco20k_list must name the COCO20k file list "
                               "(19,817 file names of train2014, as published with LOST)")
    wanted = [Path(l.strip()).name for l in list_file.read_text().splitlines() if l.strip()]
    ann = json.loads(ann_path.read_text())
    by_name = {im["file_name"]: im for im in ann["images"]}
    boxes = {}
    for a in ann["annotations"]:
        if a.get("iscrowd", 0):
            continue
        x, y, w, h = a["bbox"]
        # as the reference implementation: corners rounded to whole pixels, exclusive ends, no +1
        boxes.setdefault(a["image_id"], []).append([round(x), round(y), round(x + w), round(y + h)])
    out = []
    for name in wanted:
        if name not in by_name:
            raise BenchmarkMissing(f"{name} (from {list_file}) is not in {ann_path}")
        im = by_name[name]
        out.append((root / "train2014" / name,
                    np.asarray(boxes.get(im["id"], []), dtype=np.float32).reshape(-1, 4)))
    return out


def to_model_input(image, size: int) -> tuple:
    """A PIL image or a path -> (uint8 1 x 1 x H' x W' grey tensor with its longer side = `size`,
    scale factor applied to its boxes)."""
    from PIL import Image
    if not hasattr(image, "convert"):
        image = Image.open(image)
    g = np.asarray(image.convert("L"), dtype=np.float32)
    H, W = g.shape
    s = size / max(H, W)
    t = torch.from_numpy(g)[None, None]
    nh, nw = max(1, round(H * s)), max(1, round(W * s))
    t = F.interpolate(t, size=(nh, nw), mode="bilinear", align_corners=False, antialias=True)
    return t.round().clamp(0, 255).to(torch.uint8), s

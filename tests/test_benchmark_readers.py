"""VOC / COCO20k readers and the image-folder path of the global probe, on tiny generated trees."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from regstudy import datasets, detection_data, discovery, global_info, model as vit
from regstudy.config import ModelConfig
from regstudy.norms import OutlierRule


def make_voc(root, year="2007"):
    d = root / "VOCdevkit" / f"VOC{year}"
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    ids = ["000001", "000002"]
    for i, name in enumerate(ids):
        Image.fromarray(np.full((40, 60, 3), 30 * i, np.uint8)).save(d / "JPEGImages" / f"{name}.jpg")
        objs = "".join(f"<object><name>cat</name><difficult>{diff}</difficult><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin>"
                       f"<xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>"
                       for x0, y0, x1, y1, diff in ([(1, 1, 60, 40, 0)] if i == 0 else [(11, 6, 30, 20, 0), (31, 21, 50, 35, 1)]))
        (d / "Annotations" / f"{name}.xml").write_text(
            f"<annotation><filename>{name}.jpg</filename><size><width>60</width><height>40</height><depth>3</depth></size>"
            f"{objs}</annotation>")
    (d / "ImageSets" / "Main" / "trainval.txt").write_text("\n".join(ids) + "\n")


def test_voc_reader(tmp_path):
    make_voc(tmp_path)
    items = detection_data.voc(tmp_path, "2007")
    assert len(items) == 2
    assert items[0][1].tolist() == [[0, 0, 60, 40]]                 # 1-based inclusive -> 0-based exclusive
    assert items[1][1].tolist() == [[10, 5, 30, 20], [30, 20, 50, 35]]
    assert len(detection_data.voc(tmp_path, "2007", drop_difficult=True)[1][1]) == 1
    with pytest.raises(detection_data.BenchmarkMissing, match="VOC2012"):
        detection_data.voc(tmp_path, "2012")


def test_coco20k_reader_drops_crowd_boxes(tmp_path):
    (tmp_path / "annotations").mkdir()
    (tmp_path / "train2014").mkdir()
    names = ["COCO_train2014_000000000009.jpg", "COCO_train2014_000000000025.jpg"]
    for n in names + ["COCO_train2014_000000000030.jpg"]:
        Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(tmp_path / "train2014" / n)
    ann = {"images": [{"id": 9, "file_name": names[0]}, {"id": 25, "file_name": names[1]},
                      {"id": 30, "file_name": "COCO_train2014_000000000030.jpg"}],
           "annotations": [{"image_id": 9, "bbox": [1.4, 2.6, 10.2, 5], "iscrowd": 0},
                           {"image_id": 9, "bbox": [0, 0, 40, 30], "iscrowd": 1},
                           {"image_id": 25, "bbox": [5, 5, 5, 5], "iscrowd": 0}]}
    (tmp_path / "annotations" / "instances_train2014.json").write_text(json.dumps(ann))
    lst = tmp_path / "coco_20k_filenames.txt"
    lst.write_text("\n".join(f"train2014/{n}" for n in names) + "\n")
    items = detection_data.coco20k(tmp_path, lst)
    assert [p.name for p, _ in items] == names
    # corners rounded to whole pixels, as the reference: (1.4, 2.6, 11.6, 7.6) -> (1, 3, 12, 8)
    assert items[0][1].tolist() == [[1, 3, 12, 8]] and items[1][1].tolist() == [[5, 5, 10, 10]]
    lst.write_text("COCO_train2014_000000000099.jpg\n")
    with pytest.raises(detection_data.BenchmarkMissing, match="not in"):
        detection_data.coco20k(tmp_path, lst)


def test_lost_runs_on_real_benchmark_images(tmp_path):
    make_voc(tmp_path)
    items = detection_data.voc(tmp_path, "2007")
    m = vit.build(ModelConfig(embed_dim=16, depth=2, num_heads=2, patch_size=8, img_size=32, registers=1)).eval()
    res = discovery.on_benchmark(m, items, size=36, k=3, feature="key", bias=0.0)   # 36 -> padded to 40
    assert res["n"] == 2 and 0.0 <= res["corloc"] <= 1.0
    x, s = detection_data.to_model_input(items[1][0], 36)
    assert x.shape == (1, 1, 24, 36) and abs(s - 0.6) < 1e-9


def make_imagefolder(root):
    rng = np.random.default_rng(0)
    for split, n in (("train", 30), ("test", 12)):
        for c in ("a", "b"):
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                img = rng.integers(0, 60, (40, 40, 3)).astype(np.uint8)
                if c == "b":
                    img[10:30, 10:30] = 230
                Image.fromarray(img).save(root / split / c / f"{i}.png")


def test_imagefolder_dataset_and_global_probe(tmp_path):
    make_imagefolder(tmp_path / "folder")
    ds = datasets.load(f"imagefolder:{tmp_path / 'folder'}", size=28)
    assert ds["x_train"].shape == (60, 1, 28, 28) and ds["x_train"].dtype == torch.uint8 and ds["classes"] == 2
    m = vit.build(ModelConfig(embed_dim=16, depth=2, num_heads=2, patch_size=4, img_size=28, registers=2)).eval()
    rule = OutlierRule(threshold=None, crossing=1.0, bimodal=False, ashman_d=0, means=(0, 0), sds=(1, 1),
                       weights=(1, 0), n=1)
    res = global_info.global_probe(m, ds, rule, epochs=20, lr=1e-2, seeds=1)
    by = {r["token"]: r for r in res["rows"]}
    assert by["cls"]["measurable"] and by["cls"]["top1"] >= 0.8        # a bright square is easy
    assert "outlier patch" not in by and not res["on_outlier_images"] and res["n_train"] == 60
    assert res["majority_acc"] == 0.5 and res["class_mix"] == [12, 12]
    assert {"register 1", "register 2"} <= set(by)
    with pytest.raises(datasets.DatasetMissing):
        datasets.load(f"imagefolder:{tmp_path / 'nowhere'}")
    with pytest.raises(ValueError, match="unknown dataset"):
        datasets.load("mnist-3d")


def test_torchvision_dataset_absent_is_a_clear_error(tmp_path):
    with pytest.raises(datasets.DatasetMissing, match="cifar10 not found"):
        datasets.load("cifar10", root=tmp_path, download=False)

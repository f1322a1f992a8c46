import json

from regstudy import bench


def test_bench_reports_throughput_and_mfu(tmp_path):
    out = tmp_path / "bench.json"
    assert bench.main(["--models", "vit-s/4", "--n", "1,2", "--batch", "4", "--steps", "1", "--warmup", "0",
                       "--repeats", "1", "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    row = r["results"][0]
    assert [x["models"] for x in r["results"]] == [1, 2]
    assert row["model"] == "vit-s/4" and row["tokens"] == 50 and row["images_per_s"] > 0
    assert 0 < row["mfu"] < 1.5 and r["peak_tflops"] > 0 and r["device"]["device"] in ("cpu", "cuda")


def test_bench_refuses_unknown_models():
    assert bench.main(["--models", "vit-h/14", "--batch", "2", "--steps", "1", "--warmup", "0", "--repeats", "1"]) == 2

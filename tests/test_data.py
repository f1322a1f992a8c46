import gzip
import struct

import numpy as np
import pytest
import torch

from regstudy import data


def write_idx(path, arr, gz=False):
    header = bytes([0, 0, 8, arr.ndim]) + b"".join(struct.pack(">I", s) for s in arr.shape)
    payload = header + arr.astype(np.uint8).tobytes()
    (gzip.open if gz else open)(path, "wb").write(payload)


def fake_raw(folder, gz=True, n_train=60000, n_test=10000):
    folder.mkdir(parents=True, exist_ok=True)
    sfx = ".gz" if gz else ""
    write_idx(folder / f"train-images-idx3-ubyte{sfx}", np.zeros((n_train, 28, 28), np.uint8), gz)
    write_idx(folder / f"train-labels-idx1-ubyte{sfx}", np.arange(n_train) % 10, gz)
    write_idx(folder / f"t10k-images-idx3-ubyte{sfx}", np.ones((n_test, 28, 28), np.uint8), gz)
    write_idx(folder / f"t10k-labels-idx1-ubyte{sfx}", np.arange(n_test) % 10, gz)


def fake_checksums(folder):
    """The content checksums of fake_raw's files (the real ones would refuse them)."""
    from regstudy import sources
    return {stem: sources.content_sha256(sources.find_in(folder)[k]) for k, stem in sources.FILES.items()}


def test_read_idx_roundtrip(tmp_path):
    a = np.random.default_rng(0).integers(0, 255, (5, 28, 28)).astype(np.uint8)
    for gz in (False, True):
        p = tmp_path / f"a{gz}.idx" if not gz else tmp_path / "a.idx.gz"
        write_idx(p, a, gz)
        assert np.array_equal(data.read_idx(p), a)


def test_truncated_idx_is_a_clear_error(tmp_path):
    p = tmp_path / "x.idx"
    write_idx(p, np.zeros((5, 28, 28), np.uint8))
    p.write_bytes(p.read_bytes()[:-10])
    with pytest.raises(data.DataError, match="truncated"):
        data.read_idx(p)
    (tmp_path / "junk").write_bytes(b"hello world")
    with pytest.raises(data.DataError, match="not an IDX file"):
        data.read_idx(tmp_path / "junk")


def test_prepare_from_raw_folder_makes_fixed_split(tmp_path):
    fake_raw(tmp_path / "raw")
    sums = fake_checksums(tmp_path / "raw")
    meta = data.prepare(out_dir=tmp_path / "out", raw_dir=tmp_path / "raw", download=False, checksums=sums)
    assert meta["sizes"] == {"y_train": 55000, "y_val": 5000, "y_test": 10000}
    d = data.load_prepared(tmp_path / "out" / data.PREPARED_NAME)
    assert d["x_train"].dtype == np.uint8 and d["x_train"].shape == (55000, 28, 28)
    meta2 = data.prepare(out_dir=tmp_path / "out2", raw_dir=tmp_path / "raw", download=False, checksums=sums)
    assert meta2["sha256"] == meta["sha256"]      # the split is fixed


def test_wrong_class_counts_are_refused(tmp_path):
    fake_raw(tmp_path / "raw", n_train=600, n_test=100)
    with pytest.raises(data.DataError, match="shape"):
        data.load_raw(data.locate_raw(tmp_path / "raw", download=False, checksums=fake_checksums(tmp_path / "raw")))


def test_missing_prepared_file_names_the_fix(tmp_path):
    with pytest.raises(data.DataError, match="dvc repro prepare"):
        data.load_prepared(tmp_path / "nothing.npz")


def test_augment_is_batched_shift_and_flip():
    x = torch.arange(2 * 28 * 28, dtype=torch.float32).reshape(2, 1, 28, 28) % 251
    g = torch.Generator().manual_seed(0)
    same = data.augment(x, 0, False, g)
    assert torch.equal(same, x)
    for _ in range(5):
        out = data.augment(x, 0, True, g)
        for i in range(2):
            assert torch.equal(out[i], x[i]) or torch.equal(out[i], x[i].flip(-1))
    out = data.augment(x, 2, False, torch.Generator().manual_seed(1))
    # each output is a translate of its input by at most 2 pixels, with zeros shifted in
    for i in range(2):
        found = False
        for dy in range(-2, 3):
            for dx in range(-2, 3):
                ref = torch.zeros_like(x[i])
                src = x[i][:, max(0, dy):28 + min(0, dy), max(0, dx):28 + min(0, dx)]
                ref[:, max(0, -dy):28 - max(0, dy), max(0, -dx):28 - max(0, dx)] = src
                found |= torch.equal(out[i], ref)
        assert found
    a = data.augment(x, 2, True, torch.Generator().manual_seed(5))
    b = data.augment(x, 2, True, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


def test_background_patches():
    x = torch.zeros(1, 1, 28, 28, dtype=torch.uint8)
    x[0, 0, :4, :4] = 200
    bg = data.background_patches(x, 4)
    assert bg.shape == (1, 49) and not bg[0, 0] and bg[0, 1:].all()

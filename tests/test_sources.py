"""Each route to Fashion-MNIST, with fakes: files are used only when their contents check out."""
import gzip
import shutil

import numpy as np
import pytest

from regstudy import sources
from test_data import fake_checksums, fake_raw


@pytest.fixture()
def fakes(tmp_path):
    """A folder of fake (small, valid IDX) files and their content checksums."""
    src = tmp_path / "fake"
    fake_raw(src, n_train=60, n_test=10)
    return src, fake_checksums(src)


def locate(tmp_path, sums, **kw):
    kw.setdefault("debian_dir", tmp_path / "nodeb")
    return sources.locate_raw(tmp_path / "raw", checksums=sums, **kw)


def test_route_1_data_raw(tmp_path, fakes):
    src, sums = fakes
    shutil.copytree(src, tmp_path / "raw")
    files = locate(tmp_path, sums, download=False)
    assert files["train_images"] == tmp_path / "raw" / "train-images-idx3-ubyte.gz"


def test_route_2_debian_folder_used_in_place(tmp_path, fakes):
    src, sums = fakes
    files = locate(tmp_path, sums, debian_dir=src, download=False)
    assert files["test_labels"].parent == src and not (tmp_path / "raw").exists()


def test_a_corrupt_file_is_refused_and_the_next_route_used(tmp_path, fakes):
    src, sums = fakes
    shutil.copytree(src, tmp_path / "raw")
    bad = tmp_path / "raw" / "t10k-labels-idx1-ubyte.gz"
    with gzip.open(bad, "wb") as fh:
        fh.write(b"\0\0\x08\x01" + b"\0" * 20)
    files = locate(tmp_path, sums, debian_dir=src, download=False)
    assert files["test_labels"].parent == src                      # not the corrupt one
    with pytest.raises(sources.DataMissing, match="t10k-labels-idx1-ubyte.gz does not hold .*checksum mismatch"):
        locate(tmp_path, sums, download=False)


def test_plain_and_gzipped_files_have_the_same_content_checksum(tmp_path):
    a = np.arange(100, dtype=np.uint8)
    (tmp_path / "x").write_bytes(a.tobytes())
    with gzip.open(tmp_path / "x.gz", "wb", compresslevel=1) as fh:
        fh.write(a.tobytes())
    assert sources.content_sha256(tmp_path / "x") == sources.content_sha256(tmp_path / "x.gz")


def test_route_3_torchvision_download_lands_in_data_raw(tmp_path, fakes, monkeypatch):
    import torchvision.datasets
    src, sums = fakes

    class FakeDownload:
        def __init__(self, root, train, download):
            shutil.copytree(src, f"{root}/FashionMNIST/raw", dirs_exist_ok=True)
    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", FakeDownload)
    files = locate(tmp_path, sums)
    assert all(p.parent == tmp_path / "raw" for p in files.values())


def test_route_4_apt_download_without_root(tmp_path, fakes, monkeypatch):
    """torchvision offline; apt-get download (first without, then with a package list of its own)
    and dpkg-deb -x, emulated: the files land in data/raw."""
    import torchvision.datasets
    src, sums = fakes
    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", offline)
    calls = []

    def fake_run(cmd, cwd):
        calls.append(cmd)
        if cmd[-1] == sources.DEBIAN_PACKAGE and not any(c.startswith("-oDir::State::Lists") for c in cmd):
            return done(100, stderr="E: Unable to locate package")          # the system has no package list
        if cmd[-1] == sources.DEBIAN_PACKAGE:
            (cwd / f"{sources.DEBIAN_PACKAGE}_0.1_all.deb").write_bytes(b"deb")
        if cmd[0] == "dpkg-deb":
            shutil.copytree(src, f"{cmd[-1]}/{str(sources.DEBIAN_DIR).lstrip('/')}")
        return done(0)
    monkeypatch.setattr(sources, "_run", fake_run)
    monkeypatch.setattr(sources.shutil, "which", lambda name: f"/usr/bin/{name}")
    files = locate(tmp_path, sums)
    assert all(p.parent == tmp_path / "raw" for p in files.values())
    assert [c[0] for c in calls] == ["apt-get", "apt-get", "apt-get", "dpkg-deb"] and "update" in calls[1]


def test_when_every_route_fails_the_error_names_each(tmp_path, monkeypatch):
    import torchvision.datasets
    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", offline)
    monkeypatch.setattr(sources, "_run", lambda cmd, cwd: done(100, stderr="E: Failed to fetch (no network)"))
    monkeypatch.setattr(sources.shutil, "which", lambda name: f"/usr/bin/{name}")
    with pytest.raises(sources.DataMissing) as e:
        locate(tmp_path, sources.CONTENT_SHA256)
    msg = str(e.value)
    assert "1. " in msg and "2. the installed Debian package" in msg
    assert "3. torchvision's download: the download failed (OSError: no network)" in msg
    assert "4. apt-get download dataset-fashion-mnist" in msg and "Failed to fetch (no network)" in msg
    with pytest.raises(sources.DataMissing, match="downloads: not allowed"):
        locate(tmp_path, sources.CONTENT_SHA256, download=False)


def offline(*a, **k):
    raise OSError("no network")


def done(code, stderr=""):
    import subprocess
    return subprocess.CompletedProcess([], code, "", stderr)

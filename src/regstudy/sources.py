"""Where Fashion-MNIST's four raw files come from, tried in order, each file checked before use:

1. ``data/raw/`` in the study's checkout (the four ``*-idx?-ubyte[.gz]`` files);
2. ``/usr/share/datasets/fashion-mnist/``, the Debian/Ubuntu package ``dataset-fashion-mnist``;
3. a download through ``torchvision.datasets.FashionMNIST`` (needs the internet);
4. the same Debian package fetched **without root**: ``apt-get download`` (with a package list of
   its own in a temporary folder when the system's is empty) and ``dpkg-deb -x`` into that folder.

Routes 3 and 4 copy what they fetched into ``data/raw/``. Every file is checked by the SHA-256 of
its *decompressed* contents, the same whichever route and compression it came by (the Debian files
are recompressed, so the gz checksums torchvision publishes do not match them; their contents do).
A file that does not match is refused, never used. If every route fails, the error names each
route and why it failed.
"""
from __future__ import annotations

import gzip
import hashlib
import shutil
import subprocess
import tempfile
from pathlib import Path

from . import paths

FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
# SHA-256 of the decompressed IDX files (Fashion-MNIST as published by Zalando Research)
CONTENT_SHA256 = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
DEBIAN_PACKAGE = "dataset-fashion-mnist"


class DataError(RuntimeError):
    """The dataset is missing, unreadable or not what it should be."""


class DataMissing(DataError):
    """No route gave the four files."""


def content_sha256(path: Path) -> str:
    opener = gzip.open if str(path).endswith(".gz") else open
    h = hashlib.sha256()
    with opener(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def find_in(folder: Path) -> dict | None:
    """{key: path} of the four files in `folder` (plain or .gz), or None if one is missing."""
    found = {}
    for key, stem in FILES.items():
        for cand in (folder / stem, folder / f"{stem}.gz"):
            if cand.is_file():
                found[key] = cand
                break
    return found if len(found) == len(FILES) else None


def check(files: dict, checksums: dict) -> str:
    """'' when every file's contents match `checksums`, else why not."""
    for key, p in files.items():
        try:
            digest = content_sha256(p)
        except (OSError, EOFError) as e:
            return f"{p} is unreadable ({type(e).__name__})"
        if digest != checksums[FILES[key]]:
            return f"{p} does not hold Fashion-MNIST's {FILES[key]} (content checksum mismatch: corrupt or another file)"
    return ""


def _copy_into(files: dict, raw_dir: Path) -> dict:
    raw_dir.mkdir(parents=True, exist_ok=True)
    out = {}
    for key, p in files.items():
        dst = raw_dir / p.name
        if p.resolve() != dst.resolve():
            shutil.copy(p, dst)
        out[key] = dst
    return out


def _run(cmd: list, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600)


def from_folder(folder: Path) -> tuple:
    files = find_in(folder)
    return (files, "") if files else (None, f"the four files are not in {folder}/")


def from_torchvision(raw_dir: Path) -> tuple:
    try:
        from torchvision.datasets import FashionMNIST
        for train in (True, False):
            FashionMNIST(str(raw_dir / "_torchvision"), train=train, download=True)
    except Exception as e:  # no internet, ...
        return None, f"the download failed ({type(e).__name__}: {str(e)[:200]})"
    files = find_in(raw_dir / "_torchvision" / "FashionMNIST" / "raw")
    return (files, "") if files else (None, "the download finished but left no IDX files")


def from_apt(work: Path) -> tuple:
    """apt-get download + dpkg-deb -x, as any user (no root): a package list of our own if needed."""
    if not shutil.which("apt-get") or not shutil.which("dpkg-deb"):
        return None, "apt-get/dpkg-deb are not on this machine (not Debian/Ubuntu)"
    r = _run(["apt-get", "download", DEBIAN_PACKAGE], work)
    if r.returncode:
        lists, cache = work / "lists", work / "cache"
        for d in (lists / "partial", cache / "archives" / "partial"):
            d.mkdir(parents=True, exist_ok=True)
        opts = [f"-oDir::State::Lists={lists}", f"-oDir::Cache={cache}", "-oDebug::NoLocking=1"]
        upd = _run(["apt-get", *opts, "update"], work)
        r = _run(["apt-get", *opts, "download", DEBIAN_PACKAGE], work)
        if r.returncode:
            why = (r.stderr or upd.stderr or "").strip().splitlines()
            return None, f"apt-get download {DEBIAN_PACKAGE} failed ({why[-1] if why else 'no message'})"
    debs = sorted(work.glob(f"{DEBIAN_PACKAGE}_*.deb"))
    if not debs:
        return None, "apt-get download left no .deb file"
    x = _run(["dpkg-deb", "-x", str(debs[-1]), str(work / "root")], work)
    if x.returncode:
        return None, f"dpkg-deb -x failed ({x.stderr.strip()[:200]})"
    files = find_in(work / "root" / str(DEBIAN_DIR).lstrip("/"))
    return (files, "") if files else (None, f"the package holds no IDX files under {DEBIAN_DIR}")


def locate_raw(raw_dir: Path | None = None, debian_dir: Path = DEBIAN_DIR, download: bool = True,
               checksums: dict = CONTENT_SHA256) -> dict:
    """Paths of the four checked IDX files, by the first route that works (module docstring)."""
    raw_dir = Path(raw_dir) if raw_dir else paths.raw_dir()
    tried = []
    with tempfile.TemporaryDirectory(prefix="regstudy-data-") as tmp:
        routes = [(f"1. {raw_dir}/", lambda: from_folder(raw_dir), False),
                  (f"2. the installed Debian package ({debian_dir}/)", lambda: from_folder(debian_dir), False)]
        if download:
            routes += [("3. torchvision's download", lambda: from_torchvision(raw_dir), True),
                       (f"4. apt-get download {DEBIAN_PACKAGE} + dpkg-deb -x (no root)", lambda: from_apt(Path(tmp)), True)]
        for name, route, copy in routes:
            files, why = route()
            if files:
                why = check(files, checksums)
                if not why:
                    return _copy_into(files, raw_dir) if copy else files
            tried.append(f"  {name}: {why}")
    if not download:
        tried.append("  3, 4. downloads: not allowed (--no-download)")
    raise DataMissing("Fashion-MNIST could not be found or fetched. Routes tried:\n" + "\n".join(tried)
                      + f"\nFix one: put the four files (or .gz) in {raw_dir}/, install the Debian package "
                        f"(sudo apt-get install {DEBIAN_PACKAGE}), or give this machine internet access.")

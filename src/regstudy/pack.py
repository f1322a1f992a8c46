"""`python -m regstudy.pack results/<profile>`: one archive of everything worth bringing home from a
remote GPU (figures, tables, summaries, executed-notebook pages, and every run's log.jsonl,
metrics.json and tokens.json), without checkpoints or token-norm arrays, under a size limit
(default 16 MiB). If the archive would be larger, PDFs are left out first (the PNGs stay); if it is
still too large, it stops with the largest files named.

Unpack at home with `tar xzf <archive>` in the repository's root: the paths inside are the
repository's.
"""
from __future__ import annotations

import argparse
import io
import sys
import tarfile
from pathlib import Path

from . import paths

LIMIT = 16 * 2 ** 20
RESULT_FILES = ("*.png", "*.pdf", "*.md", "*.csv", "*.json", "*.html")
RUN_FILES = ("log.jsonl", "metrics.json", "tokens.json")


class TooLarge(RuntimeError):
    pass


def members(results: Path, root: Path) -> list:
    """The files to pack, as paths relative to the repository root."""
    profile = results.name
    files = [p for pat in RESULT_FILES for p in results.rglob(pat)]
    runs = root / "runs" / profile
    files += [p for name in RUN_FILES for p in runs.rglob(name)] if runs.is_dir() else []
    return sorted({p.relative_to(root) for p in files if p.is_file()})


def _tar(files: list, root: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for f in files:
            tar.add(root / f, arcname=str(f))
    return buf.getvalue()


def pack(results: Path, out: Path, limit: int = LIMIT, root: Path | None = None) -> dict:
    root = Path(root or paths.root())
    results = Path(results) if Path(results).is_absolute() else root / results
    if not results.is_dir():
        raise FileNotFoundError(f"{results} does not exist: run the pipeline first (make repro)")
    files = members(results, root)
    blob = _tar(files, root)
    dropped = []
    if len(blob) > limit:
        dropped = [f for f in files if f.suffix == ".pdf"]
        files = [f for f in files if f.suffix != ".pdf"]
        blob = _tar(files, root)
    if len(blob) > limit:
        big = sorted(files, key=lambda f: (root / f).stat().st_size, reverse=True)[:5]
        raise TooLarge(f"the archive would be {len(blob) / 2 ** 20:.1f} MiB, over {limit / 2 ** 20:.0f} MiB even without "
                       f"PDFs; largest files: {', '.join(map(str, big))}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(blob)
    return {"archive": str(out), "files": len(files), "bytes": len(blob), "pdfs_left_out": len(dropped)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", type=Path, help="results/<profile>")
    ap.add_argument("--out", type=Path, default=None, help="default: <profile>-results.tar.gz in the current folder")
    ap.add_argument("--limit-mib", type=float, default=LIMIT / 2 ** 20)
    args = ap.parse_args(argv)
    out = args.out or Path(f"{Path(args.results).name}-results.tar.gz")
    try:
        info = pack(args.results, out, int(args.limit_mib * 2 ** 20))
    except (FileNotFoundError, TooLarge) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{info['archive']}: {info['files']} files, {info['bytes'] / 2 ** 20:.2f} MiB"
          + (f" ({info['pdfs_left_out']} PDFs left out to stay under the limit)" if info["pdfs_left_out"] else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`python -m regstudy.prepare`: find Fashion-MNIST, check it, write the fixed split (DVC stage `prepare`)."""
from __future__ import annotations

import argparse
import json
import sys

from . import data


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--no-download", action="store_true",
                    help="only data/raw/ and the installed Debian package: no torchvision or apt-get download")
    args = ap.parse_args(argv)
    try:
        meta = data.prepare(download=not args.no_download)
    except data.DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps({k: meta[k] for k in ("source", "sizes")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Progress of the long loops (training steps, feature extraction, probes, LOST on benchmarks): a
tqdm bar when stderr is a terminal; otherwise a plain line now and then and one at the end, so that
logs (papermill, dvc repro, CI) stay readable instead of filling with carriage returns.

REGSTUDY_PROGRESS=0 silences it, =1 forces plain lines. A loop run inside one that already shows
progress stays silent, so that a probe inside an analysis does not print over the analysis."""
from __future__ import annotations

import os
import sys
import time

from tqdm import tqdm

ENV = "REGSTUDY_PROGRESS"
LINE_EVERY_S = 10.0      # plain mode: at most one line per LINE_EVERY_S seconds ...
LINE_EVERY_FRAC = 0.1    # ... and per tenth of the loop (when its length is known), plus the last
_showing = 0             # loops showing progress now (0 or 1)


def mode() -> str:
    """"off", "plain" or "bar", from $REGSTUDY_PROGRESS and whether stderr is a terminal."""
    env = os.environ.get(ENV, "").strip()
    if env == "0":
        return "off"
    return "plain" if env == "1" or not sys.stderr.isatty() else "bar"


class Progress:
    """`iterable`, reporting how far it has gone while it is iterated; see bar()."""

    def __init__(self, iterable, total: int | None, desc: str, unit: str):
        self.iterable, self.desc, self.unit, self.text = iterable, desc, unit, ""
        self.total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
        self.n, self._tqdm = 0, None

    def set_postfix(self, text: str) -> None:
        """What follows the count, e.g. "loss 0.52, acc 0.81, 1,900 img/s". Callers set it when
        they have the values at hand; it is shown with the next line or refresh."""
        self.text = text
        if self._tqdm is not None:
            self._tqdm.set_postfix_str(text, refresh=False)

    def line(self, seconds: float) -> str:
        count = (f"{100 * self.n // self.total}% ({self.n:,}/{self.total:,} {self.unit}"
                 if self.total else f"{self.n:,} {self.unit} (")
        return f"{self.desc}: {count}, {seconds:.0f} s)" + (f", {self.text}" if self.text else "")

    def __iter__(self):
        global _showing
        how = "off" if _showing else mode()
        if how == "off":
            yield from self.iterable
            return
        _showing += 1
        try:
            if how == "bar":
                with tqdm(total=self.total, desc=self.desc, unit=self.unit, file=sys.stderr, dynamic_ncols=True) as t:
                    self._tqdm = t
                    for x in self.iterable:
                        yield x
                        t.update(1)
                return
            start = last = time.perf_counter()
            last_n = 0
            for x in self.iterable:
                yield x
                self.n += 1
                now = time.perf_counter()
                if now - last >= LINE_EVERY_S and (not self.total or self.n - last_n >= LINE_EVERY_FRAC * self.total):
                    print(self.line(now - start), file=sys.stderr, flush=True)
                    last, last_n = now, self.n
            if self.n != last_n:
                print(self.line(time.perf_counter() - start), file=sys.stderr, flush=True)
        finally:
            _showing -= 1


def bar(iterable, total: int | None = None, desc: str = "", unit: str = "items") -> Progress:
    """`iterable` with progress reporting (module docstring); `total` defaults to len(iterable)."""
    return Progress(iterable, total, desc, unit)

"""Tables (Markdown + CSV + JSON), the paper's reference numbers, and the paper-vs-ours table.

Each analysis notebook writes its tables with :func:`write_table` and its comparisons with the paper
with :func:`write_claims`; the report notebook gathers the claims into
``results/<profile>/paper_vs_ours.md`` with :func:`paper_vs_ours`. Nothing here is typed by hand:
every "ours" value arrives from a computed result."""
from __future__ import annotations

import csv
import json
import math
import time
from pathlib import Path

from . import config, paths, verdicts
from .config import Profile

def reference(name: str) -> list:
    """Rows (dicts of strings) of a paper reference table, e.g. reference("linear_eval")."""
    path = paths.REFERENCE_DIR / f"{name}.csv"
    if not path.is_file():
        raise FileNotFoundError(f"no reference table {path.name} in {paths.REFERENCE_DIR}")
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def fact(key: str) -> str:
    for r in reference("facts"):
        if r["key"] == key:
            return r["value"]
    raise KeyError(f"no paper fact {key!r} in reference/facts.csv")


def fmt(x, digits: int = 3, pct: bool = False) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    if isinstance(x, (int,)) and not isinstance(x, bool):
        return f"{x:,}"
    if isinstance(x, float):
        return f"{100 * x:.{max(digits - 2, 1)}f}%" if pct else f"{x:.{digits}g}"
    return str(x)


def pm(mean, sd, digits: int = 3, pct: bool = False) -> str:
    if mean is None or (isinstance(mean, float) and not math.isfinite(mean)):
        return "n/a"
    if sd is None or (isinstance(sd, float) and not math.isfinite(sd)):
        return fmt(mean, digits, pct)
    return f"{fmt(mean, digits, pct)} ± {fmt(sd, digits, pct)}"


def pm_of(values, digits: int = 3, pct: bool = False) -> str:
    """'mean ± sd' over seeds (sd with ddof=1; just the mean for one value; n/a for none)."""
    v = [float(x) for x in values if x is not None and math.isfinite(float(x))]
    if not v:
        return "n/a"
    mean = sum(v) / len(v)
    sd = math.sqrt(sum((x - mean) ** 2 for x in v) / (len(v) - 1)) if len(v) > 1 else None
    return pm(mean, sd, digits, pct)


def markdown_table(rows: list, columns: list | None = None) -> str:
    columns = columns or list(rows[0].keys())
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        lines.append("| " + " | ".join(str(r.get(c, "")).replace("|", "/") for c in columns) + " |")
    return "\n".join(lines)


def write_table(profile: Profile, out: Path, name: str, rows: list, *, title: str, note: str = "",
                columns: list | None = None) -> str:
    """Write <out>/<name>.{md,csv,json} (`out`: the notebook's results folder); return the Markdown."""
    d = Path(out)
    columns = columns or list(rows[0].keys())
    banner = f"> **{profile.label}**\n\n" if profile.smoke else ""
    md = f"### {title}\n\n{banner}{markdown_table(rows, columns)}\n" + (f"\n{note}\n" if note else "")
    (d / f"{name}.md").write_text(md)
    with open(d / f"{name}.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    (d / f"{name}.json").write_text(json.dumps({"title": title, "profile": profile.name, "smoke": profile.smoke,
                                                "rows": rows, "note": note}, indent=1, default=str) + "\n")
    return md


def write_claims(profile: Profile, out: Path, claims: list) -> Path:
    """<out>/claims.json: this notebook's rows of paper_vs_ours.md (made by regstudy.verdicts). In a
    smoke run every "holds" reads SMOKE: what the tiny models gave is kept as "computed" (for the
    tests), never shown as a verdict."""
    rows = []
    for c in claims:
        c = dict(c)
        if profile.smoke:
            c["computed"] = c["holds"]
            c["holds"] = verdicts.SMOKE
        rows.append(c)
    p = Path(out) / "claims.json"
    p.write_text(json.dumps({"profile": profile.name, "smoke": profile.smoke, "claims": rows}, indent=1) + "\n")
    return p


ORDER = ["fig03_fig07_norms", "fig04ab_norms_layers_training", "fig04c_model_size", "fig05_local_information",
         "tab01_global_information", "fig01_fig02_fig09_attention", "fig08_tab02a_ablation", "tab03_lost",
         "ttr_test_time_registers", "pretrained_models"]
NOT_RUN = {"pretrained_models": "the profile lists no public models: `make repro PROFILE=pretrained` runs them",
           "default": "the pipeline stopped before this analysis (time budget?)"}


def paper_vs_ours(profile: Profile, provenance: str, out_dir: Path | None = None) -> str:
    """Gather the claims.json of every notebook of the profile into results/<profile>/paper_vs_ours.md
    (and metrics/findings.json), or into `out_dir` for a run by hand."""
    d = paths.results_dir(profile.name)
    files = sorted(d.glob("*/claims.json"),
                   key=lambda p: (ORDER.index(p.parent.name) if p.parent.name in ORDER else 99, p.parent.name))
    rows = []
    for f in files:
        c = json.loads(f.read_text())
        if c["profile"] != profile.name:
            raise ValueError(f"{f} belongs to profile {c['profile']!r}, not {profile.name!r}")
        rows += c["claims"]
    have = {f.parent.name for f in files}
    trains = bool(config.load().families)
    rows += [{"artefact": name, "quantity": "(every finding of this notebook)", "paper": "", "ours": "not run",
              "holds": "not run", "seeds": "",
              "note": NOT_RUN.get(name, NOT_RUN["default"]) if trains else "this profile trains no models"}
             for name in ORDER if name not in have]
    head = [f"# Paper vs ours: {profile.label}", ""]
    if profile.smoke:
        head += ["> **SMOKE RUN.** Tiny models trained for seconds on a CPU: this table checks the plumbing. "
                 "None of the 'ours' values is a result, and the 'holds' column says nothing about the paper.", ""]
    head += [f"Generated by the `report` stage on {time.strftime('%Y-%m-%d')}. {provenance}", "",
             "'holds' says whether the *direction* of the paper's finding holds at our scale in every seed "
             f"(yes / no / not measurable; at least {verdicts.MIN_SEEDS} seeds are needed), and 'seeds' in how many "
             "seeds it held. The paper's numbers come from much larger models and other data, so only directions "
             "compare; each rule is a named constant in `regstudy.verdicts`.", ""]
    md = "\n".join(head) + "\n" + markdown_table(rows, ["artefact", "quantity", "paper", "ours", "holds", "seeds", "note"]) + "\n"
    out_dir = paths.root() / out_dir if out_dir else paths.results_dir(profile.name)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "paper_vs_ours.md").write_text(md)
    write_findings_metrics(profile, rows, out_dir / "metrics")
    return md


def write_findings_metrics(profile: Profile, rows: list, out_dir: Path) -> Path:
    """results/<profile>/metrics/findings.json: how many findings got each verdict (a column of
    `dvc metrics show` and `dvc exp show`: does an experiment change what holds?)."""
    counts = {}
    for r in rows:
        counts[r["holds"]] = counts.get(r["holds"], 0) + 1
    out = Path(out_dir) / "findings.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"smoke": profile.smoke, "findings": len(rows), "verdicts": counts}, indent=1) + "\n")
    return out

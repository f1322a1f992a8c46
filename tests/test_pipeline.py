"""The smoke `dvc repro`, end to end, in a fresh copy of the checkout (CI runs this on 2 CPU cores)."""
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO

FIGURES = ["fig01_fig02_fig09_attention/fig01_fig02_cls_attention", "fig01_fig02_fig09_attention/fig09_register_attention",
           "fig03_fig07_norms/fig03_norm_maps", "fig03_fig07_norms/fig03_norm_histogram",
           "fig03_fig07_norms/fig07_norm_histograms", "fig04ab_norms_layers_training/fig04a_norms_per_block",
           "fig04ab_norms_layers_training/fig04b_norms_over_training", "fig04c_model_size/fig04c_model_size",
           "fig05_local_information/fig05a_neighbour_cosine",
           "fig08_tab02a_ablation/fig08_register_ablation", "tab03_lost/tab03_lost_examples",
           "emergence/emergence_curves", "emergence/emergence_phase_diagram"]
TABLES = ["tab01_global_information/tab01_global_information", "fig08_tab02a_ablation/tab02a_linear_eval",
          "tab03_lost/tab03_lost", "fig05_local_information/fig05b_local_information", "fig03_fig07_norms/norms_summary"]


def checkout_copy(dst: Path) -> Path:
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                           text=True, check=True).stdout.split("\n")
    for f in filter(None, files):
        src = REPO / f
        if src.is_file() and not f.startswith(("results/", "runs/")) and f != "dvc.lock":
            (dst / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / f)
    if (REPO / "data" / "raw").is_dir():
        shutil.copytree(REPO / "data" / "raw", dst / "data" / "raw")
    git = ["git", "-c", "user.name=ci", "-c", "user.email=ci@localhost"]
    subprocess.run(git + ["init", "-q"], cwd=dst, check=True)
    subprocess.run(git + ["add", "-A"], cwd=dst, check=True)
    subprocess.run(git + ["commit", "-qm", "smoke"], cwd=dst, check=True)
    return dst


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """A fresh copy of the checkout after `python -m regstudy.repro --profile smoke` (the README's main job),
    run the way a machine rented by the minute runs it: first with a time budget that has passed before the
    first training stage starts (so training pauses whatever the machine's speed: a 40 s budget let a fast
    CI machine finish the core's training and pause nothing), then again without one (the paused runs
    resume). A pause between epochs is tested deterministically, with a fake clock, in test_train.py."""
    repo = checkout_copy(tmp_path_factory.mktemp("smoke") / "study")
    env = dict(os.environ, REGSTUDY_ROOT=str(repo), PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    env.pop("REGSTUDY_DEADLINE", None)
    t0 = time.time()
    cmd = [sys.executable, "-m", "regstudy.repro", "--profile", "smoke"]
    first = subprocess.run(cmd + ["--time-budget", "1"], cwd=repo, env=env, capture_output=True, text=True)
    runs_dir = repo / "runs" / "smoke"
    first.finished = {d.parent.name for d in runs_dir.glob("*/*/*/metrics.json")}
    first.paused = {log.parent.name for log in runs_dir.glob("*/*/*/log.jsonl")
                    if json.loads(log.read_text().splitlines()[-1])["type"] == "paused"}
    r = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True)
    print(f"smoke dvc repro (paused once, then resumed): {(time.time() - t0) / 60:.1f} min")
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    return repo, env, first


@pytest.mark.slow
def test_smoke_pipeline_end_to_end(smoke):
    repo, env, _ = smoke
    res = repo / "results" / "smoke"
    for f in FIGURES:
        assert (res / f"{f}.png").stat().st_size > 1000 and (res / f"{f}.pdf").is_file(), f
    for t in TABLES:
        md = (res / f"{t}.md").read_text()
        assert "SMOKE" in md, t
    norms = json.loads((res / "fig03_fig07_norms" / "runs.json").read_text())
    keys = {"registers", "seed", "epochs", "test_acc", "outlier_frac", "outlier_bg_share", "threshold", "device",
            "train_seconds"}
    assert len(norms) == 6 and all(keys <= set(r) for r in norms) and all(r["smoke"] for r in norms)
    abl = json.loads((res / "fig08_tab02a_ablation" / "runs.json").read_text())
    assert {(r["registers"], r["seed"]) for r in abl} == {(k, s) for k in (0, 1, 2, 4, 8, 16) for s in (0, 1, 2)}
    assert all({"registers", "seed", "test_acc", "probe_acc", "dense_miou", "outlier_frac", "frac_at_base"} <= set(r)
               for r in abl)
    pvo = (res / "paper_vs_ours.md").read_text()
    assert "SMOKE RUN" in pvo and "Table 3" in pvo and "Fig. 5b" in pvo and "Table 2a" in pvo
    assert "| seeds |" in pvo and "| yes |" not in pvo and "| no |" not in pvo   # smoke: no verdicts
    for nb in (res / "executed").glob("*.ipynb"):
        assert "SMOKE" in nb.read_text() or nb.name == "report.ipynb", nb
    em = (res / "emergence" / "emergence.csv").read_text().splitlines()
    assert em[0].startswith("variant,registers,seed") and len(em) == 1 + 2 * 2 * 2 * 2   # variants x registers x epochs x blocks
    assert json.loads((res / "emergence" / "onsets.json").read_text())["smoke"] is True
    lock = (repo / "dvc.lock").read_text()
    html = sorted(p.name for p in (res / "html").glob("*.html"))
    assert len(html) == 12 and "report.html" in html and "emergence.html" in html   # 9 analyses, emergence, pretrained, report and all((res / "html" / h).stat().st_size > 10_000 for h in html)
    assert "train@scene-r4:" in lock and "train@r16:" in lock and "analysis@tab03_lost:" in lock and "report:" in lock
    assert "emergence:" in lock
    status = subprocess.run([sys.executable, "-m", "dvc", "status"], cwd=repo, env=env, capture_output=True, text=True)
    assert "up to date" in status.stdout, status.stdout
    # an edit to an analysis-only module leaves every training stage up to date
    report_py = repo / "src" / "regstudy" / "report.py"
    text = report_py.read_text()
    report_py.write_text(text + "\n# an edit\n")
    try:
        status = subprocess.run([sys.executable, "-m", "dvc", "status", "--json"], cwd=repo, env=env,
                                capture_output=True, text=True)
        changed = set(json.loads(status.stdout))
    finally:
        report_py.write_text(text)
    assert "report" in changed and "analysis@fig03_fig07_norms" in changed
    assert not {s for s in changed if s.startswith("train")}, changed


@pytest.mark.slow
def test_a_time_budget_pauses_training_and_the_next_call_resumes_it(smoke):
    repo, env, first = smoke
    assert first.returncode == 75, first.stdout[-3000:] + first.stderr[-3000:]
    assert "time budget reached" in first.stderr and "Run the same command again" in first.stderr
    assert first.paused and not first.finished, (first.paused, first.finished)   # paused, nothing trained yet
    assert all(name in first.stderr for name in first.paused)                    # ... and it names them
    runs = sorted((repo / "runs" / "smoke").glob("*/*/*/log.jsonl"))
    assert len(runs) == 26 + 2 * 2 * 1                     # the families' runs, and the emergence grid's (2 variants x 2)
    for log in runs:                                       # the second call finished every run
        types = [json.loads(l)["type"] for l in log.read_text().splitlines()]
        assert types[0] == "config" and types[-1] == "final", (log, types)


@pytest.mark.slow
def test_a_notebook_run_by_hand_writes_to_its_output_dir_and_checks_its_parameters(smoke):
    repo, env, _ = smoke
    res = repo / "results" / "smoke"
    before = {p: p.read_bytes() for p in res.rglob("*") if p.is_file()}
    (repo / "scratch").mkdir(exist_ok=True)
    cmd = ["papermill", "-k", "python3", "--no-progress-bar", "notebooks/fig04c_model_size.ipynb",
           str(repo / "scratch" / "fig04c.ipynb"), "-p", "profile", "smoke", "-p", "output_dir", "scratch/fig04c"]
    r = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (repo / "scratch" / "fig04c" / "fig04c_model_size.png").stat().st_size > 1000
    assert {p: p.read_bytes() for p in res.rglob("*") if p.is_file()} == before     # tracked results untouched
    bad = ["papermill", "-k", "python3", "--no-progress-bar", "notebooks/fig03_fig07_norms.ipynb",
           str(repo / "scratch" / "fig03.ipynb"), "-p", "profile", "smoke", "-p", "map_seed", "7",
           "-p", "output_dir", "scratch/fig03"]
    r = subprocess.run(bad, cwd=repo, env=env, capture_output=True, text=True)
    assert r.returncode != 0 and "seed 7 is not trained" in r.stdout + r.stderr
    assert {p: p.read_bytes() for p in res.rglob("*") if p.is_file()} == before


def plant_outliers(run_dir: Path) -> None:
    """Test-only: replace a run's outlier rule by one that flags its top half of norms, so that the
    analysis notebooks take the code paths the study needs when outliers exist (the smoke models
    have none). Half, not a few percent: the smoke models' background norms all lie below their
    foreground's, and Fig. 5a compares outliers *on background* with normal background tokens, so
    the planted rule must reach into the background. What it makes is a test artefact, never a result."""
    import numpy as np
    import torch
    from regstudy import norms
    tok = json.loads((run_dir / "tokens.json").read_text())
    with np.load(run_dir / "norms.npz") as z:
        patch = z["patch"].astype(np.float64)
        bg = z["background"]
    last = patch[-1]
    thr = float(np.quantile(last, 0.5))
    flags = last > thr
    last[flags] *= 5       # the stored last-block norms of the planted tokens: a clear high-norm mode (the
                           # threshold stays, so that the analyses that recompute norms from the model flag them too)
    with np.load(run_dir / "norms.npz") as z:
        arrays = {k: z[k] for k in z.files}
    arrays["patch"][-1][flags] *= 5
    np.savez_compressed(run_dir / "norms.npz", **arrays)
    patch[-1] = last
    ref = float(np.median(last[bg])) if bg.any() else float(np.median(last))
    tok["rule"].update(threshold=thr, crossing=thr, bimodal=True, ashman_d=3.0, components=2,
                       means=[float(np.log(np.median(last))), float(np.log(last[flags].mean()))],
                       sds=[0.3, 0.1], weights=[0.5, 0.5], reference_median=ref, relative_threshold=thr,
                       mixture_threshold=thr, mode_ratio=float(np.median(last[flags]) / ref))
    tok.update(threshold=thr, bimodal=True, found=True, outlier_frac=float(flags.mean()), n_outliers=int(flags.sum()),
               outlier_bg_share=float((flags & bg).sum() / flags.sum()),
               norm_ratio=float(np.median(last[flags]) / ref),
               tracked=norms.track_through_depth(torch.from_numpy(patch), torch.from_numpy(flags), torch.from_numpy(bg)))
    (run_dir / "tokens.json").write_text(json.dumps(tok))


@pytest.mark.slow
def test_analyses_take_their_outlier_paths(smoke):
    repo, env, _ = smoke
    for d in (repo / "runs" / "smoke" / "main").glob("r0/r0-s*"):
        plant_outliers(d)
    for d in (repo / "runs" / "smoke" / "size").glob("size-*/size-*"):
        plant_outliers(d)
    out = repo / "planted"
    out.mkdir()
    for nb in ("fig03_fig07_norms", "fig04ab_norms_layers_training", "fig04c_model_size", "fig05_local_information",
               "tab01_global_information", "fig01_fig02_fig09_attention"):
        r = subprocess.run(["papermill", "-k", "python3", "--no-progress-bar", f"notebooks/{nb}.ipynb",
                            str(out / f"{nb}.ipynb"), "-p", "profile", "smoke"], cwd=repo, env=env,
                           capture_output=True, text=True)
        assert r.returncode == 0, nb + r.stderr[-3000:]
    claims = {}
    for f in (repo / "results" / "smoke").glob("*/claims.json"):
        for c in json.loads(f.read_text())["claims"]:
            claims[c["quantity"]] = c
    decided = ("a small share of patch tokens are high-norm outliers (baseline)", "outliers sit on background patches",
               "outlier norm / background norm (medians)",
               "input similarity to the 4 neighbours, outlier vs normal background tokens",
               "outlier token approaches [CLS] while a normal token stays far below (baseline)",
               "[CLS] attention per token: outlier vs normal background tokens (baseline)")
    reached = ("position top-1, normalised gain over the majority position, outlier vs normal background",
               "block where the outlier tokens become high-norm (tracked through depth, baseline)")
    for q in decided + reached:
        # smoke claims show no verdict; what the planted data gave is kept as "computed"
        assert claims[q]["holds"] == "n/a (smoke)" and "/3 seeds" in claims[q]["seeds"], (q, claims[q])
        assert claims[q]["computed"] in ("yes", "no") or q in reached, (q, claims[q])
    depth = claims["block where the outlier tokens become high-norm (tracked through depth, baseline)"]
    assert depth["computed"] in ("yes", "no"), depth
    table = (repo / "results" / "smoke" / "fig05_local_information" / "fig05b_local_information.md").read_text()
    assert "not measurable" not in table
    assert (repo / "results" / "smoke" / "fig05_local_information" / "fig05b_local_information.png").stat().st_size > 1000


def dvc(repo, env, *args):
    r = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=repo, env=env, capture_output=True, text=True)
    assert r.returncode == 0, (args, r.stdout[-3000:], r.stderr[-3000:])
    return r.stdout


@pytest.mark.slow
def test_dvc_metrics_and_plots_show_the_smoke_outputs(smoke, tmp_path):
    repo, env, _ = smoke
    metrics = json.loads(dvc(repo, env, "metrics", "show", "--json"))
    files = next(iter(metrics.values()))["data"]
    r0 = files["results/smoke/metrics/r0.json"]["data"]
    assert r0["seeds"] == 3 and 0 < r0["test_acc"]["mean"] <= 1 and r0["test_acc"]["sd"] >= 0
    assert len([f for f in files if f.startswith("results/smoke/metrics/")]) == 11      # 10 families + findings
    findings = files["results/smoke/metrics/findings.json"]["data"]
    assert findings["smoke"] and set(findings["verdicts"]) <= {"n/a (smoke)", "not run"}
    text = dvc(repo, env, "metrics", "show")
    assert "test_acc.mean" in text and "r4.json" in text
    dvc(repo, env, "plots", "show", "-o", str(tmp_path / "plots"))
    html = (tmp_path / "plots" / "index.html").read_text()
    assert "r0-s0.csv" in html and "scene-r4-s2.csv" in html and "fig03_norm_maps.png" in html
    curve = (repo / "results" / "smoke" / "curves" / "r0" / "r0-s0.csv").read_text().splitlines()
    assert curve[0] == "epoch,train_loss,val_loss,val_acc,bg_ratio,outlier_share" and len(curve) == 1 + 2


@pytest.mark.slow
def test_an_experiment_changes_one_parameter_and_shows_its_metrics(smoke):
    """The README's `dvc exp run -S` example, on one small family (the last test: it edits params.yaml)."""
    repo, env, _ = smoke
    env = dict(env, GIT_AUTHOR_NAME="ci", GIT_AUTHOR_EMAIL="ci@localhost", GIT_COMMITTER_NAME="ci",
               GIT_COMMITTER_EMAIL="ci@localhost")
    before = json.loads((repo / "results" / "smoke" / "metrics" / "size-ti.json").read_text())
    dvc(repo, env, "exp", "run", "-n", "one-epoch", "-S", "train.epochs=1", "train@size-ti")
    log = (repo / "runs" / "smoke" / "size" / "size-ti" / "size-ti-s0" / "log.jsonl").read_text()
    assert [json.loads(l)["type"] for l in log.splitlines()].count("epoch") == 1
    after = json.loads((repo / "results" / "smoke" / "metrics" / "size-ti.json").read_text())
    assert after != before
    shown = json.loads(dvc(repo, env, "exp", "show", "--json"))
    text = json.dumps(shown)
    assert "one-epoch" in text and "size-ti.json" in text
    table = dvc(repo, env, "exp", "show", "--no-pager", "--only-changed", "--md")
    assert "one-epoch" in table and "train.epochs" in table


@pytest.mark.slow
def test_the_pretrained_profile_runs_offline_on_random_twins(tmp_path):
    """`make repro PROFILE=pretrained` with `weights: random`: every public architecture of the profile,
    random weights, no download; a stage of its own, nothing trained, and a report that says so."""
    import yaml
    from regstudy import config
    repo = checkout_copy(tmp_path / "study")
    raw = yaml.safe_load(config.preset_path("pretrained").read_text())
    raw["pretrained"].update(weights="random", images=2, image_size=56)
    (repo / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    env = dict(os.environ, REGSTUDY_ROOT=str(repo), PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    r = subprocess.run([sys.executable, "-m", "regstudy.repro", "--profile", "pretrained"], cwd=repo, env=env,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    res = repo / "results" / "pretrained"
    for f in ("pretrained_norm_maps", "pretrained_cls_attention", "pretrained_norm_histograms"):
        assert (res / "pretrained_models" / f"{f}.png").stat().st_size > 1000
    table = (res / "pretrained_models" / "pretrained_models.csv").read_text()
    assert table.count("\n") == 1 + len(raw["pretrained"]["models"])
    pvo = (res / "paper_vs_ours.md").read_text()
    assert "n/a (random weights)" in pvo and "this profile trains no models" in pvo
    lock = (repo / "dvc.lock").read_text()
    assert "pretrained:" in lock and "train@" not in lock
    assert not (repo / "runs" / "pretrained").exists()

import json

import pytest

from regstudy import config, paths, report, verdicts


def test_reference_tables_are_shipped():
    assert {r["token"] for r in report.reference("local_info_probe")} == {"normal", "outlier"}
    lost = report.reference("object_discovery_lost")
    assert [r["model"] for r in lost].count("DeiT-III") == 2
    assert report.fact("outlier_share_pct") == "2.37"


def test_paper_vs_ours_gathers_claims_with_seeds(study_root):
    prof = config.preset("study").active
    out = paths.stage_dir("study", "fig03_fig07_norms")
    report.write_claims(prof, out, [verdicts.claim("Fig. 3", "share", "2%", "1.0%", [True, True, True])])
    out2 = paths.stage_dir("study", "tab03_lost")
    report.write_claims(prof, out2, [verdicts.claim("Table 3", "corloc", "27", "n/a", [True, None, True])])
    md = report.paper_vs_ours(prof, "test runs.")
    assert "SMOKE" not in md and md.index("Fig. 3") < md.index("Table 3")
    assert "| Fig. 3 | share | 2% | 1.0% | yes | 3/3 seeds |" in md
    assert "| not measurable (in 1 of 3 seeds) | 2/3 seeds (1 not measurable) |" in md
    assert "| fig05_local_information | (every finding of this notebook) |  | not run | not run |" in md
    assert (paths.results_dir("study") / "paper_vs_ours.md").read_text() == md


def test_smoke_claims_give_no_verdict(study_root):
    prof = config.load_profile("smoke")
    out = paths.stage_dir("smoke", "fig03_fig07_norms")
    report.write_claims(prof, out, [verdicts.claim("Fig. 3", "share", "2%", "1.0%", [True, True, True])])
    c = json.loads((out / "claims.json").read_text())["claims"][0]
    assert c["holds"] == verdicts.SMOKE == "n/a (smoke)" and c["computed"] == "yes"
    md = report.paper_vs_ours(prof, "test runs.")
    assert "SMOKE RUN" in md and "| yes |" not in md and "| no |" not in md


def test_tables_and_formatting(study_root, tmp_path):
    prof = config.load_profile("smoke")
    md = report.write_table(prof, tmp_path, "t", [{"a": 1, "b": "x|y"}], title="T")
    assert "SMOKE" in md and "x/y" in md
    assert json.loads((tmp_path / "t.json").read_text())["rows"][0]["a"] == 1
    assert report.pm_of([0.1, 0.2], pct=True) == "15.0% ± 7.1%"
    assert report.pm_of([]) == "n/a" and report.pm_of([2.0]) == "2"

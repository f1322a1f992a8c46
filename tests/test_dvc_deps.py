"""The training stages depend on exactly the modules the training notebook imports: an edit to an
analysis-only module (report.py, verdicts.py, ...) leaves every trained model up to date."""
import json
import subprocess
import sys

import yaml

from conftest import REPO


def imported_by_training() -> set:
    nb = json.loads((REPO / "notebooks" / "train.ipynb").read_text())
    imports = [l for c in nb["cells"] if c["cell_type"] == "code" for l in "".join(c["source"]).splitlines()
               if l.startswith("from regstudy import")]
    # the notebook's first step, config.load(), imports what validates params.yaml's blocks too
    code = ("\n".join(imports) + f"\nconfig.load({str(REPO / 'params.yaml')!r})"
            + "\nimport sys; print(' '.join(m for m in sys.modules if m.startswith('regstudy')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    return {"src/regstudy/__init__.py" if m == "regstudy" else f"src/regstudy/{m.split('.', 1)[1]}.py" for m in out}


def test_training_stages_depend_on_the_modules_they_import():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    want = imported_by_training()
    deps = {d for d in stages["train"]["do"]["deps"] if d.startswith("src/")}
    assert deps == want, deps ^ want
    assert "src/regstudy/report.py" not in want and "src/regstudy/verdicts.py" not in want


def test_the_shipped_profiles_are_no_stage_dependency():
    """Stages that depend on the whole src/regstudy folder must not go out of date when a shipped
    profile (a template copied into params.yaml) is edited; a library module still counts."""
    def ignored(path):
        return subprocess.run([sys.executable, "-m", "dvc", "check-ignore", path], cwd=REPO,
                              capture_output=True, text=True).returncode == 0
    assert ignored("src/regstudy/profiles/laptop.yaml")
    assert ignored("src/regstudy/profiles/map.yaml")
    assert not ignored("src/regstudy/plotting.py") and not ignored("params.yaml")

"""The notebooks as a user runs them: papermill with small parameters, then assert what they recorded.

nbval (``pytest --nbval-lax notebooks``, part of ``make test``) separately runs each notebook on its defaults.
"""

import json

import nbformat
import pytest

from lib.paths import NOTEBOOKS_DIR, REPO_ROOT

pytestmark = pytest.mark.notebook
NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))


def execute(name, out_dir, **parameters):
    import papermill

    out_dir.mkdir(parents=True, exist_ok=True)
    papermill.execute_notebook(str(NOTEBOOKS_DIR / f"{name}.ipynb"), str(out_dir / f"{name}.ipynb"),
                               parameters=parameters, kernel_name="python3", cwd=str(REPO_ROOT),
                               progress_bar=False)
    return json.loads((out_dir / "metrics.json").read_text())


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_stripped_and_parameterized(path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), f"{path.name} has outputs: run `make strip`"
    assert "parameters" in code[0].metadata.get("tags", []), f"{path.name}: first code cell must be tagged parameters"
    assert "config.from_notebook(globals())" in code[1].source, f"{path.name}: cell 2 must resolve the parameters"
    assert nb.metadata["kernelspec"]["name"] == "python3"


def test_loss_shapes_records_hand_worked_gradient_ratios(tmp_path):
    metrics = execute("05_loss_shapes", tmp_path, run_dir=str(tmp_path))
    # bce / ce: L = -log p, |dL/dp| = 1/p, ratio at p=.9 vs .5 = .5/.9
    assert metrics["grad_ratio__bce"] == pytest.approx(0.5 / 0.9, rel=1e-3)
    assert metrics["grad_ratio__ce"] == pytest.approx(0.5 / 0.9, rel=1e-3)
    # mse c=1: L = 4 (1 - p)^2, |dL/dp| = 8 (1 - p), ratio = .1/.5
    assert metrics["grad_ratio__mse_c1"] == pytest.approx(0.2, rel=1e-3)
    # hinge d=1: L = max(0, 1 - logit p) is flat zero at p=.9 (logit .9 = 2.197 > 1)
    assert metrics["grad_ratio__hinge_d1"] == 0.0
    assert (tmp_path / "figures" / "05_loss_shapes.png").stat().st_size > 10_000

"""The notebooks as a user runs them: papermill with small parameters, then assert what they recorded.

nbval (``pytest --nbval-lax notebooks``, part of ``make test``) separately runs each notebook on its defaults.
"""

import json

import nbformat
import pytest

from conftest import CELL_TIMEOUT
from lib import config
from lib.paths import NOTEBOOKS_DIR, REPO_ROOT

pytestmark = pytest.mark.notebook
NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))


def execute(name, out_dir, **parameters):
    import papermill

    out_dir.mkdir(parents=True, exist_ok=True)
    papermill.execute_notebook(str(NOTEBOOKS_DIR / f"{name}.ipynb"), str(out_dir / f"{name}.ipynb"),
                               parameters=parameters, kernel_name="python3", cwd=str(REPO_ROOT),
                               progress_bar=False, execution_timeout=CELL_TIMEOUT)
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


def test_data_notebook_records_the_split_sizes(tmp_path):
    metrics = execute("01_data", tmp_path, benchmark="glyph_handwritten", run_dir=str(tmp_path))
    # NUM_KNOWN known + as many unknown characters; support and test from disjoint handwritten fonts
    from lib.datasets import glyphs

    assert (metrics["classes_known"], metrics["classes_unknown"]) == (glyphs.NUM_KNOWN, glyphs.NUM_KNOWN)
    assert metrics["test_known_images"] > 0 and abs(metrics["test_known_images"] - metrics["test_unknown_images"]) <= 10
    assert metrics["support_images"] % glyphs.NUM_KNOWN == 0 and metrics["source_classes"] == 60
    assert len(list((tmp_path / "figures").glob("01_*.png"))) >= 4


def test_comparisons_notebook_records_each_method(tmp_path):
    methods = ["msp", "mahalanobis", "reweightood"]
    metrics = execute("06_comparisons", tmp_path, run_dir=str(tmp_path), methods=",".join(methods),
                      baseline_epochs=1, comparison_seeds=2, budget_s=1.0, small_stem=False)  # 8x faster at 32 px
    for name in methods:
        assert 0.0 <= metrics[f"auroc__{name}"] <= 1.0 and 0.0 <= metrics[f"fpr95__{name}"] <= 1.0
        assert metrics[f"train_seconds__{name}"] > 0 and metrics[f"n_seeds__{name}"] == 2.0
        assert f"auroc_std__{name}" in metrics and 0.0 <= metrics[f"criterion_met__{name}"] <= 1.0
        # the budget-matched setting beside: training stops inside the budget, everything spent is recorded
        assert metrics[f"train_seconds__{name}__budget"] < 1.0 and metrics[f"spent_seconds__{name}__budget"] > 0
    assert metrics["train_seconds__msp"] == metrics["train_seconds__mahalanobis"]  # one shared classifier
    assert (tmp_path / "comparisons.csv").exists() and (tmp_path / "figures" / "06_comparisons.png").exists()
    assert (tmp_path / "comparisons.md").read_text().startswith("Cells: mean ± sample std (ddof 1)")
    import pandas as pd

    rows = pd.read_csv(tmp_path / "methods.csv")
    assert len(rows) == 2 * 2 * 3 and sorted(rows["seed"].unique()) == [0, 1]
    assert (rows["aux_data"] == "none (support set only)").all() and rows["criterion"].notna().all()


def test_the_users_own_command_trains_the_focal_loss(tmp_path):
    """`papermill 02_train.ipynb out.ipynb -p loss focal`, run in notebooks/ with the venv's papermill, as the user
    types it; run folders go to tmp_path (RESEND_OUTPUTS), the output notebook is moved there after. The run
    records a falling loss, its history, held-out pair metrics, its checkpoint and its learning curves."""
    import os
    import shutil
    import subprocess
    import sys

    env = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}",
           "RESEND_OUTPUTS": str(tmp_path)}
    out = NOTEBOOKS_DIR / "out.ipynb"
    try:
        result = subprocess.run("papermill 02_train.ipynb out.ipynb -p loss focal", shell=True, cwd=NOTEBOOKS_DIR,
                                env=env, capture_output=True, text=True, timeout=900)
        shutil.move(out, tmp_path / "out.ipynb") if out.exists() else None
    finally:
        out.unlink(missing_ok=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Passed unknown parameter" not in result.stderr
    nb = nbformat.read(tmp_path / "out.ipynb", as_version=4)
    printed = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "loss 'focal' resolves to 'bce_focal'" in printed
    run_dir = tmp_path / "scratch" / "bce_focal__seed0"
    assert config.load_yaml(run_dir / "params.yaml")["loss"] == "bce_focal"
    metrics = json.loads((run_dir / "metrics.json").read_text())  # smoke defaults: 30 steps, CPU
    assert metrics["train_steps"] == 30 and metrics["train_loss_last"] < metrics["train_loss_init"]
    assert metrics["train_seconds"] > 0
    assert 0.0 <= metrics["train_acc_same_last"] <= 1.0 and 0.0 <= metrics["train_acc_diff_last"] <= 1.0
    assert 0.0 <= metrics["pair_auroc"] <= 1.0 and 0.0 <= metrics["pair_acc_same"] <= 1.0  # held-out pairs
    assert len((run_dir / "history.csv").read_text().splitlines()) == 1 + 30  # header + one row per step
    assert (run_dir / "checkpoints" / "last.pt").exists() and (run_dir / "figures" / "02_learning_curves.png").exists()


def test_02_03_04_in_the_frozen_backbone_regime(tmp_path):
    """The mini preset's regime (frozen backbone, feature bank, fp32 relational module on the pinned CPU path) through
    the three notebooks as the sweep runs them, at smoke size."""
    tiny = {"run_dir": str(tmp_path), "device": "cpu", "pretrained": "none", "d_model": 16, "n_heads": 2,
            "head_hidden": 8, "image_size": 16, "source_classes": 10, "batch_pairs": 42, "steps": 20,
            "train_backbone": False, "bank_views": 2, "optimizer": "adamw", "schedule": "cosine", "lr": 1e-3,
            "grad_clip": 1.0, "cpu_amp": False, "pairing": "per_pair"}
    metrics = execute("02_train", tmp_path, **tiny)
    assert 0.0 <= metrics["pair_auroc"] <= 1.0 and metrics["train_steps"] == 20
    env = json.loads((tmp_path / "env.json").read_text())
    assert env["train_regime"] == "frozen backbone, feature bank of 2 views"
    execute("03_evaluate", tmp_path, run_dir=str(tmp_path), device="cpu", benchmarks="glyph_printed", interactive=True)
    metrics = execute("04_r2", tmp_path, run_dir=str(tmp_path), device="cpu", r2_pairs=84)
    assert 0.0 <= metrics["auroc__glyph_printed"] <= 1.0 and 0.0 <= metrics["r2"] <= 1.0
    assert config.load_yaml(tmp_path / "params_evaluate.yaml")["train_backbone"] is False
    assert (tmp_path / "scores" / "glyph_printed.npz").exists()  # per-image scores for 07_explore
    for name, bar in (("02_train", "train bce: 100%"), ("03_evaluate", "evaluate: 100%")):  # text bars, finished
        cells = nbformat.read(tmp_path / f"{name}.ipynb", as_version=4).cells
        outputs = [o for c in cells[:-1] if c.cell_type == "code" for o in c.outputs]  # 03's last cell: its browser
        assert bar in "".join(o.get("text", "") for o in outputs), name
        assert not any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outputs), name
    browser = nbformat.read(tmp_path / "03_evaluate.ipynb", as_version=4).cells[-1].outputs  # interactive=True
    widgets = [o for o in browser if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert widgets and not [o for o in browser if "image/png" in o.get("data", {})]  # figures in the Output only

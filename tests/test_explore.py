"""The study explorer (lib/explore.py, notebooks/07_explore): per-image scores on disk, the chosen run's figures,
one-line notes for what a study lacks, and the study figures (AUROC bars unclipped, FPR95 bars beside them)."""

import shutil

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import nbformat  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from lib import evaluate, explore, plots  # noqa: E402
from lib.paths import NOTEBOOKS_DIR, REPO_ROOT  # noqa: E402
from lib.plots import evaluate as eval_plots  # noqa: E402
from lib.plots import study as study_plots  # noqa: E402

from conftest import CELL_TIMEOUT, FAKE_BENCHMARK, FAKE_CONFIGS, fake_scores  # noqa: E402

CONFIGS, BENCH = FAKE_CONFIGS, FAKE_BENCHMARK


@pytest.fixture
def study(fake_study):
    return explore.load_study(fake_study)


def test_scores_round_trip_and_a_missing_file_says_to_rerun_03(tmp_path):
    scores = fake_scores(2.0, 0)
    [path] = evaluate.save_scores(tmp_path, {BENCH: scores})
    assert path == tmp_path / "scores" / f"{BENCH}.npz"
    back = evaluate.load_scores(tmp_path, BENCH)
    for key in (*evaluate.SCORE_ARRAYS, "domains"):
        np.testing.assert_array_equal(getattr(back, key), getattr(scores, key))
    assert back.is_known.dtype == bool and back.metrics() == scores.metrics() and back.seconds == 1.5
    with pytest.raises(FileNotFoundError, match="re-run 03_evaluate"):
        evaluate.load_scores(tmp_path, "glyph_handwritten")


def test_the_chosen_run_gets_every_figure_and_the_older_run_a_note(study):
    figs, notes = explore.figures(study, "mse_c10", 1, BENCH)
    assert set(figs) == {"roc", "histogram", "per_class", "learning_curves", "r2_vs_auroc"}
    left, right = figs["roc"].axes
    # seed 1: mse_c1 and mse_c10 have scores, bce seed 1 does not; mse_c10 has both seeds
    assert [t.get_text().split()[0] for t in left.get_legend().get_texts()] == ["mse_c1", "mse_c10"]
    assert len(right.get_legend().get_texts()) == 2
    chosen = [line for line in left.get_lines() if line.get_label().startswith("mse_c10")]
    assert chosen[0].get_linewidth() > 2 and chosen[0].get_color() == "tab:red"
    assert notes == [f"1 run(s) without scores for {BENCH} left out of the ROC overlay (bce): re-run 03 for them"]
    plt.close("all")


def test_a_run_without_scores_says_so_in_one_line_and_the_rest_still_draws(study):
    figs, notes = explore.figures(study, "bce", 1, BENCH)
    assert set(figs) == {"learning_curves", "r2_vs_auroc"}
    assert len(notes) == 1 and "\n" not in notes[0]
    assert "bce__seed1 has no per-image scores for glyph_printed" in notes[0] and "re-run 03" in notes[0]
    assert "-p run_dir" in notes[0]
    plt.close("all")


def test_the_committed_study_without_run_folders_gives_its_scatter_and_bars(tmp_path):
    shutil.copy(REPO_ROOT / "outputs" / "mini" / "summary.csv", tmp_path / "summary.csv")
    view = explore.load_study(tmp_path)
    assert view.from_summary and len(view.runs) == 11 and "glyph_printed_to_handwritten" in explore.benchmarks(view)
    figs, notes = explore.figures(view, "mse_c10", 0, "glyph_printed_to_handwritten")
    assert set(figs) == {"r2_vs_auroc"} and len(notes) == 1 and "mse_c10__seed0 is absent" in notes[0]
    assert set(explore.study_figures(view)) == {"auroc", "fpr95"}
    plt.close("all")


def test_choices_keep_what_the_study_offers_and_errors_name_the_options(study, tmp_path):
    assert explore.choices(study, "bce", 1, BENCH) == {"config": (CONFIGS, "bce"), "benchmark": ([BENCH], BENCH),
                                                       "seed": ([0, 1], 1)}
    assert explore.choices(study, "ce", 7, "emoji_google")["config"][1] == "mse_c1"
    with pytest.raises(ValueError, match="mse_c1, mse_c10, bce"):
        explore.check_choice(study, "ce", 0, BENCH)
    with pytest.raises(ValueError, match=r"seeds \[0, 1\]"):
        explore.check_choice(study, "bce", 5, BENCH)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no finished run and no summary.csv"):
        explore.load_study(tmp_path / "empty")
    assert explore.studies(study.path.parent) == ["fake"]


def test_r2_scatter_stars_the_chosen_run(study):
    fig = eval_plots.r2_vs_auroc(study.runs, f"auroc__{BENCH}", highlight=("mse_c10", 1))
    star = [line for line in fig.axes[0].get_lines() if line.get_marker() == "*"][0]
    run = study.runs[(study.runs["config"] == "mse_c10") & (study.runs["seed"] == 1)].iloc[0]
    assert star.get_xdata()[0] == pytest.approx(run["r2"]) and star.get_ydata()[0] == pytest.approx(run[f"auroc__{BENCH}"])
    plt.close(fig)


def test_study_bars_show_an_auroc_below_the_former_clip():
    df = pd.DataFrame({"config": ["a", "a", "b", "b"], "seed": [0, 1, 0, 1], "auroc__x": [0.2, 0.3, 0.9, 0.8]})
    fig = study_plots.benchmark_bars(df, ["x"], metric="auroc")
    ax = fig.axes[0]
    heights = sorted(round(p.get_height(), 3) for p in ax.patches if p.get_height() > 0)
    assert ax.get_ylim()[0] <= 0.0 and heights[0] == 0.25  # mean of a, drawn from 0
    plt.close(fig)


def test_show_in_sets_the_outputs_of_the_widget_and_closes_the_figures():
    import ipywidgets

    out = ipywidgets.Output()
    out.outputs = ({"output_type": "stream", "name": "stdout", "text": "old\n"},)
    figures = [plt.figure(), plt.figure()]
    plots.show_in(out, figures, ["a note"])
    assert [o["output_type"] for o in out.outputs] == ["stream", "display_data", "display_data"]  # old ones replaced
    assert out.outputs[0]["text"] == "a note\n"
    assert all("image/png" in o["data"] and "text/plain" in o["data"] for o in out.outputs[1:])
    assert not any(plt.fignum_exists(f.number) for f in figures)  # nothing left for the inline backend to redraw


@pytest.mark.notebook
def test_explore_notebook_static_and_interactive_on_a_study(study, tmp_path, monkeypatch):
    """07 on a study with scores, as papermill runs it (RESEND_OUTPUTS = the study's parent): static figures in the
    cells, and with interactive=True the browser's figures inside its Output widget only (none below it)."""
    import papermill

    monkeypatch.setenv("RESEND_OUTPUTS", str(study.path.parent))  # the kernel inherits it
    out = tmp_path / "07.ipynb"
    papermill.execute_notebook(str(NOTEBOOKS_DIR / "07_explore.ipynb"), str(out), kernel_name="python3",
                               cwd=str(REPO_ROOT), progress_bar=False, execution_timeout=CELL_TIMEOUT, parameters=dict(
                                   study="fake", config_name="bce", seed=0, benchmark=BENCH, interactive=True))
    cells = [c for c in nbformat.read(out, as_version=4).cells if c.cell_type == "code"]
    text = "".join(o.get("text", "") for c in cells for o in c.outputs)
    assert "drawn: roc, histogram, per_class, learning_curves, r2_vs_auroc" in text
    assert "1 run(s) without scores" in text and "Traceback" not in text
    images = [sum("image/png" in o.get("data", {}) for o in c.outputs) for c in cells]
    assert images[-3] == 5 and images[-2] == 2  # the chosen run's figures, the study's AUROC and FPR95 bars
    browser = cells[-1].outputs
    assert images[-1] == 0 and any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in browser)


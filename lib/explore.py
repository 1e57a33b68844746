"""The study explorer behind notebooks/07_explore: a study's runs (metrics, histories, the per-image scores 03 saves
in ``<run>/scores/<benchmark>.npz``) and the figures of one chosen run against the others.

What a study lacks is said in one line with its fix (`figures` returns those notes beside the figures it could
draw): a study whose run folders are absent (e.g. the committed ``outputs/mini``: summary.csv only) still gives the
R^2-AUROC scatter and the AUROC / FPR95 bars, read from its summary.csv.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from lib import evaluate, runs
from lib.metrics import known_threshold
from lib.paths import OUTPUTS_DIR, shown
from lib.plots import evaluate as eval_plots
from lib.plots import explore as explore_plots
from lib.plots import study as study_plots
from lib.plots import train as train_plots

AVERAGES = ("avg", "intra_avg", "cross_avg")  # metric suffixes that average benchmarks, not benchmarks


@dataclass
class Study:
    """One study: its folder and one row per run (config, seed, flat metrics)."""

    path: Path
    runs: pd.DataFrame
    from_summary: bool  # True: no run folder here, the rows come from summary.csv

    def run_dir(self, config: str, seed: int) -> Path:
        return self.path / f"{config}__seed{int(seed)}"


def studies(outputs_dir: Path | str = OUTPUTS_DIR) -> list[str]:
    """Names of the folders of `outputs_dir` holding a summary.csv or a finished run folder, sorted."""
    found = []
    for folder in sorted(Path(outputs_dir).iterdir()) if Path(outputs_dir).is_dir() else []:
        if folder.is_dir() and ((folder / "summary.csv").exists() or not runs.collect(folder).empty):
            found.append(folder.name)
    return found


def load_study(study_dir: Path | str) -> Study:
    """The study's finished runs (`runs.collect`), or its summary.csv when it has no run folder; ValueError (one
    line, with the fix) when it has neither."""
    path = Path(study_dir)
    table = runs.collect(path)
    if not table.empty:
        return Study(path, table, from_summary=False)
    if (path / "summary.csv").exists():
        return Study(path, pd.read_csv(path / "summary.csv"), from_summary=True)
    raise ValueError(f"{shown(path)} holds no finished run and no summary.csv: run a sweep into it "
                     "(python -m lib.sweep params/grids/<grid>.yaml) or pick another study")


def benchmarks(study: Study) -> list[str]:
    """The benchmarks with an AUROC column, in column order (the averages left out)."""
    names = [c.split("__", 1)[1] for c in study.runs.columns if c.startswith("auroc__")]
    return [n for n in names if n not in AVERAGES]


def configs(study: Study) -> list[str]:
    """The study's configurations in table order (the order of its rows)."""
    return list(dict.fromkeys(study.runs["config"]))


def seeds(study: Study, config: str) -> list[int]:
    return sorted(int(s) for s in study.runs.loc[study.runs["config"] == config, "seed"])


def choices(study: Study, config: str, seed: int, benchmark: str) -> dict[str, tuple[list, object]]:
    """{"config" | "seed" | "benchmark": (options, value)} for the explorer's dropdowns: each value kept when the
    study (and, for the seed, the config) offers it, else its first option."""
    out = {}
    for name, options, value in (("config", configs(study), config), ("benchmark", benchmarks(study), benchmark)):
        out[name] = (options, value if value in options else options[0])
    options = seeds(study, out["config"][1])
    out["seed"] = (options, int(seed) if seed in options else options[0])
    return out


def check_choice(study: Study, config: str, seed: int, benchmark: str) -> None:
    """ValueError naming the options when `config`, `seed` or `benchmark` is not in the study."""
    if config not in configs(study):
        raise ValueError(f"config {config!r} is not in {shown(study.path)}: {', '.join(configs(study))}")
    if int(seed) not in seeds(study, config):
        raise ValueError(f"{config} has no seed {seed} in {shown(study.path)}: seeds {seeds(study, config)}")
    if benchmark not in benchmarks(study):
        raise ValueError(f"benchmark {benchmark!r} is not in {shown(study.path)}: {', '.join(benchmarks(study))}")


def missing_scores(study: Study, config: str, seed: int, benchmark: str) -> str | None:
    """None when the run has scores for `benchmark`, else one line saying what is missing and how to get it."""
    run_dir = study.run_dir(config, seed)
    if not run_dir.is_dir():
        return (f"{shown(run_dir)} is absent (this study holds only its summary.csv): per-image scores and learning "
                f"curves need the run folders — rerun the study's sweep, or train and evaluate that run (02, 03)")
    path = evaluate.scores_path(run_dir, benchmark)
    if path.exists():
        return None
    return (f"{shown(run_dir)} has no per-image scores for {benchmark} ({shown(path)}; evaluated before 03 saved "
            f"them): re-run 03 for that run — papermill notebooks/03_evaluate.ipynb /tmp/03.ipynb -p run_dir "
            f"{shown(run_dir)} -p benchmarks {','.join(benchmarks(study))}")


def load_scores(study: Study, config: str, seed: int, benchmark: str):
    """The run's `evaluate.BenchmarkScores` of `benchmark`, or None when it has none (`missing_scores` says why)."""
    if missing_scores(study, config, seed, benchmark) is not None:
        return None
    return evaluate.load_scores(study.run_dir(config, seed), benchmark)


def figures(study: Study, config: str, seed: int, benchmark: str) -> tuple[dict[str, object], list[str]]:
    """({name: Figure}, notes) for the chosen run on `benchmark`. Figures, each drawn when its inputs exist:
    ``roc`` (the run against every config at its seed and every seed of its config), ``histogram`` (normality of
    known vs unknown, FPR95 threshold), ``per_class`` (mean class score per true class), ``learning_curves``
    (history.csv) and ``r2_vs_auroc`` (AUROC on `benchmark`, the run highlighted). A note per missing input."""
    check_choice(study, config, seed, benchmark)
    figs, notes = {}, []
    chosen = load_scores(study, config, seed, benchmark)
    if chosen is None:
        notes.append(missing_scores(study, config, seed, benchmark))
    else:
        by_config = {c: load_scores(study, c, seed, benchmark) for c in configs(study) if int(seed) in seeds(study, c)}
        by_seed = {f"seed {k}": load_scores(study, config, k, benchmark) for k in seeds(study, config)}
        without = sorted({n for n, s in by_config.items() if s is None} | {n for n, s in by_seed.items() if s is None})
        if without:
            notes.append(f"{len(without)} run(s) without scores for {benchmark} left out of the ROC overlay "
                         f"({', '.join(without)}): re-run 03 for them")
        figs["roc"] = explore_plots.roc_comparison(
            {n: (s.normality, s.is_known) for n, s in by_config.items() if s is not None},
            {n: (s.normality, s.is_known) for n, s in by_seed.items() if s is not None}, config, f"seed {seed}", benchmark)
        metrics = chosen.metrics()
        figs["histogram"] = eval_plots.normality_histogram(
            chosen.normality, chosen.is_known, f"{config} seed {seed}, {benchmark}: FPR95 {metrics['fpr95']:.3f}",
            known_threshold(chosen.normality, chosen.is_known))
        figs["per_class"] = eval_plots.per_class_scores(chosen.similarities, chosen.test_labels,
                                                        chosen.similarities.shape[1], f"{config} seed {seed}, {benchmark}")
    history = study.run_dir(config, seed) / "history.csv"
    if history.exists():
        figs["learning_curves"] = train_plots.learning_curves(pd.read_csv(history))
    elif study.run_dir(config, seed).is_dir():  # an absent run folder is already the scores' note
        notes.append(f"{shown(history)} is missing: the run was not trained here (02 writes it)")
    column = f"auroc__{benchmark}"
    ready = study.runs.dropna(subset=[c for c in ("r2", column) if c in study.runs.columns])
    if {"r2", column} <= set(study.runs.columns) and ready["config"].nunique() >= 3:
        figs["r2_vs_auroc"] = eval_plots.r2_vs_auroc(ready, column, highlight=(config, int(seed)))
    else:
        notes.append(f"R²-vs-AUROC skipped: fewer than 3 configs of {shown(study.path)} have both r2 and {column} "
                     "(04 records r2)")
    return figs, notes


def study_figures(study: Study) -> dict[str, object]:
    """AUROC and FPR95 bars of every benchmark (one bar per config, mean ± std over seeds)."""
    names = benchmarks(study)
    return {metric: study_plots.benchmark_bars(study.runs, names, metric=metric,
                                               title=f"{metric.upper()} per benchmark ({shown(study.path)})")
            for metric in ("auroc", "fpr95") if any(f"{metric}__{n}" in study.runs.columns for n in names)}

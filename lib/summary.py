"""Study summaries, built from the run folders alone: summary.csv, tables.md (ICIAP README layout), figures.

    python -m lib.summary outputs/mini [--paper]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from lib import cli, data, evaluate, intervals, objectives, reference, runs
from lib.datasets.real import ORIGIN_LABELS
from lib.plots import evaluate as eval_plots
from lib.plots import study as study_plots
from lib.runs import collect  # noqa: F401 (04_r2 calls summary.collect)

# Row order of the ICIAP table: the study's configurations (lib.objectives.CONFIGS).
CONFIG_ORDER = list(objectives.CONFIGS)
METRICS = ("auroc", "fpr95")
# A run "left the label-prior plateau" when, over the last fifth of training, it called at least this fraction of
# its same pairs "same" (02 records it as train_acc_same_last). A run on the plateau answers "different" for
# every pair (the 1 : k prior), so its R^2 and AUROC say nothing about its objective.
LEARNED_ACC_SAME = 0.05
# The gate when 02 recorded it: held-out pair AUROC (lib/pair_eval.py) >= this. It ranks pairs of source images
# never trained on; accuracy is no gate (hinge with delta = 1 ranks pairs at 0.99 while calling every same pair
# "different" at x > 0). Runs below it are flagged in every table and left out of the "learned" rho.
LEARNED_PAIR_AUROC = 0.95
# Headline rule: a benchmark enters the headline averages and rho when the frozen-backbone reference row
# (reference.py `backbone_proto`) has AUROC - HEADLINE_SE_FACTOR * SE >= HEADLINE_MIN_AUROC, i.e. its 95 % lower
# bound over test images clears 0.6, the conventional floor of "poor" discrimination (0.5-0.6 = no
# discrimination, Hosmer & Lemeshow). Where even the backbone's own features hold no such class signal, the
# differences between objectives are below the noise; those benchmarks are reported in their own section.
HEADLINE_MIN_AUROC = 0.6
HEADLINE_SE_FACTOR = 2.0
RHO_RESAMPLES = 1000  # bootstrap resamples (over seeds) of the rho interval
RHO_SEED = 0  # fixed: the interval never depends on anything but the runs
REFERENCE_LINES = ("backbone_knn1", "backbone_mahalanobis")  # reference rows drawn across the study's bar figures
CONVERGENCE_CSV = "convergence.csv"  # benchmarks/convergence.py's verdict per config, beside summary.csv
NOT_CONVERGED = "†"  # marks a config benchmarks/convergence.py found not converged (left out of rho)
PAPER_RHO = {"intra": -0.85, "cross": -0.60}  # Spearman rho(R^2, avg AUROC) over the paper's 10 configurations

# docs/METHOD.md §8-9: ICIAP 2023, ImageNet-trained ReSeND, seed 000 (each configuration's paper_r2 in lib.objectives).
PAPER_R2 = {name: c.paper_r2 for name, (_, c) in objectives.CONFIGS.items() if c.paper_r2 is not None}
# The paper's average AUROC of all ten configurations (intra, cross; its seed-000 tables, docs/METHOD.md §9;
# per-benchmark values in the ICIAP authors' README)
PAPER_AVG_AUROC = {"mse_c1": (.660, .601), "mse_c10": (.702, .645), "mse_c50": (.695, .639), "bce": (.642, .622),
                   "bce_focal": (.652, .633), "ce": (.617, .617), "ce_focal": (.680, .639), "hinge_d1": (.612, .573),
                   "hinge_d0.1": (.677, .583), "hinge_d0.01": (.711, .641)}


def paper_contrasts() -> dict[tuple[str, str], tuple[float, float, float]]:
    """(ΔR², Δ intra avg AUROC, Δ cross avg AUROC) of each within-family step (`intervals.CONTRASTS`) in the paper."""
    return {(a, b): (PAPER_R2[b] - PAPER_R2[a], PAPER_AVG_AUROC[b][0] - PAPER_AVG_AUROC[a][0],
                     PAPER_AVG_AUROC[b][1] - PAPER_AVG_AUROC[a][1]) for a, b in intervals.CONTRASTS}


def _draw_values(df: pd.DataFrame, column: str, configs: list[str], replicates=None) -> np.ndarray:
    """(C, U) point values of `column`, or (R, C, U) when `replicates` ({(config, backbone, seed): (R,) values},
    a run's AUROC on each image draw) covers every run present."""
    values, backbones, seeds = intervals.unit_matrix(df, column, configs)
    if not replicates:
        return values
    out = np.repeat(values[None], len(next(iter(replicates.values()))), axis=0)
    for i, config in enumerate(configs):
        for j, (b, s) in enumerate((b, s) for b in backbones for s in seeds):
            if (config, b, s) in replicates:
                out[:, i, j] = replicates[(config, b, s)]
    return out


def image_replicates(study_dir: Path, df: pd.DataFrame, benchmarks: list[str], resamples: int = intervals.RESAMPLES
                     ) -> dict[tuple[str, int, int], np.ndarray] | None:
    """{(config, backbone, seed): (resamples,) mean AUROC over `benchmarks`, each benchmark's test images resampled
    with the same draws for every run}, from the runs' saved scores (``scores/<benchmark>.npz``, 03); None when a
    run has none (the intervals then stop at the seed level, and the tables say so)."""
    out: dict[tuple[str, int, int], np.ndarray] = {}
    draws: dict[str, np.ndarray] = {}
    for _, row in df.iterrows():
        run_dir = Path(study_dir) / row["run"]
        total = np.zeros(resamples)
        for name in benchmarks:
            path = evaluate.scores_path(run_dir, name)
            if not path.exists():
                return None
            scores = evaluate.load_scores(run_dir, name)
            if name not in draws:
                draws[name] = intervals.image_draws(scores.is_known, resamples)
            total += intervals.auroc_replicates(scores.normality, scores.is_known, draws[name])
        out[(row["config"], row["backbone"], row["seed"])] = total / max(len(benchmarks), 1)
    return out


def contrast_rows(df: pd.DataFrame, configs: list[str], kinds=("intra", "cross"), replicates=None,
                  resamples: int = intervals.RESAMPLES) -> dict[tuple[str, str], dict[str, tuple[float, float, float]]]:
    """{(from, to): {"r2" | kind: (Δ mean, 2.5 %, 97.5 %)}} for each `intervals.CONTRASTS` step whose two configs
    are in `configs`: the paired difference of the configs' means over the same hierarchically drawn (backbone,
    seed) units (and image draws: `replicates` = {kind: `image_replicates` result})."""
    units = intervals.unit_draws(df["backbone"].nunique(), df["seed"].nunique(), resamples)
    means = {"r2": intervals.drawn_means(_draw_values(df, "r2", configs), units)} if "r2" in df else {}
    points = {"r2": np.nanmean(intervals.unit_matrix(df, "r2", configs)[0], axis=1)} if "r2" in df else {}
    for kind in kinds:
        column = f"auroc__{kind}_avg"
        if column in df:
            means[kind] = intervals.drawn_means(_draw_values(df, column, configs, (replicates or {}).get(kind)), units)
            points[kind] = np.nanmean(intervals.unit_matrix(df, column, configs)[0], axis=1)
    out = {}
    for a, b in intervals.CONTRASTS:
        if a in configs and b in configs:
            i, j = configs.index(a), configs.index(b)
            out[(a, b)] = {k: (float(points[k][j] - points[k][i]), *intervals.percentile_interval(m[:, j] - m[:, i]))
                           for k, m in means.items()}
    return out


def rho_hierarchical(df: pd.DataFrame, configs: list[str], kind: str, replicates=None,
                     resamples: int = intervals.RESAMPLES) -> tuple[float, float, float]:
    """Spearman ρ(mean R², mean avg `kind` AUROC) over `configs`, with its hierarchical bootstrap interval."""
    column = f"auroc__{kind}_avg"
    if "r2" not in df or column not in df or len(configs) < 3:
        return float("nan"), float("nan"), float("nan")
    units = intervals.unit_draws(df["backbone"].nunique(), df["seed"].nunique(), resamples)
    r2 = intervals.drawn_means(_draw_values(df, "r2", configs), units)
    auroc = intervals.drawn_means(_draw_values(df, column, configs, replicates), units)
    point = intervals.spearman_rows(np.nanmean(intervals.unit_matrix(df, "r2", configs)[0], 1)[None],
                                    np.nanmean(intervals.unit_matrix(df, column, configs)[0], 1)[None])[0]
    return (float(point), *intervals.percentile_interval(intervals.spearman_rows(r2, auroc)))


def variance_shares(df: pd.DataFrame, column: str) -> dict[str, float]:
    """Fraction of the run-to-run variance of `column` that is backbone vs run seed (`intervals.variance_components`
    per configuration, summed over the configurations with every (backbone, seed) run)."""
    between = within = 0.0
    for config, group in df.groupby("config"):
        values, backbones, seeds = intervals.unit_matrix(group, column, [config])
        if len(backbones) < 2 or len(seeds) < 2 or np.isnan(values).any():
            continue
        b, w = intervals.variance_components(values.reshape(len(backbones), len(seeds)))
        between, within = between + b, within + w
    total = between + within
    return {"backbone": between / total if total else float("nan"), "seed": within / total if total else float("nan")}


def read_convergence(study_dir: Path) -> pd.DataFrame | None:
    """``<study>/convergence.csv`` (benchmarks/convergence.py) indexed by config: ``converged``, ``runs`` and each
    measured column's mean at the study's budget and at twice it (``<column>_2x``); None when not measured."""
    path = Path(study_dir) / CONVERGENCE_CSV
    if not path.exists():
        return None
    table_ = pd.read_csv(path).set_index("config")
    table_["converged"] = table_["converged"].astype(bool)
    return table_


def counted_configs(agg: pd.DataFrame, converged: dict[str, bool] | None) -> list[str]:
    """The configs rho is taken over: those that left the label-prior plateau (`learned`) and were not found
    unconverged (`read_convergence`; a config it did not measure counts)."""
    return [c for c in agg.index[learned(agg)] if (converged or {}).get(c, True)]


def backbones_agreeing(df: pd.DataFrame, a: str, b: str, column: str, sign: float) -> tuple[int, int]:
    """(backbones on which config `b`'s mean `column` minus config `a`'s, over run seeds, has the sign of `sign`,
    backbones with both configs)."""
    means = df[df["config"].isin([a, b])].groupby(["backbone", "config"])[column].mean().unstack()
    if a not in means or b not in means:
        return 0, 0
    delta = (means[b] - means[a]).dropna()
    return int((np.sign(delta) == np.sign(sign)).sum()), len(delta)


def robust_section(study_dir: Path, df: pd.DataFrame, groups: dict[str, list[str]],
                   convergence: pd.DataFrame | None = None) -> list[str]:
    """tables.md's section on what holds across backbones: the contrasts table (ΔR², ΔAUROC with hierarchical
    intervals beside the paper's Δ), ρ with its hierarchical interval and the backbone / seed variance shares.
    ρ is taken over `counted_configs` (learned, and converged where `convergence` says); with `convergence`, each Δ
    also has its value after twice the training steps (the means of `read_convergence`)."""
    converged = None if convergence is None else convergence["converged"].to_dict()
    configs = [c for c in CONFIG_ORDER if c in set(df["config"])]
    agg = aggregate(df)
    counted = [c for c in configs if c in counted_configs(agg, converged)]
    kinds = [k for k in ("intra", "cross") if groups[k] and f"auroc__{k}_avg" in df]
    replicates = {k: image_replicates(study_dir, df, groups[k]) for k in kinds}
    levels = "backbone → run seed → test images" if all(replicates.values()) else "backbone → run seed"
    parts = [f"\n## What holds across backbones ({df['backbone'].nunique()} backbones × {df['seed'].nunique()} seeds)\n",
             f"Mean Δ from one configuration to the next within a family, with its 95 % hierarchical bootstrap interval "
             f"({levels}, paired: both configurations on the same drawn backbones, seeds and images; lib/intervals.py); "
             "the paper's Δ beside it (ICIAP 2023, seed 000). ✓ = the interval excludes 0 with the paper's sign; "
             "k/B = on k of the B backbones alone the mean Δ (over run seeds) has the paper's sign"
             + (f"; {NOT_CONVERGED} = a step with a configuration that is not converged (benchmarks/convergence.py); "
                f"2× = the mean Δ after twice the training steps (over the {int(convergence['runs'].min())}+ runs per "
                "configuration trained at both budgets)" if convergence is not None else "") + ".\n",
             "| step | ΔR² | paper | " + " | ".join(f"Δ {k} AUROC | paper" for k in kinds) + " |",
             "|---|---|---|" + "---|---|" * len(kinds)]
    paper = paper_contrasts()
    for (a, b), row in contrast_rows(df, configs, kinds, replicates).items():
        cells = []
        for k, position in [("r2", 0)] + [(k, 1 if k == "intra" else 2) for k in kinds]:
            if k not in row:
                cells += ["–", "–"]
                continue
            mean, lo, hi = row[k]
            ref = paper[(a, b)][position]
            agrees = (lo > 0 and ref > 0) or (hi < 0 and ref < 0)
            column = "r2" if k == "r2" else f"auroc__{k}_avg"
            k_of_b = "%d/%d" % backbones_agreeing(df, a, b, column, ref)
            longer = ""
            if convergence is not None and {a, b} <= set(convergence.index) and f"{column}_2x" in convergence:
                longer = f"; 2×: {convergence.at[b, column + '_2x'] - convergence.at[a, column + '_2x']:+.3f}"
            cells += [f"{mean:+.3f} [{lo:+.3f}, {hi:+.3f}] {k_of_b}{' ✓' if agrees else ''}{longer}", f"{ref:+.3f}"]
        mark = f" {NOT_CONVERGED}" if not all((converged or {}).get(c, True) for c in (a, b)) else ""
        parts.append(f"| {a} → {b}{mark} | " + " | ".join(cells) + " |")
    left_out = [c for c in configs if c not in counted]
    learned_ones = [c for c in configs if c in set(agg.index[learned(agg)])]
    for kind in kinds:
        if len(counted) >= 3:
            over = f"over {len(counted)} configs" + (f" (left out: {', '.join(left_out)})" if left_out else "") + ": "
        else:  # too few converged configs: rho of the objectives is not defined; say what the budget's rho is
            over = (f"over the converged configs: not defined ({len(counted)} converged). Over the {len(learned_ones)} "
                    "that left the plateau, a property of this training budget, not of the objectives: ")
        rho, lo, hi = rho_hierarchical(df, counted if len(counted) >= 3 else learned_ones, kind, replicates[kind])
        parts.append(f"\nSpearman ρ(R², avg {kind} AUROC) {over}{rho:.3f} (95 % hierarchical interval [{lo:.3f}, "
                     f"{hi:.3f}]{'; its sign is not determined' if lo < 0 < hi else ''}); paper: {PAPER_RHO[kind]:.2f}.")
    for column in ["r2"] + [f"auroc__{k}_avg" for k in kinds]:
        shares = variance_shares(df, column)
        if np.isfinite(shares["backbone"]):
            parts.append(f"Variance of `{column}` between runs: {shares['backbone']:.0%} backbone, "
                         f"{shares['seed']:.0%} run seed.")
    return parts


def runs_with(df: pd.DataFrame, columns) -> pd.DataFrame:
    """The rows of a per-run table (see `collect`) that recorded every one of `columns` (not NaN); no rows when a
    column is missing altogether (e.g. no run has reached 04_r2 yet)."""
    columns = list(columns)
    return df.dropna(subset=columns) if set(columns) <= set(df.columns) else df.iloc[:0]


def benchmark_kind(name: str) -> str:
    """'cross' or 'intra', from the benchmark registry (falls back to the ``_to_`` naming rule)."""
    try:
        spec = data.BENCHMARKS[name]
        return getattr(spec, "kind", None) or spec["kind"]
    except (KeyError, TypeError, AttributeError):
        return "cross" if "_to_" in name else "intra"


def benchmarks_in(df: pd.DataFrame) -> dict[str, list[str]]:
    names = sorted({c.split("__", 1)[1] for c in df.columns if c.startswith("auroc__") and not c.endswith("_avg")})
    groups: dict[str, list[str]] = {"intra": [], "cross": []}
    for name in names:
        groups[benchmark_kind(name)].append(name)
    return groups


def aggregate(df: pd.DataFrame) -> pd.DataFrame:
    """Mean and sample std (ddof 1, as every table of the project) over seeds per config (columns ``<metric>`` and
    ``<metric>_std``), in table order."""
    numeric = df.drop(columns=["seed"]).groupby("config", sort=False)
    mean, std = numeric.mean(numeric_only=True), numeric.std(numeric_only=True, ddof=1)
    out = mean.join(std.add_suffix("_std"))
    out["n_seeds"] = df.groupby("config", sort=False)["seed"].count()
    if "pair_auroc" in df.columns:  # the plateau gate holds for every seed, not on average
        out["pair_auroc_min"] = df.groupby("config", sort=False)["pair_auroc"].min()
    return out


def _cell(agg: pd.DataFrame, config: str, column: str) -> str:
    if column not in agg.columns or pd.isna(agg.at[config, column]):
        return "–"
    std = agg.at[config, f"{column}_std"] if f"{column}_std" in agg.columns else np.nan
    n = agg.at[config, "n_seeds"]
    return f"{agg.at[config, column]:.3f}" + (f" ± {std:.3f}" if n > 1 and not pd.isna(std) else "")


def _ref_cell(values: dict[str, float], keys: list[str]) -> str:
    found = [values.get(k) for k in keys]
    return "–" if not found or any(v is None for v in found) else f"{np.mean(found):.3f}"


def table(agg: pd.DataFrame, benchmarks: list[str], kind: str, paper: bool, avg: str | None = None,
          references: dict[str, dict[str, float]] | None = None, marks: dict[str, str] | None = None) -> str:
    """Markdown table: one row per config, AUROC / FPR95 per benchmark, their averages (columns
    ``<metric>__<avg>``, default ``<kind>_avg``), R^2; then the reference rows of `references` (see
    `reference.read_reference_rows`), averaged over the same `benchmarks`. `marks`: {config: suffix of its name}."""
    avg = avg or f"{kind}_avg"
    header = ["config"] + [f"{b} AUROC / FPR95" for b in benchmarks] + ["avg AUROC / FPR95", "R²", "pair AUROC",
                                                                          "train acc same"]
    if paper:
        header += ["paper avg AUROC", "paper R²"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for config in agg.index:
        cells = [f"{config} {marks[config]}" if config in (marks or {}) else config] + [f"{_cell(agg, config, f'auroc__{b}')} / {_cell(agg, config, f'fpr95__{b}')}" for b in benchmarks]
        cells += [f"{_cell(agg, config, f'auroc__{avg}')} / {_cell(agg, config, f'fpr95__{avg}')}",
                  _cell(agg, config, "r2"), _cell(agg, config, "pair_auroc"), _cell(agg, config, "train_acc_same_last")]
        if paper:
            ref = PAPER_AVG_AUROC[config][0 if kind == "intra" else 1] if config in PAPER_AVG_AUROC else None
            cells += [f"{ref:.3f}" if ref is not None else "–", f"{PAPER_R2[config]:.3f}" if config in PAPER_R2 else "–"]
        lines.append("| " + " | ".join(cells) + " |")
    for row, label in reference.TABLE_ROWS.items():
        values = (references or {}).get(row)
        if not values:
            continue
        cells = [f"*{label}*"] + [f"{_ref_cell(values, [f'auroc__{b}'])} / {_ref_cell(values, [f'fpr95__{b}'])}"
                                  for b in benchmarks]
        cells += [f"{_ref_cell(values, [f'auroc__{b}' for b in benchmarks])} / "
                  f"{_ref_cell(values, [f'fpr95__{b}' for b in benchmarks])}", "–", "–", "–"] + ["–", "–"] * paper
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


SPLIT_NOTES = {  # lib.datasets.real.list_origin of a benchmark's lists -> what a table made from it says
    "derived": f"{ORIGIN_LABELS['derived']} (made from the folders, lib/splits/README.md; `python -m "
               "lib.splits.resend` converts the paper's lists)",
    "own": ORIGIN_LABELS["own"],
}


def split_line(df: pd.DataFrame, benchmarks: list[str]) -> str:
    """One line per kind of non-paper split among `benchmarks` (env.json ``splits`` via runs.collect), e.g.
    "dtd: derived split, not the paper's (...)"; empty when every real benchmark read the paper's lists."""
    lines = []
    for origin, note in SPLIT_NOTES.items():
        column = df.get(f"split_{origin}", pd.Series(dtype=str)).fillna("")
        names = sorted({n for value in column for n in value.split(",") if n} & set(benchmarks))
        if names:
            lines.append(f"{', '.join(names)}: {note}.")
    return "\n".join(lines)


def se_line(df: pd.DataFrame, benchmarks: list[str], references: dict[str, dict[str, float]] | None = None) -> str:
    """One line: per benchmark the median over runs of ``auroc_se__<b>`` (bootstrap SE over test images) and the
    backbone reference's SE; empty when neither is recorded."""
    ref = (references or {}).get("backbone_proto", {})
    cells = []
    for b in benchmarks:
        run_se = df[f"auroc_se__{b}"].median() if f"auroc_se__{b}" in df.columns else np.nan
        ref_se = ref.get(f"auroc_se__{b}")
        if pd.isna(run_se) and ref_se is None:
            continue
        cells.append(f"{b} runs ±{'–' if pd.isna(run_se) else f'{run_se:.3f}'}"
                     + (f", backbone ref ±{ref_se:.3f}" if ref_se is not None else ""))
    if not cells:
        return ""
    return "AUROC standard error (bootstrap over test images, stratified known/unknown; median SE over runs): " \
        + "; ".join(cells)


def headline_split(references: dict[str, dict[str, float]], benchmarks: list[str]) -> tuple[list[str], list[str]]:
    """(benchmarks whose backbone reference AUROC - HEADLINE_SE_FACTOR * SE >= HEADLINE_MIN_AUROC, the others:
    near chance or without a reference value), both in the order of `benchmarks`."""
    ref = references.get("backbone_proto", {})
    clear = [b for b in benchmarks if f"auroc__{b}" in ref and
             ref[f"auroc__{b}"] - HEADLINE_SE_FACTOR * ref.get(f"auroc_se__{b}", 0.0) >= HEADLINE_MIN_AUROC]
    return clear, [b for b in benchmarks if b not in clear]


def add_average(df: pd.DataFrame, benchmarks: list[str], name: str) -> pd.DataFrame:
    """`df` with columns ``auroc__<name>`` / ``fpr95__<name>``: per run the mean over `benchmarks` (NaN when one
    is missing)."""
    df = df.copy()
    for metric in METRICS:
        columns = [f"{metric}__{b}" for b in benchmarks]
        df[f"{metric}__{name}"] = df.reindex(columns=columns).mean(axis=1, skipna=False) if benchmarks else np.nan
    return df


def learned(agg: pd.DataFrame) -> pd.Series:
    """Per config: True when it left the label-prior plateau: every seed's held-out pair AUROC >= LEARNED_PAIR_AUROC
    (``pair_auroc_min``, see `aggregate`) where 02 recorded it, else (older runs) mean train_acc_same_last >=
    LEARNED_ACC_SAME; False where neither is recorded."""
    if "pair_auroc_min" in agg.columns:
        return agg["pair_auroc_min"].fillna(0.0) >= LEARNED_PAIR_AUROC
    if "train_acc_same_last" not in agg.columns:
        return pd.Series(False, index=agg.index)
    return agg["train_acc_same_last"].fillna(0.0) >= LEARNED_ACC_SAME


def plateau_configs(df: pd.DataFrame) -> list[str]:
    """Configs of the per-run table `df` (see `collect`) that did not leave the label-prior plateau."""
    agg = aggregate(df)
    return agg.index[~learned(agg)].tolist()


def r2_auroc_correlation(agg: pd.DataFrame, kind: str = "intra", learned_only: bool = False,
                         column: str | None = None) -> tuple[float, int]:
    """Spearman rho between per-config mean R^2 and mean average AUROC (rho, number of configs); with
    `learned_only`, over the configs that left the label-prior plateau (see `learned`). `column` defaults to
    ``auroc__<kind>_avg``."""
    column = column or f"auroc__{kind}_avg"
    if "r2" not in agg.columns or column not in agg.columns:
        return float("nan"), 0
    both = agg.loc[learned(agg) if learned_only else agg.index, ["r2", column]].dropna()
    if len(both) < 3:
        return float("nan"), len(both)
    return float(spearmanr(both["r2"], both[column]).statistic), len(both)


def r2_auroc_interval(df: pd.DataFrame, column: str, configs=None, resamples: int = RHO_RESAMPLES,
                      seed: int = RHO_SEED) -> tuple[float, float]:
    """95 % percentile bootstrap interval of the Spearman rho of `r2_auroc_correlation`: each resample draws every
    config's runs (seeds) with replacement (R^2 and AUROC of a run stay together), recomputes the per-config means
    and rho. Restricted to `configs` when given; (nan, nan) with fewer than 3 configs. Resamples whose rho is
    undefined (constant ranks) are dropped."""
    if "r2" not in df.columns or column not in df.columns:
        return float("nan"), float("nan")
    runs_ = df[["config", "r2", column]].dropna()
    if configs is not None:
        runs_ = runs_[runs_["config"].isin(list(configs))]
    groups = [g[["r2", column]].to_numpy(dtype=np.float64) for _, g in runs_.groupby("config", sort=False)]
    if len(groups) < 3:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = np.stack([g[rng.integers(0, len(g), (resamples, len(g)))].mean(1) for g in groups], axis=1)  # (R, C, 2)
    rho = intervals.spearman_rows(means[..., 0], means[..., 1])
    rho = rho[np.isfinite(rho)]
    if not len(rho):
        return float("nan"), float("nan")
    lo, hi = np.percentile(rho, [2.5, 97.5])
    return float(lo), float(hi)


def _rho_text(agg: pd.DataFrame, df: pd.DataFrame, kind: str, column: str, configs: list[str] | None = None) -> str:
    """The table's ρ line: over every config, or over `configs` (those `counted_configs` keeps) when given."""
    sub = agg if configs is None else agg.loc[configs]
    rho, n = r2_auroc_correlation(sub, kind, False, column)
    lo, hi = r2_auroc_interval(df, column, configs)
    interval = f" (95 % bootstrap interval over seeds: [{lo:.3f}, {hi:.3f}])" if not np.isnan(lo) else ""
    if configs is not None:
        return f"Spearman ρ over the {n} configs that left the prior plateau and are not found unconverged: {rho:.3f}{interval}"
    return f"Spearman ρ(R², avg {kind} AUROC) over {n} configs: {rho:.3f}{interval}"


def write_summary(study_dir: Path, paper: bool = False) -> list[Path]:
    """Write summary.csv, tables.md and summary figures of a study; returns the written paths."""
    study_dir = Path(study_dir)
    df = collect(study_dir)
    if df.empty:
        return []
    written = [study_dir / "summary.csv"]
    df.to_csv(written[0], index=False)
    groups = benchmarks_in(df)
    convergence = read_convergence(study_dir)
    converged = None if convergence is None else convergence["converged"].to_dict()
    backbones = sorted(int(b) for b in df["backbone"].unique())
    over = "seeds" if len(backbones) == 1 else f"the {len(backbones)} backbones × {df['seed'].nunique()} seeds"
    parts = [f"# Study `{study_dir.name}`: {df['config'].nunique()} configs, seeds {sorted(int(s) for s in df['seed'].unique())}"
             + (f", source backbones (pretrain_seed) {backbones}" if len(backbones) > 1 else ""),
             f"Cells are mean ± sample std (ddof 1) over {over}; FPR95 = fraction of unknown accepted at 95 % known accepted. "
             "`pair AUROC`: how well the trained model ranks held-out source pairs (same above different; "
             f"lib/pair_eval.py); a config with a seed below {LEARNED_PAIR_AUROC} did not leave the label-prior plateau "
             "(it calls every pair different) and is left out of the 'learned' ρ. `train acc same`: fraction of same "
             "pairs called same over the last fifth of training (a calibration, not the gate)."]
    if converged is None:
        parts.append(f"Convergence: not measured for this study (benchmarks/convergence.py writes {CONVERGENCE_CSV}); "
                     "every config that left the plateau enters ρ.")
    else:
        unconverged = [c for c in CONFIG_ORDER if converged.get(c) is False]
        parts.append(f"Convergence ({CONVERGENCE_CSV}, benchmarks/convergence.py; docs/convergence.md): "
                     f"{sum(converged.values())} of {len(converged)} configs converged"
                     + (f"; {NOT_CONVERGED} marks the others ({', '.join(unconverged)}): their numbers are a property "
                        "of the training budget, and they are left out of ρ." if unconverged else "."))
    marks = {c: NOT_CONVERGED for c, ok in (converged or {}).items() if not ok}
    regimes = sorted({r for r in df.get("train_regime", pd.Series(dtype=str)).fillna("") if r})
    if regimes:  # docs/METHOD.md §5: every table made on a frozen backbone says so
        parts.append(f"Training regime (env.json of the runs): {'; '.join(regimes)}"
                     + ("" if regimes == ["finetune"] else " (docs/METHOD.md §5's CPU regime: only r and c train, on cached "
                                                           "features of augmented source images)")
                     + ".")
    refs = reference.read_reference_rows(study_dir)
    all_names = groups["intra"] + groups["cross"]
    note = split_line(df, all_names)
    if note:  # every table made from a split other than the paper's says so (here, and under each table)
        parts.append(f"Split lists (env.json of the runs): {note}")
    if refs.get("backbone_proto"):
        clear, near = headline_split(refs, all_names)
        parts.append(f"Headline (averages, ρ): the benchmarks where the frozen-backbone reference has AUROC − "
                     f"{HEADLINE_SE_FACTOR:g}·SE ≥ {HEADLINE_MIN_AUROC} (its 95 % lower bound clears 'poor' "
                     f"discrimination); {f'the other {len(near)} are in the last section' if near else 'all do'}. "
                     "Rows in italics are references, not trained configs, and never enter ρ.")
    else:
        clear, near = all_names, []
        parts.append(f"No reference rows ({reference.REFERENCE_DIR}/metrics.json is missing): averages and ρ over "
                     "every benchmark, as recorded by 03.")
    averages = {}
    for kind in ("intra", "cross"):
        shown = [b for b in groups[kind] if b in clear]
        averages[kind] = f"auroc__{kind}_headline" if refs.get("backbone_proto") else f"auroc__{kind}_avg"
        if refs.get("backbone_proto"):
            df = add_average(df, shown, f"{kind}_headline")
            df = add_average(df, [b for b in groups[kind] if b in near], f"{kind}_near_chance")
    agg = aggregate(df)
    for kind in ("intra", "cross"):
        shown = [b for b in groups[kind] if b in clear]
        if shown:
            parts += [f"\n## {kind}-domain\n", table(agg, shown, kind, paper, averages[kind][len("auroc__"):], refs, marks)]
            line = se_line(df, shown, refs)
            parts += [f"\n{line}"] if line else []
            note = split_line(df, shown)
            parts += [f"\n{note}"] if note else []
            if df["backbone"].nunique() >= 2:  # one interval per rho: the hierarchical one, over backbones too
                parts.append(("\n" if not line else "") + f"Spearman ρ(R², avg {kind} AUROC), with its interval over "
                             "backbones, run seeds and test images: in 'What holds across backbones' below.")
            else:
                parts.append(("\n" if not line else "") + _rho_text(agg, df, kind, averages[kind]))
                counted = counted_configs(agg, converged)
                if len(counted) < len(agg):
                    parts.append(_rho_text(agg, df, kind, averages[kind], counted))
    if near:
        parts.append("\n## Benchmarks where even the backbone is near chance\n\nNot in the headline averages or ρ: "
                     f"the frozen-backbone reference has AUROC − {HEADLINE_SE_FACTOR:g}·SE < {HEADLINE_MIN_AUROC} "
                     "(or no reference value) here.")
        for kind in ("intra", "cross"):
            names = [b for b in groups[kind] if b in near]
            if names:
                parts += [f"\n### {kind}-domain\n", table(agg, names, kind, paper, f"{kind}_near_chance", refs, marks)]
                line = se_line(df, names, refs)
                parts += [f"\n{line}"] if line else []
                note = split_line(df, names)
                parts += [f"\n{note}"] if note else []
    if "backbone" in df and df["backbone"].nunique() >= 2:
        parts += robust_section(study_dir, df, groups, convergence)
    if not paper:
        parts += ["\n## Paper reference (ICIAP 2023, ImageNet, seed 000; not comparable in scale)\n",
                  "| config | R² | intra avg AUROC | cross avg AUROC |", "|---|---|---|---|"]
        parts += [f"| {c} | {PAPER_R2[c]:.3f} | {PAPER_AVG_AUROC[c][0]:.3f} | {PAPER_AVG_AUROC[c][1]:.3f} |"
                  for c in CONFIG_ORDER if c in PAPER_AVG_AUROC]
    written.append(study_dir / "tables.md")
    runs.atomic_write_text(written[-1], "\n".join(parts) + "\n")
    written += summary_figures(study_dir, df, agg, groups, averages)
    return written


def summary_figures(study_dir: Path, df: pd.DataFrame, agg: pd.DataFrame, groups: dict[str, list[str]],
                    averages: dict[str, str] | None = None) -> list[Path]:
    """Per kind: AUROC and FPR95 bars of every benchmark (``auroc_<kind>``, ``fpr95_<kind>``) and R^2 vs the kind's
    average AUROC column (`averages[kind]`, default ``auroc__<kind>_avg``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    refs = reference.read_reference_rows(study_dir)
    for kind, names in groups.items():
        if names:
            for metric, label in (("auroc", "AUROC (higher is better)"), ("fpr95", "FPR95 (lower is better)")):
                if not any(f"{metric}__{n}" in df.columns for n in names):
                    continue
                lines = {reference.TABLE_ROWS[row].removeprefix("ref: "): {n: refs[row][f"{metric}__{n}"] for n in names
                                                                            if f"{metric}__{n}" in refs.get(row, {})}
                         for row in REFERENCE_LINES}
                fig = study_plots.benchmark_bars(df, names, metric=metric, title=f"{kind}-domain {label}",
                                                 references={k: v for k, v in lines.items() if v})
                written.append(runs.save_figure(fig, study_dir, f"{metric}_{kind}"))
                plt.close(fig)
        column = (averages or {}).get(kind, f"auroc__{kind}_avg")
        if "r2" in df.columns and column in df.columns and df[column].notna().any():
            fig = eval_plots.r2_vs_auroc(df, column, agg.index[~learned(agg)])
            written.append(runs.save_figure(fig, study_dir, f"r2_vs_auroc_{kind}"))
            plt.close(fig)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study_dir")
    parser.add_argument("--paper", action="store_true", help="put the paper's numbers side by side")
    args = parser.parse_args(argv)
    if not Path(args.study_dir).is_dir():
        raise FileNotFoundError(f"no study folder {args.study_dir}: give outputs/<study> of a sweep")
    for path in write_summary(Path(args.study_dir), paper=args.paper):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(cli.run(main, prog="lib.summary"))

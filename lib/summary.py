"""Study summaries, built from the run folders alone: summary.csv, tables.md (ICIAP README layout), figures.

    python -m lib.summary outputs/mini [--paper]
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from lib import runs

RUN_NAME = re.compile(r"^(?P<config>.+)__seed(?P<seed>\d+)$")
# Row order of the ICIAP table.
CONFIG_ORDER = ["resend_eccv", "mse_c1", "mse_c10", "mse_c50", "bce", "bce_focal", "ce", "ce_focal",
                "hinge_d1", "hinge_d0.1", "hinge_d0.01"]
METRICS = ("auroc", "fpr95")
# A run "left the label-prior plateau" when, over the last fifth of training, it called at least this fraction of
# its same pairs "same" (02 records it as train_acc_same_last). A run on the plateau answers "different" for
# every pair (the 1 : k prior), so its R^2 and AUROC say nothing about its objective.
LEARNED_ACC_SAME = 0.05

# SPEC 8-9: ICIAP 2023, ImageNet-trained ReSeND, seed 000.
PAPER_R2 = {"mse_c1": .520, "mse_c10": .111, "mse_c50": .015, "bce": .592, "bce_focal": .441, "ce": .592,
            "ce_focal": .362, "hinge_d1": .487, "hinge_d0.1": .251, "hinge_d0.01": .101}
PAPER_INTRA_AUROC = {  # Texture / Real / Sketch / Painting / avg
    "mse_c10": (.686, .776, .615, .729, .702),
    "hinge_d0.01": (.688, .798, .638, .719, .711),
    "ce": (.614, .651, .554, .648, .617),
}
PAPER_CROSS_AUROC = {"hinge_d0.01": .641, "mse_c10": .645, "ce": .617}


def collect(study_dir: Path) -> pd.DataFrame:
    """One row per finished ReSeND run folder (``<config>__seed<k>`` with metrics.json): config, seed, metrics."""
    rows = []
    for run_dir in sorted(Path(study_dir).iterdir()) if Path(study_dir).exists() else []:
        match = RUN_NAME.match(run_dir.name)
        if not match or run_dir.name.startswith("comparisons_") or not runs.is_finished(run_dir):
            continue
        metrics = runs.read_metrics(run_dir)
        rows.append({"config": match["config"], "seed": int(match["seed"]), **metrics})
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    order = {name: i for i, name in enumerate(CONFIG_ORDER)}
    df["_order"] = df["config"].map(lambda c: order.get(c, len(order)))
    return df.sort_values(["_order", "config", "seed"]).drop(columns="_order").reset_index(drop=True)


def benchmark_kind(name: str) -> str:
    """'cross' or 'intra', from the benchmark registry (falls back to the ``_to_`` naming rule)."""
    try:
        from lib import data

        spec = data.BENCHMARKS[name]
        return getattr(spec, "kind", None) or spec["kind"]
    except (ImportError, KeyError, TypeError, AttributeError):
        return "cross" if "_to_" in name else "intra"


def benchmarks_in(df: pd.DataFrame) -> dict[str, list[str]]:
    names = sorted({c.split("__", 1)[1] for c in df.columns if c.startswith("auroc__") and not c.endswith("_avg")})
    groups: dict[str, list[str]] = {"intra": [], "cross": []}
    for name in names:
        groups[benchmark_kind(name)].append(name)
    return groups


def aggregate(df: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over seeds per config (columns ``<metric>`` and ``<metric>_std``), in table order."""
    numeric = df.drop(columns=["seed"]).groupby("config", sort=False)
    mean, std = numeric.mean(numeric_only=True), numeric.std(numeric_only=True, ddof=0)
    out = mean.join(std.add_suffix("_std"))
    out["n_seeds"] = df.groupby("config", sort=False)["seed"].count()
    return out


def _cell(agg: pd.DataFrame, config: str, column: str) -> str:
    if column not in agg.columns or pd.isna(agg.at[config, column]):
        return "–"
    std = agg.at[config, f"{column}_std"] if f"{column}_std" in agg.columns else np.nan
    n = agg.at[config, "n_seeds"]
    return f"{agg.at[config, column]:.3f}" + (f" ± {std:.3f}" if n > 1 and not pd.isna(std) else "")


def table(agg: pd.DataFrame, benchmarks: list[str], kind: str, paper: bool) -> str:
    """Markdown table: one row per config, AUROC / FPR95 per benchmark, their averages, R^2."""
    header = ["config"] + [f"{b} AUROC / FPR95" for b in benchmarks] + ["avg AUROC / FPR95", "R²", "train acc same"]
    if paper:
        header += ["paper avg AUROC", "paper R²"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for config in agg.index:
        cells = [config] + [f"{_cell(agg, config, f'auroc__{b}')} / {_cell(agg, config, f'fpr95__{b}')}" for b in benchmarks]
        cells += [f"{_cell(agg, config, f'auroc__{kind}_avg')} / {_cell(agg, config, f'fpr95__{kind}_avg')}",
                  _cell(agg, config, "r2"), _cell(agg, config, "train_acc_same_last")]
        if paper:
            ref = PAPER_INTRA_AUROC.get(config, (None,) * 5)[-1] if kind == "intra" else PAPER_CROSS_AUROC.get(config)
            cells += [f"{ref:.3f}" if ref is not None else "–", f"{PAPER_R2[config]:.3f}" if config in PAPER_R2 else "–"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def learned(agg: pd.DataFrame) -> pd.Series:
    """Per config: True when its mean train_acc_same_last >= LEARNED_ACC_SAME (False where it is not recorded)."""
    if "train_acc_same_last" not in agg.columns:
        return pd.Series(False, index=agg.index)
    return agg["train_acc_same_last"].fillna(0.0) >= LEARNED_ACC_SAME


def plateau_configs(df: pd.DataFrame) -> list[str]:
    """Configs of the per-run table `df` (see `collect`) that did not leave the label-prior plateau."""
    agg = aggregate(df)
    return agg.index[~learned(agg)].tolist()


def r2_auroc_correlation(agg: pd.DataFrame, kind: str = "intra", learned_only: bool = False) -> tuple[float, int]:
    """Spearman rho between per-config mean R^2 and mean average AUROC (rho, number of configs); with
    `learned_only`, over the configs that left the label-prior plateau (see `learned`)."""
    column = f"auroc__{kind}_avg"
    if "r2" not in agg.columns or column not in agg.columns:
        return float("nan"), 0
    both = agg.loc[learned(agg) if learned_only else agg.index, ["r2", column]].dropna()
    if len(both) < 3:
        return float("nan"), len(both)
    return float(spearmanr(both["r2"], both[column]).statistic), len(both)


def write_summary(study_dir: Path, paper: bool = False) -> list[Path]:
    """Write summary.csv, tables.md and summary figures of a study; returns the written paths."""
    study_dir = Path(study_dir)
    df = collect(study_dir)
    if df.empty:
        return []
    written = [study_dir / "summary.csv"]
    df.to_csv(written[0], index=False)
    agg = aggregate(df)
    groups = benchmarks_in(df)
    parts = [f"# Study `{study_dir.name}`: {df['config'].nunique()} configs, seeds {sorted(int(s) for s in df['seed'].unique())}",
             "Cells are mean ± std over seeds; FPR95 = fraction of unknown accepted at 95 % known accepted. "
             "`train acc same`: fraction of same pairs called same over the last fifth of training; below "
             f"{LEARNED_ACC_SAME} the run never left the label-prior plateau (it calls every pair different)."]
    for kind in ("intra", "cross"):
        if groups[kind]:
            parts += [f"\n## {kind}-domain\n", table(agg, groups[kind], kind, paper)]
            rho, n = r2_auroc_correlation(agg, kind)
            parts.append(f"\nSpearman ρ(R², avg {kind} AUROC) over {n} configs: {rho:.3f}")
            rho, n = r2_auroc_correlation(agg, kind, learned_only=True)
            parts.append(f"Spearman ρ over the {n} configs that left the prior plateau: {rho:.3f}")
    if not paper:
        parts += ["\n## Paper reference (ICIAP 2023, ImageNet, seed 000; not comparable in scale)\n",
                  "| config | R² | intra avg AUROC | cross avg AUROC |", "|---|---|---|---|"]
        parts += [f"| {c} | {PAPER_R2[c]:.3f} | {PAPER_INTRA_AUROC.get(c, [None] * 5)[-1] or '–'} | "
                  f"{PAPER_CROSS_AUROC.get(c, '–')} |" for c in CONFIG_ORDER if c in PAPER_R2]
    written.append(study_dir / "tables.md")
    runs.atomic_write_text(written[-1], "\n".join(parts) + "\n")
    written += summary_figures(study_dir, df, agg, groups)
    return written


def summary_figures(study_dir: Path, df: pd.DataFrame, agg: pd.DataFrame, groups: dict[str, list[str]]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lib.plots import evaluate as eval_plots
    from lib.plots import study as study_plots

    written = []
    for kind, names in groups.items():
        if names:
            fig = study_plots.benchmark_bars(df, names, metric="auroc", title=f"{kind}-domain AUROC")
            written.append(runs.save_figure(fig, study_dir, f"auroc_{kind}"))
            plt.close(fig)
        if "r2" in df.columns and f"auroc__{kind}_avg" in df.columns:
            fig = eval_plots.r2_vs_auroc(df, f"auroc__{kind}_avg", agg.index[~learned(agg)])
            written.append(runs.save_figure(fig, study_dir, f"r2_vs_auroc_{kind}"))
            plt.close(fig)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study_dir")
    parser.add_argument("--paper", action="store_true", help="put the paper's numbers side by side")
    args = parser.parse_args(argv)
    for path in write_summary(Path(args.study_dir), paper=args.paper):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Is a configuration converged? Issue 20's rule, measured for all 11 configurations of a study.

A configuration counts as converged when its numbers are a property of the objective, not of the budget:
1. on every backbone x seed its held-out pair AUROC (02, lib/pair_eval.py) is >= PAIR_AUROC_MIN, and
2. training twice as long changes its mean R^2 by <= R2_TOL and its mean intra / cross average AUROC by <= AUROC_TOL.

The doubled study is the same grid run again by the sweep (the study's engine, nothing of its own) under
``<study>_2x`` with ``steps`` and ``warmup_steps`` doubled; both studies then give per-run tables (`runs.collect`)
that this script compares. The table goes to ``docs/convergence.md``::

    .venv/bin/python benchmarks/convergence.py params/grids/study.yaml --jobs 2     # runs <study>_2x first
    .venv/bin/python benchmarks/convergence.py params/grids/study.yaml --no-run     # only compare what is there
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import pandas as pd

from lib import config, runs, sweep
from lib.paths import OUTPUTS_DIR, REPO_ROOT

PAIR_AUROC_MIN = 0.97
R2_TOL = 0.02
AUROC_TOL = 0.01
COLUMNS = {"r2": R2_TOL, "auroc__intra_avg": AUROC_TOL, "auroc__cross_avg": AUROC_TOL}


def doubled(grid: sweep.Grid) -> sweep.Grid:
    """The grid trained twice as long (steps and warm-up doubled; the rest of the recipe unchanged), as
    ``<study>_2x``."""
    settings = config.resolve(grid.preset, say=lambda _: None, **(grid.overrides or {}))
    overrides = {**(grid.overrides or {}), "steps": 2 * settings.steps, "warmup_steps": 2 * settings.warmup_steps}
    return dataclasses.replace(grid, study=f"{grid.study}_2x", overrides=overrides, comparisons={})


def convergence_table(base: pd.DataFrame, longer: pd.DataFrame) -> pd.DataFrame:
    """Per configuration: the worst held-out pair AUROC over every run of both budgets, the mean of each of
    `COLUMNS` at both budgets and their difference, and ``converged`` (the rule of the module docstring). Only the
    (backbone, seed) runs present at both budgets count."""
    keys = ["config", "backbone", "seed"]
    both = base.merge(longer, on=keys, suffixes=("", "_2x"))
    rows = []
    for config_name, group in both.groupby("config", sort=False):
        row = {"config": config_name, "runs": len(group),
               "worst_pair_auroc": float(min(group["pair_auroc"].min(), group["pair_auroc_2x"].min()))}
        ok = row["worst_pair_auroc"] >= PAIR_AUROC_MIN
        for column, tolerance in COLUMNS.items():
            if column in group and f"{column}_2x" in group:
                row[column], row[f"{column}_2x"] = group[column].mean(), group[f"{column}_2x"].mean()
                row[f"delta_{column}"] = row[f"{column}_2x"] - row[column]
                ok = ok and abs(row[f"delta_{column}"]) <= tolerance
        row["converged"] = bool(ok)
        rows.append(row)
    return pd.DataFrame(rows)


def markdown(table: pd.DataFrame, base_study: str, steps: int) -> str:
    lines = [f"# Convergence of `{base_study}` ({steps} vs {2 * steps} steps)", "",
             f"Converged = held-out pair AUROC ≥ {PAIR_AUROC_MIN} on every run of both budgets, and doubling the steps "
             f"moves the mean R² by ≤ {R2_TOL} and the mean intra / cross average AUROC by ≤ {AUROC_TOL} "
             "(`benchmarks/convergence.py`).", "",
             "| config | runs | worst pair AUROC | R² → 2× (Δ) | intra AUROC → 2× (Δ) | cross AUROC → 2× (Δ) | converged |",
             "|---|---|---|---|---|---|---|"]
    for _, r in table.iterrows():
        cells = [f"{r[c]:.3f} → {r[c + '_2x']:.3f} ({r['delta_' + c]:+.3f})" if c in r and pd.notna(r.get(c)) else "–"
                 for c in COLUMNS]
        lines.append(f"| {r['config']} | {r['runs']} | {r['worst_pair_auroc']:.3f} | " + " | ".join(cells)
                     + f" | {'yes' if r['converged'] else '**no**'} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("grid", help="the study's grid, e.g. params/grids/study.yaml")
    parser.add_argument("--jobs", type=int, default=1, help="run folders at once (lib.sweep --jobs)")
    parser.add_argument("--no-run", action="store_true", help="compare the two studies as they are; train nothing")
    parser.add_argument("--out", default=str(REPO_ROOT / "docs" / "convergence.md"))
    args = parser.parse_args(argv)
    grid = sweep.load_grid(args.grid)
    longer = doubled(grid)
    if not args.no_run:
        sweep.run_grid(longer, jobs=args.jobs)
    base, more = runs.collect(OUTPUTS_DIR / grid.study), runs.collect(OUTPUTS_DIR / longer.study)
    if base.empty or more.empty:
        raise SystemExit(f"no finished runs in {OUTPUTS_DIR / grid.study} or {OUTPUTS_DIR / longer.study}: run the "
                         "study (make study) and this script without --no-run")
    steps = config.resolve(grid.preset, say=lambda _: None, **(grid.overrides or {})).steps
    text = markdown(convergence_table(base, more), grid.study, steps)
    Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

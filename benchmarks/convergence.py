"""Is a configuration converged? Issue 20's rule, measured for all 11 configurations of a study.

A configuration counts as converged when its numbers are a property of the objective, not of the budget:
1. on every backbone x seed its held-out pair AUROC (02, lib/pair_eval.py) is >= PAIR_AUROC_MIN, and
2. training twice as long changes its mean R^2 by <= R2_TOL and its mean intra / cross average AUROC by <= AUROC_TOL.

The doubled study is the same grid run again by the sweep (the study's engine, nothing of its own) under
``<study>_2x`` with ``steps`` and ``warmup_steps`` doubled; both studies then give per-run tables (`runs.collect`)
that this script compares. ``--seeds`` doubles only those run seeds (every backbone): the 2x comparison then rests
on fewer runs, and the table says how many. The table goes to ``docs/convergence.md``, and to
``outputs/<study>/convergence.csv``, which the study's tables read (lib.summary): a configuration that is not
converged is marked there and left out of rho::

    .venv/bin/python benchmarks/convergence.py params/grids/study.yaml --jobs 2             # runs <study>_2x first
    .venv/bin/python benchmarks/convergence.py params/grids/study.yaml --jobs 2 --seeds 0   # 2x of run seed 0 only
    .venv/bin/python benchmarks/convergence.py params/grids/study.yaml --no-run             # only compare what is there
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import pandas as pd

from lib import config, runs, summary, sweep
from lib.paths import OUTPUTS_DIR, REPO_ROOT

PAIR_AUROC_MIN = 0.97
R2_TOL = 0.02
AUROC_TOL = 0.01
COLUMNS = {"r2": R2_TOL, "auroc__intra_avg": AUROC_TOL, "auroc__cross_avg": AUROC_TOL}


def doubled(grid: sweep.Grid, seeds: list[int] | None = None) -> sweep.Grid:
    """The grid trained twice as long (steps and warm-up doubled; the rest of the recipe unchanged), as
    ``<study>_2x``; `seeds`: only these run seeds (each of them must be one of the grid's)."""
    settings = config.resolve(grid.preset, say=lambda _: None, **(grid.overrides or {}))
    overrides = {**(grid.overrides or {}), "steps": 2 * settings.steps, "warmup_steps": 2 * settings.warmup_steps}
    if seeds is not None and not set(seeds) <= set(grid.seeds):
        raise ValueError(f"--seeds {seeds} are not all run seeds of the grid {grid.seeds}: pick some of those")
    return dataclasses.replace(grid, study=f"{grid.study}_2x", overrides=overrides, comparisons={},
                               seeds=list(grid.seeds if seeds is None else seeds))


def convergence_table(base: pd.DataFrame, longer: pd.DataFrame) -> pd.DataFrame:
    """Per configuration: the worst held-out pair AUROC over every run of either budget, the mean of each of
    `COLUMNS` at both budgets and their difference, and ``converged`` (the rule of the module docstring). The means
    and differences are over the (backbone, seed) runs present at both budgets (``runs``)."""
    keys = ["config", "backbone", "seed"]
    both = base.merge(longer, on=keys, suffixes=("", "_2x"))
    worst = pd.concat([base[["config", "pair_auroc"]], longer[["config", "pair_auroc"]]]).groupby("config")["pair_auroc"].min()
    rows = []
    for config_name, group in both.groupby("config", sort=False):
        row = {"config": config_name, "runs": len(group), "worst_pair_auroc": float(worst[config_name])}
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
             "(`benchmarks/convergence.py`). `runs`: the (backbone, run seed) runs trained at both budgets, over which "
             "the means are taken; the worst pair AUROC is over every run of either budget.", "",
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
    parser.add_argument("--seeds", default="", help="comma list: double only these run seeds (default: all)")
    parser.add_argument("--out", default=str(REPO_ROOT / "docs" / "convergence.md"))
    args = parser.parse_args(argv)
    grid = sweep.load_grid(args.grid)
    longer = doubled(grid, [int(s) for s in args.seeds.split(",") if s] or None)
    if not args.no_run:
        sweep.run_grid(longer, jobs=args.jobs)
    base, more = runs.collect(OUTPUTS_DIR / grid.study), runs.collect(OUTPUTS_DIR / longer.study)
    if base.empty or more.empty:
        raise SystemExit(f"no finished runs in {OUTPUTS_DIR / grid.study} or {OUTPUTS_DIR / longer.study}: run the "
                         "study (make study) and this script without --no-run")
    steps = config.resolve(grid.preset, say=lambda _: None, **(grid.overrides or {})).steps
    table = convergence_table(base, more)
    text = markdown(table, grid.study, steps)
    runs.atomic_write_text(Path(args.out), text)
    runs.atomic_write_text(OUTPUTS_DIR / grid.study / summary.CONVERGENCE_CSV, table.to_csv(index=False))
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""How far from converged is the mini recipe? Issue 20's rule applied to each doubling of a ladder of budgets.

`benchmarks/convergence.py` compares a study with the same study trained twice as long; this script reads the
committed tables (``outputs/<study>/summary.csv``) of several studies that differ only in their steps (the sweep
trained each: ``lib.sweep <grid>`` with ``overrides: {steps: ..., warmup_steps: ...}``), keeps the (backbone, run
seed) runs present in all of them, and applies the rule to each consecutive pair (800 → 1,600, 1,600 → 3,200, ...).
It trains nothing. A probe on one backbone x one run seed says which budget to try on all of them; it is not the
rule, which wants every backbone x seed::

    .venv/bin/python benchmarks/convergence_ladder.py study study_2x probe_4x probe_8x --out docs/convergence_ladder.md
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from convergence import AUROC_TOL, COLUMNS, PAIR_AUROC_MIN, R2_TOL, convergence_table  # noqa: E402

from lib import intervals, runs, summary  # noqa: E402
from lib.paths import OUTPUTS_DIR  # noqa: E402

KEYS = ["config", "backbone", "seed"]
SHORT = {"r2": "R²", "auroc__intra_avg": "intra", "auroc__cross_avg": "cross"}


def load(study: str) -> pd.DataFrame:
    path = OUTPUTS_DIR / study / "summary.csv"
    if not path.exists():
        raise SystemExit(f"no {path}: run that study first (python -m lib.sweep <its grid>) or name a study in outputs/")
    table = pd.read_csv(path)
    steps = table["train_steps"].unique()
    if len(steps) != 1:
        raise SystemExit(f"{path} mixes step budgets {sorted(steps)}: a study compared here must be one budget")
    return table


def ladder(tables: list[pd.DataFrame]) -> tuple[pd.DataFrame, list[int]]:
    """The runs present at every budget, and per configuration the means at each budget plus, for each doubling,
    the rule's verdict (``ok_<i>``: rung i -> i+1 meets it)."""
    common = tables[0][KEYS]
    for table in tables[1:]:
        common = common.merge(table[KEYS], on=KEYS)
    if common.empty:
        raise SystemExit("no (config, backbone, seed) run is in every study: the ladder compares the same runs")
    tables = [table.merge(common, on=KEYS) for table in tables]
    steps = [int(table["train_steps"].iloc[0]) for table in tables]
    if any(b != 2 * a for a, b in zip(steps, steps[1:])):
        raise SystemExit(f"the studies' steps {steps} are not a ladder of doublings: order them by budget, each twice the last")
    verdicts = [convergence_table(short, long).set_index("config") for short, long in zip(tables, tables[1:])]
    out = verdicts[0][list(COLUMNS)].add_suffix("_0")  # the first budget's means, over the same runs
    out["runs"] = verdicts[0]["runs"]
    for i, verdict in enumerate(verdicts):
        out[[f"{c}_{i + 1}" for c in COLUMNS]] = verdict[[f"{c}_2x" for c in COLUMNS]].to_numpy()
        out[f"worst_pair_auroc_{i}"] = verdict["worst_pair_auroc"]
        out[f"ok_{i}"] = verdict["converged"]
    return out.reset_index(), steps


def contrasts(table: pd.DataFrame, steps: list[int]) -> str:
    """The paper's within-family steps (`intervals.CONTRASTS`) at each budget: Δ intra / cross AUROC of the means
    (to - from), with the paper's Δ beside; a markdown table (the sign is what the paper argues from)."""
    means = table.set_index("config")
    paper = summary.paper_contrasts()
    rungs = [f"{s:,}" for s in steps]
    lines = ["", "## The paper's within-family contrasts at each budget", "",
             "Δ = mean of the second configuration − mean of the first, over the same runs as above; paper: its seed "
             "000 tables (docs/METHOD.md). No interval: a probe's runs are too few for one (the study's tables give "
             "them at 800 and 1,600 steps).", "",
             "| contrast | " + " | ".join(f"Δ intra {r}" for r in rungs) + " | paper Δ intra | "
             + " | ".join(f"Δ cross {r}" for r in rungs) + " | paper Δ cross |",
             "|---" * (3 + 2 * len(rungs)) + "|"]
    for a, b in intervals.CONTRASTS:
        if a not in means.index or b not in means.index:
            continue
        cells = []
        for kind, paper_delta in (("auroc__intra_avg", paper[(a, b)][1]), ("auroc__cross_avg", paper[(a, b)][2])):
            cells += [f"{means.loc[b, f'{kind}_{i}'] - means.loc[a, f'{kind}_{i}']:+.3f}" for i in range(len(rungs))]
            cells.append(f"{paper_delta:+.3f}")
        lines.append(f"| {a} → {b} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def markdown(table: pd.DataFrame, steps: list[int], studies: list[str]) -> str:
    head = " → ".join(f"{s:,}" for s in steps)
    lines = [f"# Convergence ladder ({head} steps)", "",
             f"Studies {', '.join(f'`{s}`' for s in studies)} (`outputs/<study>/summary.csv`), the same recipe with the "
             f"steps and warm-up doubled at each rung; means over the {int(table['runs'].max())} (backbone, run seed) "
             f"run(s) present in every study. A doubling passes (✓) when the pair AUROC is ≥ {PAIR_AUROC_MIN} at both "
             f"budgets and it moves the mean R² by ≤ {R2_TOL} and the intra / cross AUROC by ≤ {AUROC_TOL} "
             "(`benchmarks/convergence.py`'s rule); ✗ otherwise. `benchmarks/convergence_ladder.py` made this table.", ""]
    rungs = [f"{s:,}" for s in steps]
    doublings = [f"{a} → {b}" for a, b in zip(rungs, rungs[1:])]
    lines.append("| config | " + " | ".join(f"{SHORT[c]} {r}" for c in COLUMNS for r in rungs) + " | "
                 + " | ".join(doublings) + " |")
    lines.append("|---" * (1 + len(COLUMNS) * len(rungs) + len(doublings)) + "|")
    for _, row in table.iterrows():
        cells = [f"{row[f'{c}_{i}']:.3f}" for c in COLUMNS for i in range(len(rungs))]
        marks = ["✓" if row[f"ok_{i}"] else "✗" for i in range(len(doublings))]
        lines.append(f"| {row['config']} | " + " | ".join(cells) + " | " + " | ".join(marks) + " |")
    return "\n".join(lines) + "\n"


def emit(text: str, out: str = "") -> None:
    """Print a benchmark's markdown table, and write it to `out` too when given."""
    if out:
        runs.atomic_write_text(Path(out), text)
    print(text)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("studies", nargs="+", help="studies in outputs/, shortest budget first, each twice the last")
    parser.add_argument("--out", default="", help="also write the markdown table here (e.g. docs/convergence_ladder.md)")
    args = parser.parse_args(argv)
    if len(args.studies) < 2:
        parser.error("name at least two studies: the ladder compares each budget with the next")
    table, steps = ladder([load(s) for s in args.studies])
    emit(markdown(table, steps, args.studies) + contrasts(table, steps), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

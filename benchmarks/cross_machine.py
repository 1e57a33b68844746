"""How far apart are the same runs on two machines? A bound for what the pinned CPU path does not make identical.

For each pair ``A:B`` of studies whose committed tables (``outputs/<study>/summary.csv``) hold the same runs (same
training code, same grid) made on two machines, prints per metric how many runs are bit-identical and the largest and
mean |difference|, beside the run-seed spread of a reference study (the median |seed 1 - seed 0| of a config on one
backbone): a machine difference well below it moves the study's numbers less than drawing another run seed does.
Trains nothing::

    .venv/bin/python benchmarks/cross_machine.py mini:mini_xeon probe_4x:probe_4x_xeon --spread study \
        --labels "AMD EPYC" "Intel Xeon, MKL pinned to its Zen branch" "AMD EPYC" "Intel Xeon, MKL's Intel branch" \
        --title "AMD EPYC (AVX2 only) vs Intel Xeon (AVX-512 + AMX)" --out docs/cross_machine.md

``--labels``: two (every pair) or two per pair.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from convergence_ladder import KEYS, emit, load  # noqa: E402

METRICS = ["r2", "auroc__intra_avg", "auroc__cross_avg", "fpr95__intra_avg", "fpr95__cross_avg", "pair_auroc",
           "train_loss_init", "train_loss_last"]


def seed_spread(study: pd.DataFrame, metric: str) -> float:
    """Median over (config, backbone) of |seed 1 - seed 0|; NaN without two seeds."""
    seeds = sorted(study["seed"].unique())
    if len(seeds) < 2:
        return float("nan")
    wide = study.pivot_table(index=["config", "backbone"], columns="seed", values=metric)
    return float((wide[seeds[1]] - wide[seeds[0]]).abs().median())


def compare(a: pd.DataFrame, b: pd.DataFrame, spread: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per metric of `METRICS`: runs compared, bit-identical runs, max and mean |b - a|, and the seed spread."""
    both = a.merge(b, on=KEYS, suffixes=("_a", "_b"))
    if both.empty:
        raise SystemExit("the two studies share no (config, backbone, seed) run: compare the same grid's runs")
    rows = []
    for metric in METRICS:
        if f"{metric}_a" not in both:
            continue
        diff = (both[f"{metric}_b"] - both[f"{metric}_a"]).abs()
        rows.append({"metric": metric, "runs": len(both), "identical": int((diff == 0).sum()),
                     "max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean()),
                     "seed_spread": seed_spread(spread, metric) if spread is not None else float("nan")})
    return pd.DataFrame(rows)


def markdown(table: pd.DataFrame, studies: list[str], labels: list[str], spread_study: str) -> str:
    """One pair's section: its table of `compare`."""
    lines = [f"## `{studies[0]}` ({labels[0]}) vs `{studies[1]}` ({labels[1]})", "",
             "| metric | runs | identical | max abs diff | mean abs diff | seed spread | max diff / seed spread |",
             "|---|---|---|---|---|---|---|"]
    for _, r in table.iterrows():
        ratio = r["max_abs_diff"] / r["seed_spread"] if r["seed_spread"] > 0 else float("nan")
        lines.append(f"| {r['metric']} | {r['runs']} | {r['identical']} | {r['max_abs_diff']:.4g} | "
                     f"{r['mean_abs_diff']:.4g} | {r['seed_spread']:.4g} | {ratio:.2f} |")
    return "\n".join(lines) + "\n"


def header(title: str, spread_study: str) -> str:
    return "\n".join([f"# The same runs on two machines: {title}", "",
                      "`benchmarks/cross_machine.py` made these tables from the studies' `summary.csv`. `identical`: "
                      "the runs whose value is bit-for-bit the same. `seed spread`: the median |seed 1 − seed 0| of "
                      f"one configuration on one backbone in `{spread_study}`, which is the size of drawing another "
                      "run seed.", ""]) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pairs", nargs="+", help="A:B, two studies in outputs/ with the same runs made on two machines")
    parser.add_argument("--labels", nargs="+", default=["machine A", "machine B"],
                        help="what each machine was: two for every pair, or two per pair")
    parser.add_argument("--title", default="", help="the page's title (default: the first two labels)")
    parser.add_argument("--spread", default="", help="a study with two run seeds whose seed spread is the yardstick")
    parser.add_argument("--out", default="", help="also write the markdown table here (e.g. docs/cross_machine.md)")
    args = parser.parse_args(argv)
    if len(args.labels) not in (2, 2 * len(args.pairs)):
        parser.error(f"{len(args.labels)} labels for {len(args.pairs)} pairs: give two, or two per pair")
    labels = args.labels * len(args.pairs) if len(args.labels) == 2 else args.labels
    spread = load(args.spread) if args.spread else None
    sections = []
    for i, pair in enumerate(args.pairs):
        studies = pair.split(":")
        if len(studies) != 2 or not all(studies):
            parser.error(f"{pair!r} is not A:B: name two studies joined by a colon, e.g. probe_4x:probe_4x_xeon")
        sections.append(markdown(compare(load(studies[0]), load(studies[1]), spread), studies, labels[2 * i:2 * i + 2],
                                 args.spread or "(none given)"))
    title = args.title or f"{labels[0]} vs {labels[1]}"
    emit(header(title, args.spread or "(none given)") + "\n".join(sections), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

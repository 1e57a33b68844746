"""Figures of notebook 06 (comparisons). Data in, matplotlib Figure out; nothing is saved here."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

METRICS = (("auroc", "AUROC (higher = better)"), ("fpr95", "FPR95 (lower = better)"),
           ("accuracy", "closed-set accuracy"))


def comparison_bars(table: pd.DataFrame, title: str = "") -> plt.Figure:
    """Horizontal bars of AUROC / FPR95 / accuracy per method and setting, coloured by family (ReSeND, post-hoc,
    trained), with ± one std over seeds as error bars where the table has ``<metric>_std``.

    `table`: `baselines.comparison_table` output (columns method, family, optionally setting, the metrics).
    """
    families = list(dict.fromkeys(table["family"]))
    colours = {f: plt.get_cmap("tab10")(i) for i, f in enumerate(families)}
    y = np.arange(len(table))
    fig, axes = plt.subplots(1, len(METRICS), figsize=(3.6 * len(METRICS), 0.32 * len(table) + 1.6), sharey=True)
    for ax, (metric, label) in zip(axes, METRICS):
        values = pd.to_numeric(table.get(metric, pd.Series(np.nan, index=table.index)), errors="coerce")
        std = pd.to_numeric(table.get(f"{metric}_std", pd.Series(np.nan, index=table.index)), errors="coerce")
        ax.barh(y, values.fillna(0.0), xerr=std.fillna(0.0), color=[colours[f] for f in table["family"]],
                error_kw={"lw": 1})
        ax.set(xlim=(0, 1), xlabel=label)
        ax.grid(axis="x", alpha=0.3)
        if metric == "auroc":
            ax.axvline(0.5, c="grey", ls=":", lw=1)
    labels = table["method"] if "setting" not in table else table["method"] + " (" + table["setting"].fillna("") + ")"
    axes[0].set_yticks(y, labels)
    axes[0].invert_yaxis()
    handles = [plt.Rectangle((0, 0), 1, 1, color=colours[f]) for f in families]
    fig.legend(handles, families, loc="lower center", ncol=len(families), fontsize=8, bbox_to_anchor=(0.5, -0.02))
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return fig

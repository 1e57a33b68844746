"""Study-level figures: loss shapes (05) and per-benchmark bars (summary). Data in, Figure out.

The R^2-vs-AUROC scatter lives in lib.plots.evaluate (shared by 04_r2 and the summary)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns


def loss_shapes(curves: pd.DataFrame) -> plt.Figure:
    """Three panels over p = probability of the correct class: raw loss, loss / loss(p_min), |dL/dp|.

    `curves` has columns ``config, p, loss, grad`` (one row per config and p), as made by
    ``lib.objectives``' ``loss_curve`` (see notebooks/05_loss_shapes).
    """
    curves = curves.copy()
    curves["loss_normalised"] = curves["loss"] / curves.groupby("config")["loss"].transform("max")
    curves["abs_grad"] = curves["grad"].abs().clip(lower=1e-4)  # below 1e-4 the push is nil; keep the axis readable
    curves["family"] = curves["config"].str.extract(r"^(mse|bce|ce|hinge|resend)", expand=False).fillna("other")
    palette = sns.color_palette("husl", curves["config"].nunique())
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
    panels = [("loss", "loss (raw)", "linear"), ("loss_normalised", "loss / max loss", "linear"),
              ("abs_grad", "|dL/dp| (log)", "log")]
    for ax, (column, label, scale) in zip(axes, panels):
        sns.lineplot(data=curves, x="p", y=column, hue="config", style="family", palette=palette, ax=ax,
                     legend=ax is axes[-1])
        ax.set(xlabel="p (probability of the correct class)", ylabel=label, yscale=scale)
    axes[0].set_ylim(0, min(curves["loss"].max(), 5.0))
    axes[2].set_ylim(1e-4, curves["abs_grad"].max() * 2)
    sns.move_legend(axes[-1], "upper left", bbox_to_anchor=(1.02, 1), frameon=False)
    fig.suptitle("Loss shapes of the relational objectives (ReSeND Fig. 4 style)")
    fig.tight_layout()
    return fig


def benchmark_bars(df: pd.DataFrame, benchmarks: list[str], metric: str = "auroc", title: str = "",
                   references: dict[str, dict[str, float]] | None = None) -> plt.Figure:
    """Grouped bars: one group per benchmark, one bar per config, mean over seeds with std error bars; the y axis
    spans [0, 1] (every bar visible, however bad), with the chance line at 0.5 for AUROC. `references`
    ({label: {benchmark: value}}, e.g. the frozen backbone's kNN) draw a line across each benchmark's group."""
    columns = [f"{metric}__{b}" for b in benchmarks if f"{metric}__{b}" in df.columns]
    long = df.melt(id_vars=["config", "seed"], value_vars=columns, var_name="benchmark", value_name=metric)
    long["benchmark"] = long["benchmark"].str.split("__", n=1).str[1]
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(columns) + 4), 4.2))
    sns.barplot(data=long, x="benchmark", y=metric, hue="config", errorbar="sd", ax=ax)
    ax.set(ylim=(0, 1), title=title or metric, xlabel="")
    if metric == "auroc":
        ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    shown = [c.split("__", 1)[1] for c in columns]
    for (label, values), style in zip((references or {}).items(), ("-", "--", ":", "-.")):
        for i, name in enumerate(shown):
            if name in values:
                ax.hlines(values[name], i - 0.45, i + 0.45, colors="black", linestyles=style, lw=1.2,
                          label=label if i == next(j for j, n in enumerate(shown) if n in values) else None)
    ax.tick_params(axis="x", rotation=20)
    ax.legend(*ax.get_legend_handles_labels(), loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False,
              title="config", fontsize="small")  # the configs, then the reference lines
    fig.tight_layout()
    return fig

"""Figures of notebooks 03 (evaluation) and 04 (R^2). Data in, matplotlib Figure out; nothing is saved here."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator
from sklearn.metrics import roc_curve

from lib.metrics import known_threshold


def roc(normality: np.ndarray, is_known: np.ndarray, title: str = "", auroc: float | None = None,
        ax: plt.Axes | None = None, legend: bool = True) -> plt.Figure:
    """ROC curve with known = positive (x: unknown accepted, y: known accepted); the 95 %-known line marked.
    Drawn on `ax` when given (a panel of `roc_grid`), else on a new figure."""
    fpr, tpr, _ = roc_curve(np.asarray(is_known, dtype=bool), np.asarray(normality))
    own = ax is None
    fig, ax = plt.subplots(figsize=(4.2, 4.0)) if own else (ax.figure, ax)
    ax.plot(fpr, tpr, lw=2, label="ROC" if auroc is None else f"AUROC {auroc:.3f}")
    ax.plot([0, 1], [0, 1], ls=":", c="grey", lw=1)
    ax.axhline(0.95, ls="--", c="tab:red", lw=1, label="95 % known accepted")
    ax.set(xlabel="unknown accepted (FPR)", ylabel="known accepted (TPR)", title=title, xlim=(0, 1), ylim=(0, 1.01))
    if legend:
        ax.legend(loc="lower right", fontsize=8)
    if own:
        fig.tight_layout()
    return fig


def normality_histogram(normality: np.ndarray, is_known: np.ndarray, title: str = "",
                        threshold: float | None = None, ax: plt.Axes | None = None, legend: bool = True) -> plt.Figure:
    """Histograms of the normality score of known vs unknown test images (density); optional FPR95 threshold.
    Drawn on `ax` when given (a panel of `normality_histogram_grid`), else on a new figure."""
    normality, is_known = np.asarray(normality), np.asarray(is_known, dtype=bool)
    bins = np.linspace(normality.min(), normality.max() + 1e-9, 31)
    own = ax is None
    fig, ax = plt.subplots(figsize=(5.0, 3.4)) if own else (ax.figure, ax)
    # stepfilled: one polygon per histogram instead of 30 bar patches (same look, far faster to draw)
    ax.hist(normality[is_known], bins=bins, alpha=0.6, density=True, histtype="stepfilled",
            label=f"known ({is_known.sum()})")
    ax.hist(normality[~is_known], bins=bins, alpha=0.6, density=True, histtype="stepfilled",
            label=f"unknown ({(~is_known).sum()})")
    if threshold is not None:
        ax.axvline(threshold, c="k", ls="--", lw=1, label="95 % known threshold")
    ax.set(xlabel="normality = max softmax of class similarities", ylabel="density", title=title)
    if legend:
        ax.legend(fontsize=8)
    if own:
        fig.tight_layout()
    return fig


def _panel_grid(n: int, sharey: bool, max_cols: int = 4):
    """(figure, the first n axes) of a grid of small panels (2.0 x 1.5 in), the unused cells hidden. The margins
    are fixed in inches (no tight_layout: it draws the whole figure once more, ~0.5 s for 14 panels)."""
    cols = min(n, max_cols)
    rows = -(-n // cols)
    w, h, gap_w, gap_h, left, right, top, bottom = 2.0, 1.5, 0.5, 0.75, 0.75, 0.15, 0.9, 0.85  # inches
    width, height = left + right + cols * w + (cols - 1) * gap_w, top + bottom + rows * h + (rows - 1) * gap_h
    fig, axes = plt.subplots(rows, cols, figsize=(width, height), sharey=sharey, squeeze=False, gridspec_kw=dict(
        left=left / width, right=1 - right / width, top=1 - top / height, bottom=bottom / height,
        wspace=gap_w / w, hspace=gap_h / h))
    axes = axes.ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, list(axes[:n])


def _finish_grid(fig: plt.Figure, axes: list, title: str, legend_labels: list[str] | None = None) -> plt.Figure:
    """Small panel text, the axis labels once for the figure, one legend for the figure (labels of the first
    panel's handles unless `legend_labels`)."""
    xlabel, ylabel = axes[0].get_xlabel(), axes[0].get_ylabel()
    for ax in axes:
        ax.title.set_fontsize(8)
        ax.tick_params(labelsize=7)
        ax.xaxis.set_major_locator(MaxNLocator(4))
        ax.set(xlabel="", ylabel="")
    height = fig.get_figheight()
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, legend_labels or labels, loc="lower center", ncol=len(handles), fontsize=8, frameon=False,
               bbox_to_anchor=(0.5, 0.0))
    fig.suptitle(title, fontsize=10, y=1 - 0.15 / height)
    fig.supxlabel(xlabel, fontsize=8, y=0.35 / height)
    fig.supylabel(ylabel, fontsize=8, x=0.1 / fig.get_figwidth())
    return fig


def roc_grid(scores: dict) -> plt.Figure:
    """One `roc` panel per benchmark (title: name and AUROC). `scores`: {name: evaluate.BenchmarkScores}."""
    fig, axes = _panel_grid(len(scores), sharey=True)
    for ax, (name, s) in zip(axes, scores.items()):
        roc(s.normality, s.is_known, f"{name}\nAUROC {s.metrics()['auroc']:.3f}", ax=ax, legend=False)
    return _finish_grid(fig, axes, "ROC per benchmark (known = positive)")


def normality_histogram_grid(scores: dict) -> plt.Figure:
    """One `normality_histogram` panel per benchmark (known vs unknown density, FPR95 threshold line; title: name
    and FPR95). `scores`: {name: evaluate.BenchmarkScores}."""
    fig, axes = _panel_grid(len(scores), sharey=False)
    for ax, (name, s) in zip(axes, scores.items()):
        normality_histogram(s.normality, s.is_known, f"{name}\nFPR95 {s.metrics()['fpr95']:.3f}",
                            known_threshold(s.normality, s.is_known), ax=ax, legend=False)
    return _finish_grid(fig, axes, "normality of known vs unknown test images per benchmark",
                        ["known", "unknown", "95 % known threshold"])


def per_class_scores(similarities: np.ndarray, test_labels: np.ndarray, num_known: int, title: str = "") -> plt.Figure:
    """Mean class score s_c (columns) of the test images of each true class (rows; rows >= num_known unknown)."""
    classes = np.unique(test_labels)
    mean = np.stack([similarities[test_labels == c].mean(0) for c in classes])
    fig, ax = plt.subplots(figsize=(0.25 * similarities.shape[1] + 3, 0.18 * len(classes) + 2))
    im = ax.imshow(mean, aspect="auto", cmap="viridis")
    ax.axhline(np.searchsorted(classes, num_known) - 0.5, c="w", lw=1.5)
    ax.set(xlabel="known class c (prototype)", ylabel="true test class (below the line: unknown)", title=title)
    fig.colorbar(im, ax=ax, label="mean similarity s_c")
    fig.tight_layout()
    return fig


def r2_vs_auroc(df: pd.DataFrame, auroc_column: str = "auroc__avg", on_plateau=(),
                highlight: tuple[str, int] | None = None) -> plt.Figure:
    """Scatter of R^2 vs AUROC, one point per config (mean over seeds, std error bars), Spearman rho in the title.

    `df` has one row per run with columns ``config``, ``r2`` and `auroc_column`. Configs named in `on_plateau`
    (still on the label-prior plateau, see `lib.summary.learned`) are drawn hollow and grey. `highlight`
    ``(config, seed)`` rings that config's mean and stars that run's own point (needs a ``seed`` column).
    """
    from scipy.stats import spearmanr

    agg = df.groupby("config").agg(r2=("r2", "mean"), r2_std=("r2", "std"), auroc=(auroc_column, "mean"),
                                   auroc_std=(auroc_column, "std"), seeds=("r2", "size")).fillna(0.0)
    plateau = agg.index.isin(list(on_plateau))
    rho, p = spearmanr(agg["r2"], agg["auroc"])
    fig, ax = plt.subplots(figsize=(5.4, 4.2))
    for stuck, part in agg.groupby(plateau):
        style = dict(mfc="none", c="grey", label="on the prior plateau") if stuck else dict(c="tab:blue", label="learned")
        ax.errorbar(part["r2"], part["auroc"], xerr=part["r2_std"], yerr=part["auroc_std"], fmt="o", capsize=3, **style)
    if plateau.any():
        ax.legend(fontsize=7)
    for name, row in agg.iterrows():
        ax.annotate(name, (row["r2"], row["auroc"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    if highlight is not None and highlight[0] in agg.index:
        config, seed = highlight
        mean = agg.loc[config]
        ax.plot(mean["r2"], mean["auroc"], "o", ms=14, mfc="none", mec="tab:red", mew=2, label=f"{config} (mean)")
        run = df[(df["config"] == config) & (df["seed"] == seed)] if "seed" in df.columns else df.iloc[:0]
        if len(run):
            ax.plot(run["r2"], run[auroc_column], "*", ms=13, c="tab:red", label=f"{config} seed {seed}")
        ax.legend(fontsize=7)
    ax.set(xlabel="R$^2$ (class separation of same/different pairs)", ylabel=f"AUROC ({auroc_column})",
           title=f"Spearman $\\rho$ = {rho:.2f} (p = {p:.2g}), {len(agg)} configs")
    fig.tight_layout()
    return fig

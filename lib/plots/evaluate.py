"""Figures of notebooks 03 (evaluation) and 04 (R^2). Data in, matplotlib Figure out; nothing is saved here."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn.metrics import roc_curve


def roc(normality: np.ndarray, is_known: np.ndarray, title: str = "", auroc: float | None = None) -> plt.Figure:
    """ROC curve with known = positive (x: unknown accepted, y: known accepted); the 95 %-known line marked."""
    fpr, tpr, _ = roc_curve(np.asarray(is_known, dtype=bool), np.asarray(normality))
    fig, ax = plt.subplots(figsize=(4.2, 4.0))
    ax.plot(fpr, tpr, lw=2, label="ROC" if auroc is None else f"AUROC {auroc:.3f}")
    ax.plot([0, 1], [0, 1], ls=":", c="grey", lw=1)
    ax.axhline(0.95, ls="--", c="tab:red", lw=1, label="95 % known accepted")
    ax.set(xlabel="unknown accepted (FPR)", ylabel="known accepted (TPR)", title=title, xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def normality_histogram(normality: np.ndarray, is_known: np.ndarray, title: str = "",
                        threshold: float | None = None) -> plt.Figure:
    """Histograms of the normality score of known vs unknown test images (density); optional FPR95 threshold."""
    normality, is_known = np.asarray(normality), np.asarray(is_known, dtype=bool)
    bins = np.linspace(normality.min(), normality.max() + 1e-9, 31)
    fig, ax = plt.subplots(figsize=(5.0, 3.4))
    ax.hist(normality[is_known], bins=bins, alpha=0.6, density=True, label=f"known ({is_known.sum()})")
    ax.hist(normality[~is_known], bins=bins, alpha=0.6, density=True, label=f"unknown ({(~is_known).sum()})")
    if threshold is not None:
        ax.axvline(threshold, c="k", ls="--", lw=1, label="95 % known threshold")
    ax.set(xlabel="normality = max softmax of class similarities", ylabel="density", title=title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


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


def r2_vs_auroc(df: pd.DataFrame, auroc_column: str = "auroc__avg") -> plt.Figure:
    """Scatter of R^2 vs AUROC, one point per config (mean over seeds, std error bars), Spearman rho in the title.

    `df` has one row per run with columns ``config``, ``r2`` and `auroc_column`.
    """
    from scipy.stats import spearmanr

    agg = df.groupby("config").agg(r2=("r2", "mean"), r2_std=("r2", "std"), auroc=(auroc_column, "mean"),
                                   auroc_std=(auroc_column, "std"), seeds=("r2", "size")).fillna(0.0)
    rho, p = spearmanr(agg["r2"], agg["auroc"])
    fig, ax = plt.subplots(figsize=(5.4, 4.2))
    ax.errorbar(agg["r2"], agg["auroc"], xerr=agg["r2_std"], yerr=agg["auroc_std"], fmt="o", capsize=3)
    for name, row in agg.iterrows():
        ax.annotate(name, (row["r2"], row["auroc"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set(xlabel="R$^2$ (class separation of same/different pairs)", ylabel=f"AUROC ({auroc_column})",
           title=f"Spearman $\\rho$ = {rho:.2f} (p = {p:.2g}), {len(agg)} configs")
    fig.tight_layout()
    return fig

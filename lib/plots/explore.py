"""Figures of notebook 07 (the study explorer) that no other notebook draws: ROC curves of several runs overlaid.
Data in, matplotlib Figure out; nothing is saved here."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from sklearn.metrics import roc_curve

from lib.metrics import novelty_metrics


def roc_overlay(curves: dict[str, tuple[np.ndarray, np.ndarray]], chosen: str, title: str = "",
                ax: plt.Axes | None = None) -> plt.Figure:
    """ROC curves (known = positive) of several runs on one benchmark: `curves` maps a label to (normality,
    is_known); the `chosen` label is drawn thick and on top, the others thin; each labelled with its AUROC."""
    own = ax is None
    fig, ax = plt.subplots(figsize=(4.6, 4.2)) if own else (ax.figure, ax)
    for label, (normality, is_known) in sorted(curves.items(), key=lambda item: item[0] == chosen):
        is_known = np.asarray(is_known, dtype=bool)
        fpr, tpr, _ = roc_curve(is_known, np.asarray(normality))
        auroc = novelty_metrics(np.asarray(normality), is_known)["auroc"]
        style = dict(lw=2.6, c="tab:red", zorder=3) if label == chosen else dict(lw=1.0, alpha=0.7)
        ax.plot(fpr, tpr, label=f"{label} {auroc:.3f}", **style)
    ax.plot([0, 1], [0, 1], ls=":", c="grey", lw=1)
    ax.axhline(0.95, ls="--", c="k", lw=0.8)
    ax.set(xlabel="unknown accepted (FPR)", ylabel="known accepted (TPR)", title=title, xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right", fontsize=6, title="AUROC", title_fontsize=7)
    if own:
        fig.tight_layout()
    return fig


def roc_comparison(by_config: dict, by_seed: dict, chosen_config: str, chosen_seed: str, benchmark: str) -> plt.Figure:
    """Two `roc_overlay` panels on `benchmark`: the chosen run against the other configs (same seed; labels =
    configs) and against the chosen config's other seeds (labels = seeds)."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(9.6, 4.4))
    roc_overlay(by_config, chosen_config, f"{benchmark}: {chosen_seed}, every config", ax=left)
    roc_overlay(by_seed, chosen_seed, f"{benchmark}: {chosen_config}, every seed", ax=right)
    fig.tight_layout()
    return fig

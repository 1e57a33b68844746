"""Training figures (notebook 02): data in, matplotlib Figure out."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd


def learning_curves(history: pd.DataFrame, smooth: int = 0) -> plt.Figure:
    """Three panels over the optimiser step: loss (raw + rolling mean), same/different accuracy, learning rate.

    `history` is `lib.train.train`'s DataFrame (columns ``step, loss, acc_same, acc_diff, lr``); `smooth` is the
    rolling window in rows (0 = about 10 % of the rows).
    """
    window = smooth or max(1, len(history) // 10)
    fig, (ax_loss, ax_acc, ax_lr) = plt.subplots(1, 3, figsize=(13, 3.4))
    ax_loss.plot(history["step"], history["loss"], color="0.7", lw=1, label="per step")
    ax_loss.plot(history["step"], history["loss"].rolling(window, min_periods=1).mean(), color="C0", lw=2,
                 label=f"mean of {window}")
    ax_loss.set(xlabel="step", ylabel="training loss", title="loss")
    ax_loss.legend(frameon=False)
    for column, name, color in (("acc_same", "same pairs", "C2"), ("acc_diff", "different pairs", "C3")):
        ax_acc.plot(history["step"], history[column].rolling(window, min_periods=1).mean(), color=color, label=name)
    ax_acc.set(xlabel="step", ylabel="accuracy", ylim=(-0.02, 1.02), title="pair accuracy (training batches)")
    ax_acc.legend(frameon=False)
    ax_lr.plot(history["step"], history["lr"], color="C4")
    ax_lr.set(xlabel="step", ylabel="learning rate", title="schedule (linear warmup)")
    fig.tight_layout()
    return fig

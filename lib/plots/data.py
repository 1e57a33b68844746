"""Figures of the data notebook (01_data): data in, matplotlib Figure out."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np


def _show(ax, image) -> None:
    ax.imshow(np.asarray(image).transpose(1, 2, 0))
    ax.set_xticks([])
    ax.set_yticks([])


def sample_grid(imageset, rows_by: str = "domain", per_row: int = 10, max_rows: int = 8, seed: int = 0,
                title: str = ""):
    """Grid of sample images, one row per domain (`rows_by="domain"`) or per class (`"class"`)."""
    rng = np.random.default_rng(seed)
    keys = imageset.domains if rows_by == "domain" else imageset.labels
    groups = list(dict.fromkeys(keys.tolist()))[:max_rows]
    fig, axes = plt.subplots(len(groups), per_row, figsize=(per_row * 0.9, len(groups) * 0.95 + 0.4), squeeze=False)
    for r, g in enumerate(groups):
        idx = np.flatnonzero(keys == g)
        idx = rng.choice(idx, min(per_row, len(idx)), replace=False)
        images = imageset.batch_uint8(np.sort(idx))
        for c in range(per_row):
            ax = axes[r, c]
            if c < len(images):
                _show(ax, images[c])
            else:
                ax.axis("off")
        name = str(g if rows_by == "domain" else imageset.class_names[g])
        name = name if name.isascii() else " ".join(f"U+{ord(ch):04X}" for ch in name[:2])  # CJK: no glyph in DejaVu
        axes[r, 0].set_ylabel(name[:14], rotation=0, ha="right", va="center", fontsize=8)
    fig.suptitle(title or f"samples by {rows_by}", fontsize=10)
    fig.tight_layout()
    return fig


def class_histogram(counts: dict, title: str = "images per class"):
    """Histogram of images per class, one hue per set: counts = {"support": array, "test": array, ...}."""
    import pandas as pd
    import seaborn as sns

    frame = pd.concat([pd.DataFrame({"images per class": np.asarray(v), "set": k}) for k, v in counts.items()])
    fig, ax = plt.subplots(figsize=(6, 3))
    sns.histplot(frame, x="images per class", hue="set", multiple="dodge", discrete=True, shrink=0.8, ax=ax)
    ax.set_title(title)
    fig.tight_layout()
    return fig

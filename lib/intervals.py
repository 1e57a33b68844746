"""Intervals that hold across backbones: the hierarchical bootstrap of a study (source backbone -> run seed -> test
images), the within-family contrasts the ICIAP paper argues from, and how much of the variance is backbone vs run seed.

A study runs every configuration on B source backbones (pretraining seeds) x S run seeds. One bootstrap draw picks
B backbones with replacement, then, within each, S run seeds with replacement; the same (backbone, seed) units serve
every configuration (a paired design: a contrast compares two objectives on the same backbones and seeds), and each
run's AUROC is its value on one resample of the test images (known and unknown images drawn apart, the same image
draw for every run of a benchmark). A statistic (a configuration's mean, a contrast, Spearman's rho over the
configurations) is computed on every draw; its interval is the 2.5 / 97.5 % percentiles. R^2 has no image level.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import rankdata

RESAMPLES = 1000  # bootstrap draws of every interval
SEED = 0  # fixed: an interval depends on the runs alone

# The steps the paper varies within one objective family (docs/METHOD.md §9): (from, to)
CONTRASTS = (("mse_c1", "mse_c10"), ("mse_c10", "mse_c50"), ("bce", "bce_focal"), ("ce", "ce_focal"),
             ("hinge_d1", "hinge_d0.1"), ("hinge_d0.1", "hinge_d0.01"))


def image_draws(is_known: np.ndarray, resamples: int = RESAMPLES, seed: int = SEED) -> np.ndarray:
    """(resamples, N) indices into one benchmark's test images: known and unknown images resampled apart (each
    draw keeps both counts), the same draws for every run scored on that test set."""
    is_known = np.asarray(is_known, dtype=bool)
    rng = np.random.default_rng(seed)
    known, unknown = np.flatnonzero(is_known), np.flatnonzero(~is_known)
    return np.concatenate([known[rng.integers(0, len(known), (resamples, len(known)))],
                           unknown[rng.integers(0, len(unknown), (resamples, len(unknown)))]], axis=1)


def auroc_replicates(normality: np.ndarray, is_known: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """AUROC (known = positive) on each row of `draws` (`image_draws`): the Mann-Whitney statistic of the
    resampled scores, ties counted one half, as sklearn's roc_auc_score computes it. Shape (resamples,)."""
    scores = np.asarray(normality, dtype=np.float64)[draws]
    known = np.asarray(is_known, dtype=bool)[draws]
    ranks = rankdata(scores, axis=1)
    n_known = known.sum(1)
    n_unknown = known.shape[1] - n_known
    return ((ranks * known).sum(1) - n_known * (n_known + 1) / 2) / (n_known * n_unknown)


def unit_draws(backbones: int, seeds: int, resamples: int = RESAMPLES, seed: int = SEED) -> np.ndarray:
    """(resamples, backbones * seeds) indices of (backbone, seed) units, unit = b * seeds + s: per draw, backbones
    with replacement, then within each drawn backbone its seeds with replacement."""
    rng = np.random.default_rng(seed)
    b = rng.integers(0, backbones, (resamples, backbones))
    s = rng.integers(0, seeds, (resamples, backbones, seeds))
    return (b[:, :, None] * seeds + s).reshape(resamples, backbones * seeds)


def drawn_means(values: np.ndarray, units: np.ndarray) -> np.ndarray:
    """Per-configuration means over the drawn units: `values` (C, U) point values or (R, C, U) per-draw values (a
    run's image-resampled AUROC in draw r), NaN for a missing run; `units` (R, k) from `unit_draws`. -> (R, C)."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 2:
        values = np.broadcast_to(values, (len(units), *values.shape))
    picked = np.take_along_axis(values, np.broadcast_to(units[:, None, :], (len(units), values.shape[1],
                                                                               units.shape[1])), axis=2)
    with np.errstate(invalid="ignore"):
        return np.nanmean(picked, axis=2)


def spearman_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman's rho of x[r] and y[r] for every row r (ranks with ties averaged); NaN where a row is constant."""
    rx, ry = rankdata(x, axis=1), rankdata(y, axis=1)
    rx -= rx.mean(1, keepdims=True)
    ry -= ry.mean(1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (rx * ry).sum(1) / np.sqrt((rx ** 2).sum(1) * (ry ** 2).sum(1))


def percentile_interval(samples: np.ndarray) -> tuple[float, float]:
    samples = np.asarray(samples, dtype=np.float64)
    samples = samples[np.isfinite(samples)]
    if not len(samples):
        return float("nan"), float("nan")
    lo, hi = np.percentile(samples, [2.5, 97.5])
    return float(lo), float(hi)


def variance_components(values: np.ndarray) -> tuple[float, float]:
    """(backbone, run seed) variance components of one configuration's metric, `values` (B, S) with B, S >= 2:
    the one-way random-effects ANOVA estimates, within = mean over backbones of the seeds' variance (ddof 1),
    between = variance of the backbone means (ddof 1) - within / S, clipped at 0."""
    values = np.asarray(values, dtype=np.float64)
    within = float(np.mean(np.var(values, axis=1, ddof=1)))
    between = float(np.var(values.mean(1), ddof=1) - within / values.shape[1])
    return max(between, 0.0), within


def unit_matrix(df: pd.DataFrame, column: str, configs: list[str]) -> tuple[np.ndarray, list[int], list[int]]:
    """(C, B * S) values of `column` per configuration and (backbone, seed) unit (NaN where a run is missing),
    with the sorted backbones and seeds of the per-run table `df` (columns config, backbone, seed)."""
    backbones, seeds = sorted(df["backbone"].unique()), sorted(df["seed"].unique())
    out = np.full((len(configs), len(backbones) * len(seeds)), np.nan)
    index = {(b, s): i * len(seeds) + j for i, b in enumerate(backbones) for j, s in enumerate(seeds)}
    row = {c: i for i, c in enumerate(configs)}
    for _, r in df.iterrows():
        if r["config"] in row and column in r and pd.notna(r[column]):
            out[row[r["config"]], index[(r["backbone"], r["seed"])]] = r[column]
    return out, backbones, seeds

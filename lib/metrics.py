"""Novelty metrics of scores and labels (nothing else): AUROC, FPR95, AUPR, closed-set accuracy, the AUROC's bootstrap
SE and the per-benchmark averages. Used by ReSeND's evaluation, the comparison methods, the reference rows and plots.

Conventions:
- Known test images are the *positive* class of every metric except ``aupr_out`` and ``fpr95_ood``.
- ``normality`` is higher for images that look like a known class.
- ``fpr95`` takes known = positive, as ReSeND/ODIN report it: the fraction of UNKNOWN images accepted when the
  threshold accepts 95 % of the KNOWN images, with our exact threshold rule (`fpr_at_95_known`: the
  ceil(0.95 n_known)-th largest known score, accept >= it). The ReSeND/ICIAP code instead takes the ROC point whose
  known recall is nearest 0.95 (`fpr95_reference`, not recorded): the two differ by up to ~1/n_known in known
  recall. OpenOOD / pytorch-ood report the other role assignment (OOD = positive, FPR of ID at 95 % TPR of OOD):
  that one is recorded apart as ``fpr95_ood`` (`fpr_at_95_unknown`), never under the name ``fpr95``.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata
from sklearn.metrics import average_precision_score, roc_auc_score

METRICS = ("auroc", "fpr95", "fpr95_ood", "aupr_in", "aupr_out", "accuracy")


def fpr_at_95_known(normality: np.ndarray, is_known: np.ndarray) -> float:
    """FPR95 with known = positive: fraction of unknown images accepted when at least 95 % of the known images are.

    Exact rule (ties included): sort the known scores in decreasing order and let ``k = ceil(0.95 * n_known)``;
    the threshold ``t`` is the k-th largest known score; an image is *accepted* when its score is ``>= t``
    (so with ties at ``t`` more than 95 % of the known images may be accepted, never fewer);
    ``fpr95 = mean(unknown_scores >= t)``. This is our rule, not the reference code's: that one takes the ROC
    point whose known recall is nearest 0.95 (`fpr95_reference`), which may accept fewer than 95 % of the known
    images (one fewer known image when ceil(0.95 n) / n is farther from 0.95 than the point below it).
    """
    normality = np.asarray(normality, dtype=np.float64)
    is_known = np.asarray(is_known, dtype=bool)
    return float(np.mean(normality[~is_known] >= known_threshold(normality, is_known)))


def fpr_at_95_unknown(normality: np.ndarray, is_known: np.ndarray) -> float:
    """FPR95 as OpenOOD and pytorch-ood (``FPR95TPR``) define it, unknown = positive: the fraction of KNOWN images
    flagged as unknown when at least 95 % of the UNKNOWN images are flagged, outlier score = -normality.

    The same exact rule as `fpr_at_95_known` with the roles swapped: ``k = ceil(0.95 * n_unknown)``, the
    threshold ``u`` is the k-th lowest unknown normality, an image is flagged when its normality is ``<= u``
    (ties at ``u`` flagged), ``fpr95_ood = mean(known_scores <= u)`` (pytorch-ood: the first ROC point, scores
    decreasing, whose TPR reaches 0.95).
    """
    normality = np.asarray(normality, dtype=np.float64)
    is_known = np.asarray(is_known, dtype=bool)
    return fpr_at_95_known(-normality, ~is_known)


def fpr95_reference(normality: np.ndarray, is_known: np.ndarray) -> float:
    """FPR95 as the ReSeND/ICIAP reference code computes it (``fpr_and_fdr_at_recall``; for comparison, not in
    METRICS): over the ROC points (threshold t = each distinct score down to the lowest known score, accept >= t)
    take the one whose known recall is nearest 0.95, the lowest threshold among equally near ones, and return the
    fraction of unknown images accepted there. Distances are float64 as in the reference, so an exact tie can
    resolve by rounding (n_known = 10: |0.9 - 0.95| < |1.0 - 0.95| in float, recall 0.9 wins)."""
    normality = np.asarray(normality, dtype=np.float64)
    is_known = np.asarray(is_known, dtype=bool)
    known = np.sort(normality[is_known])
    thresholds = np.unique(normality[normality >= known[0]])  # increasing; the reference stops at full recall
    recall = (len(known) - np.searchsorted(known, thresholds, side="left")) / len(known)
    t = thresholds[np.argmin(np.abs(recall - 0.95))]  # argmin = first = lowest threshold among ties
    return float(np.mean(normality[~is_known] >= t))


def known_threshold(normality: np.ndarray, is_known: np.ndarray, fraction_pct: int = 95) -> float:
    """The k-th largest known score, k = ceil(fraction_pct / 100 * n_known): accepting scores >= it accepts at
    least `fraction_pct` % of the known images (the FPR95 threshold)."""
    known = np.sort(np.asarray(normality, dtype=np.float64)[np.asarray(is_known, dtype=bool)])[::-1]
    k = max(1, (fraction_pct * len(known) + 99) // 100)  # integer ceil: no float rounding surprises
    return float(known[k - 1])


def novelty_metrics(normality, is_known, predictions=None, labels=None) -> dict[str, float]:
    """Metrics of one benchmark, plain floats in [0, 1].

    - ``auroc``: ROC AUC with known = positive, score = normality (ties count 1/2, sklearn).
    - ``fpr95``: see `fpr_at_95_known` (lower is better).
    - ``fpr95_ood``: the OpenOOD / pytorch-ood FPR95 (unknown = positive), see `fpr_at_95_unknown` (lower is better).
    - ``aupr_in``: average precision with known = positive, score = normality.
    - ``aupr_out``: average precision with unknown = positive, score = -normality.
    - ``accuracy``: closed-set accuracy of ``predictions`` on the known images (NaN when not given).
    """
    normality = np.asarray(normality, dtype=np.float64)
    is_known = np.asarray(is_known, dtype=bool)
    if normality.shape != is_known.shape or normality.ndim != 1:
        raise ValueError(f"normality {normality.shape} and is_known {is_known.shape} must be 1-d of equal length")
    if not is_known.any():
        raise ValueError("no known test images: AUROC/FPR95 are undefined; check the benchmark's num_known and labels")
    if is_known.all():
        raise ValueError("no unknown test images: AUROC/FPR95 are undefined; the benchmark's test set must hold "
                         "classes >= num_known")
    if np.isnan(normality).any():
        raise ValueError("normality contains NaN: the model produced non-finite similarities")
    out = {
        "auroc": float(roc_auc_score(is_known, normality)),
        "fpr95": fpr_at_95_known(normality, is_known),
        "fpr95_ood": fpr_at_95_unknown(normality, is_known),
        "aupr_in": float(average_precision_score(is_known, normality)),
        "aupr_out": float(average_precision_score(~is_known, -normality)),
        "accuracy": float("nan"),
    }
    if predictions is not None:
        if labels is None:
            raise ValueError("accuracy needs the test labels together with the predictions")
        predictions, labels = np.asarray(predictions), np.asarray(labels)
        out["accuracy"] = float(np.mean(predictions[is_known] == labels[is_known]))
    return out


AUROC_SE_RESAMPLES = 200  # bootstrap resamples of auroc_se
AUROC_SE_SEED = 0  # fixed: the SE of a run never depends on the run seed


def auroc_bootstrap_se(normality, is_known, resamples: int = AUROC_SE_RESAMPLES, seed: int = AUROC_SE_SEED) -> float:
    """Bootstrap standard error of the AUROC over test images (plain float, AUROC units).

    Stratified: each resample draws n_known known and n_unknown unknown images with replacement, so every
    resample keeps the benchmark's known/unknown counts; SE = std (ddof=1) of the resampled AUROCs (Mann-Whitney
    with average ranks, ties count 1/2 as in `novelty_metrics`). Images are resampled independently: images of
    one class are correlated, so this is the test-image part of the uncertainty, not a between-class one.
    """
    normality = np.asarray(normality, dtype=np.float64)
    is_known = np.asarray(is_known, dtype=bool)
    known, unknown = normality[is_known], normality[~is_known]
    n1, n0 = len(known), len(unknown)
    if n1 == 0 or n0 == 0:
        raise ValueError("auroc_se needs known and unknown test images")
    rng = np.random.default_rng(seed)
    draws = np.concatenate([known[rng.integers(0, n1, (resamples, n1))],
                            unknown[rng.integers(0, n0, (resamples, n0))]], axis=1)
    ranks = rankdata(draws, axis=1)[:, :n1].sum(1)
    aurocs = (ranks - n1 * (n1 + 1) / 2) / (n1 * n0)
    return float(np.std(aurocs, ddof=1))


def average_metrics(per_benchmark: dict[str, dict[str, float]], kinds: dict[str, str]) -> dict[str, float]:
    """Flat keys ``<metric>__<benchmark>`` plus ``<metric>__<kind>_avg`` (intra / cross) and ``<metric>__avg``."""
    flat: dict[str, float] = {}
    for name, metrics in per_benchmark.items():
        for key, value in metrics.items():
            flat[f"{key}__{name}"] = value
    groups = {"avg": list(per_benchmark)}
    for kind in sorted(set(kinds.values())):
        groups[f"{kind}_avg"] = [n for n in per_benchmark if kinds[n] == kind]
    for group, names in groups.items():
        for key in METRICS:
            flat[f"{key}__{group}"] = float(np.mean([per_benchmark[n][key] for n in names]))
    return flat

"""Class separation R^2 of the relational representations (docs/METHOD.md §8; Kornblith et al., NeurIPS 2021).

With cosine distance d(a, b) = 1 - cos(a, b) and D_gh = mean over all a in g, b in h of d(a, b):

    R^2 = 1 - mean_g D_gg / mean_{g,h} D_gh        (groups g, h in {same, different})

i.e. 1 - (D_same,same + D_diff,diff) / 2 / (mean of the four D_gh). The means include the diagonal a = b
(d = 0 there), as in Kornblith et al.'s definition, whose within-class mean divides by N_k^2.

Exact and O(N D): sum_{a in g} sum_{b in h} cos(a, b) = (sum_g a^) . (sum_h b^) with a^ = a / |a|, so only the
per-group sums of the normalised vectors are needed; they are accumulated in blocks of `block` rows.
"""

from __future__ import annotations

import numpy as np
import torch

from lib import DIFFERENT, SAME
from lib.config import Settings
from lib.evaluate import relate_pairs
from lib.features import IMAGE_BATCH, FeatureMemo, model_device


def group_mean_distances(reprs: torch.Tensor, labels: torch.Tensor, block: int = 4096) -> torch.Tensor:
    """(2, 2) float64 matrix of D_gh for groups 0 and 1 (mean cosine distance, diagonal a = b included)."""
    if reprs.ndim != 2 or labels.shape != reprs.shape[:1]:
        raise ValueError(f"reprs must be (N, D) and labels (N,), got {tuple(reprs.shape)} and {tuple(labels.shape)}")
    labels = labels.to(reprs.device).long()
    sums = torch.zeros(2, reprs.shape[1], dtype=torch.float64, device=reprs.device)
    counts = torch.zeros(2, dtype=torch.float64, device=reprs.device)
    for start in range(0, len(reprs), block):
        unit = torch.nn.functional.normalize(reprs[start : start + block].double(), dim=1)
        lab = labels[start : start + block]
        if ((lab != 0) & (lab != 1)).any():
            raise ValueError("labels must be 0 (different) or 1 (same)")
        sums.index_add_(0, lab, unit)
        counts += torch.bincount(lab, minlength=2).double()
    if (counts == 0).any():
        raise ValueError(f"R^2 needs both groups; got {int(counts[0])} different and {int(counts[1])} same pairs")
    mean_cos = (sums @ sums.T) / counts[:, None] / counts[None, :]
    return 1.0 - mean_cos


def r_squared(reprs: torch.Tensor, labels: torch.Tensor, block: int = 4096) -> float:
    """R^2 in [0, 1] (up to rounding) of representations (N, D) grouped by labels (N,) in {0, 1}."""
    d = group_mean_distances(reprs, labels, block)
    total = d.mean()
    if total <= 0:
        raise ValueError("all representations point the same way: R^2 is undefined (zero total distance)")
    return float(1.0 - torch.diagonal(d).mean() / total)


@torch.inference_mode()
def relational_representations(model, source, triples: np.ndarray, settings: Settings):
    """(repr (P, H) float32, labels (P,)) of the pairs ``triples[:, :2]`` of `source`, eval transform.

    Features of every distinct image are computed once (batched), then pairs are related in batches.
    """
    device = model_device(model)
    images, inverse = np.unique(triples[:, :2].reshape(-1), return_inverse=True)
    memo = FeatureMemo.for_run(model, settings)  # a frozen backbone: the study's runs share these on disk
    feats = memo.features(model, source.subset(images), settings.image_size,
                          min(settings.eval_batch_size, IMAGE_BATCH), device, settings.num_workers,
                          desc="R² features")
    memo.save()
    pos = torch.as_tensor(inverse.reshape(-1, 2), device=device)
    reprs = relate_pairs(model, feats, pos, settings.eval_batch_size, settings.cpu_amp, return_repr=True,
                          desc="R² pairs")
    return reprs, torch.as_tensor(triples[:, 2], dtype=torch.long)


R2_ANCHORS_PER_CLASS = 2  # the reference r2.py: 2 anchors per class ...
R2_DIFFERENT_PER_ANCHOR = 5  # ... each with 1 same pair and 5 different pairs (1 : 5, not training's 1 : 20)
R2_PAIRS_PER_CLASS = R2_ANCHORS_PER_CLASS * (1 + R2_DIFFERENT_PER_ANCHOR)


def sample_triples(labels, n_pairs: int, settings: Settings) -> np.ndarray:
    """(P, 3) int64 rows (image a, image b, label) built as the reference r2.py does (docs/METHOD.md §8).

    ceil(n_pairs / 12) classes (drawn with ``settings.seed``; all classes with >= 2 images when there are fewer)
    give 2 anchors each; an anchor has 1 same pair (another image of its class) then 5 different pairs (each an
    image of a uniformly drawn other class). P = 12 x the classes used: >= n_pairs, or fewer when the source
    runs out of classes (the caller reports len(result)).
    """
    if n_pairs < 1:
        raise ValueError(f"n_pairs={n_pairs}: R^2 needs at least one class of pairs (12)")
    labels = np.asarray(labels)
    classes, counts = np.unique(labels, return_counts=True)
    eligible = classes[counts >= 2]  # a same pair needs two distinct images
    if len(eligible) == 0 or len(classes) < 2:
        raise ValueError(f"R^2 pairs need a class with >= 2 images and >= 2 classes; got counts {counts.tolist()}")
    rng = np.random.default_rng(settings.seed)
    n_classes = min(-(-n_pairs // R2_PAIRS_PER_CLASS), len(eligible))
    members = {c: np.flatnonzero(labels == c) for c in classes}
    rows = []
    for c in np.sort(rng.choice(eligible, n_classes, replace=False)):
        others = classes[classes != c]
        for anchor in rng.choice(members[c], R2_ANCHORS_PER_CLASS, replace=False):
            rows.append((anchor, rng.choice(members[c][members[c] != anchor]), SAME))
            for neg_class in rng.choice(others, R2_DIFFERENT_PER_ANCHOR):
                rows.append((anchor, rng.choice(members[neg_class]), DIFFERENT))
    return np.asarray(rows, dtype=np.int64)


def relational_r2(model, source, settings: Settings, n_pairs: int | None = None) -> dict[str, float]:
    """R^2 of ~n_pairs pairs of `source` built as the reference r2.py does (`sample_triples`), eval transform.

    Returns ``{"r2", "n_pairs", "n_same", "n_different", "n_pairs_requested", "n_classes"}`` (plain floats):
    n_pairs is what was actually built (fewer than requested when the source has too few classes).
    """
    n_pairs = settings.r2_pairs if n_pairs is None else n_pairs
    triples = sample_triples(source.labels, n_pairs, settings)
    reprs, labels = relational_representations(model, source, triples, settings)
    n_same = int((labels == 1).sum())
    return {"r2": r_squared(reprs, labels), "n_pairs": float(len(labels)), "n_same": float(n_same),
            "n_different": float(len(labels) - n_same), "n_pairs_requested": float(n_pairs),
            "n_classes": float(len(triples) // R2_PAIRS_PER_CLASS)}

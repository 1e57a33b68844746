"""Held-out pair AUROC: does the trained model tell same from different on source images it never trained on?

The training-time check of a relational run (the study compares objectives only once every one of them has
left the label-prior plateau, docs/METHOD.md §5), in both regimes.

* Split (`split_source`): in each class, a fixed ~10 % of its images (``round(HELD_OUT_FRACTION * n)``, at least
  2 so a held-out positive exists) is held out, chosen by a permutation from ``SPLIT_SEED`` — fixed, never the
  run seed. A class with fewer than 4 images keeps all of them for training (2 must stay on each side). The
  held-out images are never trained on, in either regime (02_train passes only the rest to `train.train`).
* Pairs (`held_out_pairs`): drawn 1 : k like training by the reference sampler (`lib.pairs`, ``per_pair``,
  class-balanced) over the held-out images only, one anchor per held-out image (plus the balancing anchors),
  seed ``PAIR_SEED``.
* Scores: the objective's ``similarity`` (higher = more similar), eval transform; ``pair_auroc`` = ROC AUC with
  same = positive (sklearn), ``pair_acc_same`` / ``pair_acc_diff`` = accuracy of ``predicts_same`` on the same
  / different pairs.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from lib import SAME, pairs
from lib.evaluate import relate_pairs
from lib.features import IMAGE_BATCH, extract_features, model_device

HELD_OUT_FRACTION = 0.1
SPLIT_SEED = 20231
PAIR_SEED = 20232


def held_out_mask(labels) -> np.ndarray:
    """Boolean mask over `labels`: True = held out (see the module docstring for the rule)."""
    labels = np.asarray(labels)
    mask = np.zeros(len(labels), dtype=bool)
    rng = np.random.default_rng(SPLIT_SEED)
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        if len(members) < 4:
            continue
        n = min(len(members) - 2, max(2, round(HELD_OUT_FRACTION * len(members))))
        mask[members[rng.permutation(len(members))[:n]]] = True
    return mask


def split_source(source):
    """(training set, held-out set) of a source ImageSet: subsets, labels unchanged."""
    mask = held_out_mask(source.labels)
    if not mask.any():
        raise ValueError("no class of the source set has 4 images or more: nothing can be held out for the pair AUROC")
    return source.subset(np.flatnonzero(~mask)), source.subset(np.flatnonzero(mask))


def held_out_pairs(labels, neg_to_pos_ratio: int) -> np.ndarray:
    """(P, 3) int64 rows (image a, image b, label) over positions in `labels`: one epoch of the class-balanced
    anchor list, each anchor with 1 positive + k negatives, fixed seed."""
    sampler = pairs.PairSampler(labels, neg_to_pos_ratio=neg_to_pos_ratio, class_balance=True, mode="per_pair",
                                seed=PAIR_SEED)
    n_anchors = int(sampler.counts.max()) * len(sampler.classes)  # one epoch of the balanced anchor list
    batch = sampler.sample(n_anchors)
    return np.stack([batch.images[batch.a], batch.images[batch.b], batch.label], 1).astype(np.int64)


@torch.inference_mode()
def pair_metrics(model, objective, held_out, settings, features: torch.Tensor | None = None) -> dict[str, float]:
    """``pair_auroc``, ``pair_acc_same``, ``pair_acc_diff`` (plain floats in [0, 1]) and ``pair_count`` of the
    held-out pairs, scored by `model` in eval mode. `features` (N, 512) of `held_out` (eval transform) skips the
    backbone; by default they are extracted with the model's (trained or frozen) backbone."""
    model.eval()
    device = model_device(model)
    if features is None:
        features = extract_features(model, held_out, settings.image_size, IMAGE_BATCH, device, settings.num_workers)
    features = features.to(device)
    triples = held_out_pairs(held_out.labels, settings.neg_to_pos_ratio)
    pos = torch.as_tensor(triples[:, :2], device=device)
    output = relate_pairs(model, features, pos, settings.eval_batch_size, settings.cpu_amp)
    same = torch.as_tensor(triples[:, 2] == SAME, device=device)
    said_same = objective.predicts_same(output)
    score = objective.similarity(output).cpu().numpy()
    return {"pair_auroc": float(roc_auc_score(same.cpu().numpy(), score)),
            "pair_acc_same": float((said_same & same).sum() / same.sum()),
            "pair_acc_diff": float((~said_same & ~same).sum() / (~same).sum()),
            "pair_count": float(len(triples))}

"""ReweightOOD (CVPRW 2024): reweighted contrastive learning, Mahalanobis score (SPEC 10).

z = L2-normalised projections of 2 augmented views per image, s_ij = z_i . z_j (cosine).
w+ = sigmoid(1 - 2 s) (hard positives, low s, weigh more), w- = sigmoid(5 s - 4) (hard negatives, high s), detached.
L = mean over anchors i of ELU( LSE_{j in P(i)}(-w+_ij s_ij / tau) + LSE_{j in N(i)}(w-_ij s_ij / tau) ), tau = 0.1,
P(i) = same class without i, N(i) = other classes; anchors lacking either set are skipped.
Score: Mahalanobis (class means, tied covariance) on L2-normalised backbone features; normality = -min_c d_c^2.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lib.baselines.classifier import FEATURE_DIM, Batch, Classifier, TrainContext
from lib.baselines.posthoc import fit_mahalanobis

TAU = 0.1
PROJECTION_DIM = 128


def reweight_weights(s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(w+, w-) = (sigmoid(1 - 2s), sigmoid(5s - 4)), detached."""
    s = s.detach()
    return torch.sigmoid(1.0 - 2.0 * s), torch.sigmoid(5.0 * s - 4.0)


def reweight_contrastive_loss(z: torch.Tensor, labels: torch.Tensor, tau: float = TAU) -> torch.Tensor:
    """The ReweightOOD loss of L2-normalised projections z (N,d) with labels (N,)."""
    s = z.float() @ z.float().T
    w_pos, w_neg = reweight_weights(s)
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=z.device)
    pos, neg = same & ~eye, ~same
    ninf = torch.finfo(s.dtype).min
    lse_pos = torch.logsumexp((-w_pos * s / tau).masked_fill(~pos, ninf), dim=1)
    lse_neg = torch.logsumexp((w_neg * s / tau).masked_fill(~neg, ninf), dim=1)
    valid = pos.any(dim=1) & neg.any(dim=1)
    if not valid.any():
        return s.new_zeros(()) * z.sum()
    return F.elu(lse_pos + lse_neg)[valid].mean()


def add_projection(model: Classifier) -> nn.Module:
    head = nn.Sequential(nn.Linear(FEATURE_DIM, FEATURE_DIM), nn.ReLU(inplace=True), nn.Linear(FEATURE_DIM, PROJECTION_DIM))
    model.heads["projection"] = head
    return head


def reweightood_loss(tau: float = TAU) -> Callable[[Classifier, TrainContext], Callable[[Batch], torch.Tensor]]:
    """Loss factory for `classifier.train_classifier(..., views=2)`."""

    def make(model: Classifier, ctx: TrainContext) -> Callable[[Batch], torch.Tensor]:
        head = add_projection(model).to(ctx.device)

        def loss(batch: Batch) -> torch.Tensor:
            z = F.normalize(head(model.features(torch.cat([batch.x, batch.x2]))).float(), dim=1)
            return reweight_contrastive_loss(z, torch.cat([batch.y, batch.y]), tau)

        return loss

    return make


def mahalanobis_normality(support_features: torch.Tensor, support_labels, test_features: torch.Tensor
                          ) -> tuple[np.ndarray, np.ndarray]:
    """(normality, predictions): -min_c (z - mu_c)^T Sigma^-1 (z - mu_c) and its argmin c, on L2-normalised
    features, Sigma tied over classes (divided by N)."""
    detector = fit_mahalanobis(F.normalize(support_features.double(), dim=1),
                               torch.as_tensor(np.asarray(support_labels), dtype=torch.long))
    log_density = detector._calc_gaussian_scores(F.normalize(test_features.double(), dim=1))  # -0.5 d_c^2, (N,K)
    return (2.0 * log_density.max(dim=1).values).numpy(), log_density.argmax(dim=1).numpy()

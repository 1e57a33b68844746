"""ReweightOOD (CVPRW 2024): reweighted contrastive learning, Mahalanobis on normalised features (docs/METHOD.md §10).

As the official code (sudarshanregmi/ReweightOOD, OpenOOD/openood/trainers/reweightood_trainer.py, CIDER network
and preprocessor): z = L2-normalised projections (MLP head) of 2 strongly augmented views per image, s_ij = z_i.z_j.
Over the pairs i < j of the whole batch (each pair once): positives P = same label, negatives N = other labels;
w+ = sigmoid(1 - 2 s) (hard positives, low s, weigh more), w- = sigmoid(5 s - 4) (hard negatives), detached;
L = ELU( LSE_{(i,j) in N}(w- s / tau) + LSE_{(i,j) in P}(-w+ s / tau) ), ONE value per batch, tau = 0.1.
Augmentation: CIDER's (`cider_transform`). Recipe: the official CIFAR one is 100 epochs with 10 of linear warm-up
(lr .1, batch 512); here the support-set recipe with the same warm-up fraction (`WARMUP`, the first 10 % of
training, lib.supervised.scheduled_lr).
Score: every official test script passes ``--postprocessor reweightood``: Mahalanobis on the L2-normalised backbone
features — the support classes' means and ONE tied empirical covariance of the normalised support features
(pseudo-inverse), normality = minus the squared distance to the nearest class mean, prediction = that class
(`mahalanobis_normality`, i.e. `posthoc.mahalanobis_scores(normalise=True)`). CIDER's KNN score on the same
features (k = `posthoc.knn_k`) is kept as a labelled extra method, ``reweightood_knn`` (`cider_normality`).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lib.augment import reference_transform
from lib.baselines.posthoc import knn_normality, mahalanobis_scores, nearest_support_class
from lib.config import Settings
from lib.supervised import FEATURE_DIM, Batch, Classifier, Recipe, TrainContext, support_recipe

TAU = 0.1
PROJECTION_DIM = 128
WARMUP = 0.1  # the official 10 warm-up epochs of 100: a linear warm-up over the first 10 % of training
M_POS, C_POS, M_NEG, C_NEG = 2.0, 1.0, 5.0, 4.0  # official m_w, c_w, m_b, c_b: w+ = sigma(-(2s - 1)), w- = sigma(5s - 4)


def cider_transform(image_size: int, hflip: bool = True):
    """CIDER's training augmentation (non-ImageNet branch), torchvision v2 on uint8 (3,H,W): RandomResizedCrop
    scale .2-1, horizontal flip (left out with ``hflip=False``, see data.augmentation), ColorJitter(.4,.4,.4,.1)
    with p .8, grayscale p .2, ImageNet normalisation."""
    return reference_transform(image_size, hflip, scale=(0.2, 1.0), jitter=0.4, jitter_p=0.8, grayscale=0.2)


def recipe(settings: Settings) -> Recipe:
    """The support-set recipe with 2 CIDER-augmented views per image and the official warm-up (`WARMUP`)."""
    return support_recipe(settings, augment=cider_transform, views=2, warmup=WARMUP)


def reweight_weights(s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(w+, w-) = (sigmoid(1 - 2s), sigmoid(5s - 4)), detached."""
    s = s.detach()
    return torch.sigmoid(-(M_POS * s - C_POS)), torch.sigmoid(M_NEG * s - C_NEG)


def reweight_contrastive_loss(z: torch.Tensor, labels: torch.Tensor, tau: float = TAU) -> torch.Tensor:
    """The ReweightOOD loss of L2-normalised projections z (N,d) with labels (N,): one ELU of the batch's two LSEs.

    A batch without negative pairs (one class) has LSE = -inf there and gives ELU(-inf) = -1 with zero gradient, as
    the official code does.
    """
    s = z.float() @ z.float().T
    same = labels[:, None] == labels[None, :]
    upper = torch.ones_like(same).triu(diagonal=1)
    s_pos, s_neg = s[same & upper], s[~same & upper]
    w_pos, w_neg = reweight_weights(s_pos)[0], reweight_weights(s_neg)[1]
    return F.elu(torch.logsumexp(w_neg * s_neg / tau, dim=0) + torch.logsumexp(-w_pos * s_pos / tau, dim=0))


def add_projection(model: Classifier) -> nn.Module:
    head = nn.Sequential(nn.Linear(FEATURE_DIM, FEATURE_DIM), nn.ReLU(inplace=True), nn.Linear(FEATURE_DIM, PROJECTION_DIM))
    model.heads["projection"] = head
    return head


def reweightood_loss(tau: float = TAU) -> Callable[[Classifier, TrainContext], Callable[[Batch], torch.Tensor]]:
    """Loss factory for `lib.supervised.train_classifier` with a 2-view recipe."""

    def make(model: Classifier, ctx: TrainContext) -> Callable[[Batch], torch.Tensor]:
        head = add_projection(model).to(ctx.device)

        def loss(batch: Batch) -> torch.Tensor:
            if batch.x2 is None:
                raise ValueError("ReweightOOD needs 2 views per image: train it with reweightood.recipe (views=2)")
            z = F.normalize(head(model.features(torch.cat([batch.x, batch.x2]))).float(), dim=1)
            return reweight_contrastive_loss(z, torch.cat([batch.y, batch.y]), tau)

        return loss

    return make


def leave_one_out_accuracy(support_features: torch.Tensor, support_labels) -> float:
    """Fraction of support images whose nearest OTHER support image (normalised features) has their class: the
    training criterion of a method with no classifier head (the classes are apart where its score looks)."""
    z = F.normalize(support_features.double(), dim=1)
    cosine = (z @ z.T).fill_diagonal_(-torch.inf)
    labels = np.asarray(support_labels)
    return float((labels[cosine.argmax(dim=1).numpy()] == labels).mean())


def mahalanobis_normality(support_features: torch.Tensor, support_labels, test_features: torch.Tensor
                          ) -> tuple[np.ndarray, np.ndarray]:
    """(normality, predictions): the official ReweightOOD postprocessor, minus the squared Mahalanobis distance of
    the L2-normalised test feature to the nearest class mean of the normalised support features (one tied
    covariance), and that class."""
    return mahalanobis_scores(support_features, support_labels, test_features, normalise=True)


def cider_normality(support_features: torch.Tensor, support_labels, test_features: torch.Tensor
                    ) -> tuple[np.ndarray, np.ndarray]:
    """(normality, predictions): minus the k-th nearest-neighbour distance on normalised features (CIDER's score, not
    ReweightOOD's official one: the extra ``reweightood_knn`` method), and the nearest support image's class."""
    normality = knn_normality(support_features, support_labels, test_features)
    return normality, nearest_support_class(support_features, support_labels, test_features)

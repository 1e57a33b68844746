"""Post-hoc detectors on the support-set classifier, through pytorch-ood (docs/METHOD.md §10).

pytorch-ood's ``predict`` returns OUTLIER scores (higher = more OOD); this project's convention is
normality (higher = more known), so every score here is ``normality = -outlier_score``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from pytorch_ood.detector import KNN, ODIN, EnergyBased, Mahalanobis, MaxLogit, MaxSoftmax

from lib import data
from lib.config import Settings
from lib.device import resolve_device
from lib.supervised import Classifier, load_images

IMAGENET_STD = [0.229, 0.224, 0.225]  # ODIN's input step is taken in pixel units, so undo the normalisation
ODIN_EPS = 0.0014  # pytorch-ood / paper default step
ODIN_TEMPERATURE = 1000.0
# KNN's k relative to the training-set size, as its paper sets it (Sun et al. 2022: k = 50 for CIFAR-10's 50,000
# images, 1000 for ImageNet's 1.28M, i.e. ~0.1 %): k = max(1, round(KNN_FRACTION * N)) -> k = 1 for the support sets
# of 175-325 images here (k = 50 on 5-13 images per class reaches into other classes: AUROC .34 on glyph_printed)
KNN_FRACTION = 50 / 50_000

LOGIT_DETECTORS = {"msp": MaxSoftmax.score, "maxlogit": MaxLogit.score, "energy": EnergyBased.score}
POSTHOC = ("msp", "maxlogit", "energy", "odin", "mahalanobis", "knn")


def normality_from_outlier(outlier_score: torch.Tensor) -> np.ndarray:
    """Our convention: higher = more known. pytorch-ood's: higher = more OOD."""
    return (-outlier_score.detach().double().cpu()).numpy()


def fit_mahalanobis(features: torch.Tensor, labels: torch.Tensor) -> Mahalanobis:
    """pytorch-ood Mahalanobis (class means, one tied covariance) with the covariance divided by N and its
    pseudo-inverse as the precision.

    pytorch-ood sums the centred outer products without dividing by N; dividing makes the distance the
    textbook one (ranking, hence AUROC, is unchanged). A support set smaller than the feature dimension
    (175-325 images, 512-d) makes the covariance singular: pytorch-ood inverts ``S + 1e-6 I``, whose ridge then
    dominates hundreds of directions; the pseudo-inverse (sklearn's EmpiricalCovariance, Lee et al.'s code) uses
    only the directions the support spans. Its outlier score is ``0.5 * min_c d_c^2``; pass float64 features to
    ``predict_features``.
    """
    features = features.double()
    detector = Mahalanobis(None).fit_features(features, labels)
    detector.mu = detector.mu.double()  # pytorch-ood allocates float32; keep float64 so inputs match
    centred = features - detector.mu[labels.to(features.device)]
    detector.cov = centred.T @ centred / len(features)  # without pytorch-ood's 1e-6 ridge
    detector.precision = torch.linalg.pinv(detector.cov, hermitian=True)
    return detector


def class_mahalanobis(support_features: torch.Tensor, support_labels, test_features: torch.Tensor,
                      normalise: bool = False) -> torch.Tensor:
    """(N_test, C) float64 squared Mahalanobis distances of each test feature to each class mean of the support
    features (labels 0..C-1), under ONE tied empirical covariance (sum of the centred outer products / N, sklearn's
    EmpiricalCovariance) and its pseudo-inverse (singular when the support has fewer images than dimensions).
    ``normalise``: L2-normalise every feature first (ReweightOOD's official postprocessor, Mahalanobis++)."""
    support, test = support_features.double(), test_features.double()
    if normalise:
        support, test = F.normalize(support, dim=1), F.normalize(test, dim=1)
    labels = torch.as_tensor(np.asarray(support_labels), dtype=torch.long)
    means = torch.stack([support[labels == c].mean(0) for c in range(int(labels.max()) + 1)])
    centred = support - means[labels]
    precision = torch.linalg.pinv(centred.T @ centred / len(support), hermitian=True)
    return torch.stack([((test - mu) @ precision * (test - mu)).sum(dim=1) for mu in means], dim=1)


def mahalanobis_scores(support_features: torch.Tensor, support_labels, test_features: torch.Tensor,
                       normalise: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(normality, predictions): minus the squared distance to the nearest class mean (`class_mahalanobis`, the
    OpenOOD MDS / ReweightOOD postprocessors' score) and that class."""
    d2 = class_mahalanobis(support_features, support_labels, test_features, normalise)
    nearest = d2.min(dim=1)
    return (-nearest.values).numpy(), nearest.indices.numpy()


def nearest_support_class(support_features: torch.Tensor, support_labels, test_features: torch.Tensor) -> np.ndarray:
    """The class of each test image's nearest support image (cosine, i.e. L2 on normalised features)."""
    cosine = F.normalize(test_features.double(), dim=1) @ F.normalize(support_features.double(), dim=1).T
    return np.asarray(support_labels)[cosine.argmax(dim=1).numpy()]


def knn1_scores(support_features: torch.Tensor, support_labels, test_features: torch.Tensor
                ) -> tuple[np.ndarray, np.ndarray]:
    """(normality, predictions): minus the distance from each L2-normalised test feature to its nearest normalised
    support feature (KNN with k = 1), and that support image's class."""
    support, test = F.normalize(support_features.double(), dim=1), F.normalize(test_features.double(), dim=1)
    nearest = torch.cdist(test, support).min(dim=1)
    return (-nearest.values).numpy(), np.asarray(support_labels)[nearest.indices.numpy()]


# The scores of a backbone that never trained on the support set (the rows every comparison table starts from):
# name -> score(support_features, support_labels, test_features) -> (normality, predictions)
BACKBONE_SCORES = {"knn1": knn1_scores, "mahalanobis": mahalanobis_scores}


def backbone_scores(support_features: torch.Tensor, support_labels, test_features: torch.Tensor
                    ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """What a frozen backbone's features say with no training on the support set: per BACKBONE_SCORES name,
    (normality (N,) float64, higher = known; predictions (N,) class index). ``knn1``: minus the distance to the
    nearest support image on L2-normalised features; ``mahalanobis``: minus the squared Mahalanobis distance to the
    nearest class mean (raw features, tied covariance, pseudo-inverse). Features: (N, D) float32 or float64."""
    return {name: score(support_features, support_labels, test_features) for name, score in BACKBONE_SCORES.items()}


def knn_k(support_size: int) -> int:
    """KNN's k for a support set of `support_size` images (see KNN_FRACTION), at most the support size."""
    return min(support_size, max(1, round(KNN_FRACTION * support_size)))


def require_float32(*features: torch.Tensor) -> None:
    """Mahalanobis and KNN read float32 features (bf16 ones would round the distances): raise otherwise."""
    dtypes = {str(f.dtype) for f in features}
    if dtypes != {"torch.float32"}:
        raise TypeError(f"feature detectors read float32 features, got {', '.join(sorted(dtypes))}: "
                        "take them from supervised.infer (float32 outside autocast)")


def knn_normality(support_features: torch.Tensor, support_labels, test_features: torch.Tensor) -> np.ndarray:
    """pytorch-ood KNN in float32: minus the distance from each test image's L2-normalised feature to its k-th
    nearest normalised support feature, k = `knn_k` of the support size."""
    require_float32(support_features, test_features)
    labels = torch.as_tensor(np.asarray(support_labels), dtype=torch.long)
    detector = KNN(None, k=knn_k(len(labels))).fit_features(support_features, labels)
    return normality_from_outlier(detector.predict_features(test_features))


def odin_normality(model: Classifier, imageset, settings: Settings) -> np.ndarray:
    """ODIN needs input gradients, so it runs on images (eval transform), in float32."""
    device = resolve_device(settings)
    detector = ODIN(model, eps=ODIN_EPS, temperature=ODIN_TEMPERATURE, norm_std=IMAGENET_STD)
    transform = data.eval_transform(settings.image_size)
    model.eval().to(device)
    scores, bs = [], max(settings.baseline_batch, 128)
    for start in range(0, len(imageset), bs):
        x = load_images(imageset, np.arange(start, min(len(imageset), start + bs)), transform, device, False,
                        settings.num_workers)
        scores.append(detector.predict(x).detach().cpu())
    return normality_from_outlier(torch.cat(scores))


def posthoc_normality(name: str, model: Classifier, support_out: dict, test_out: dict, test_set,
                      support_labels: np.ndarray, settings: Settings) -> np.ndarray:
    """Normality (higher = known) of every test image under detector `name`.

    `support_out`/`test_out` are `lib.supervised.infer` outputs (logits, pooled features).
    """
    if name not in POSTHOC:
        raise KeyError(f"unknown post-hoc detector {name!r}: valid ones are {', '.join(POSTHOC)}")
    if name in LOGIT_DETECTORS:
        return normality_from_outlier(LOGIT_DETECTORS[name](test_out["logits"].double()))
    if name == "odin":
        return odin_normality(model, test_set, settings)
    labels = torch.as_tensor(np.asarray(support_labels), dtype=torch.long)
    require_float32(support_out["features"], test_out["features"])
    if name == "mahalanobis":
        detector = fit_mahalanobis(support_out["features"], labels)
        return normality_from_outlier(detector.predict_features(test_out["features"].double()))
    return knn_normality(support_out["features"], labels, test_out["features"])

"""Post-hoc detectors on the support-set classifier, through pytorch-ood (SPEC 10).

pytorch-ood's ``predict`` returns OUTLIER scores (higher = more OOD); this project's convention is
normality (higher = more known), so every score here is ``normality = -outlier_score``.
"""

from __future__ import annotations

import numpy as np
import torch
from pytorch_ood.detector import KNN, ODIN, EnergyBased, Mahalanobis, MaxLogit, MaxSoftmax

from lib.baselines.classifier import Classifier, load_images
from lib.device import resolve_device
from lib.config import Settings

IMAGENET_STD = [0.229, 0.224, 0.225]  # ODIN's input step is taken in pixel units, so undo the normalisation
ODIN_EPS = 0.0014  # pytorch-ood / paper default step
ODIN_TEMPERATURE = 1000.0
KNN_K = 50  # paper's k for CIFAR-10; capped at the support size

LOGIT_DETECTORS = {"msp": MaxSoftmax.score, "maxlogit": MaxLogit.score, "energy": EnergyBased.score}
POSTHOC = ("msp", "maxlogit", "energy", "odin", "mahalanobis", "knn")


def normality_from_outlier(outlier_score: torch.Tensor) -> np.ndarray:
    """Our convention: higher = more known. pytorch-ood's: higher = more OOD."""
    return (-outlier_score.detach().double().cpu()).numpy()


def fit_mahalanobis(features: torch.Tensor, labels: torch.Tensor) -> Mahalanobis:
    """pytorch-ood Mahalanobis (class means, one tied covariance) with the covariance divided by N.

    pytorch-ood sums the centred outer products without dividing by N; dividing makes the distance the
    textbook one (ranking, hence AUROC, is unchanged). Its outlier score is ``0.5 * min_c d_c^2``; pass
    float64 features to ``predict_features``.
    """
    detector = Mahalanobis(None).fit_features(features.double(), labels)
    detector.mu = detector.mu.double()  # pytorch-ood allocates float32; keep float64 so inputs match
    detector.cov = detector.cov.double() / len(features)
    detector.precision = torch.linalg.inv(detector.cov)
    return detector


def odin_normality(model: Classifier, imageset, settings: Settings) -> np.ndarray:
    """ODIN needs input gradients, so it runs on images (eval transform), in float32."""
    from lib import data

    device = resolve_device(settings)
    detector = ODIN(model, eps=ODIN_EPS, temperature=ODIN_TEMPERATURE, norm_std=IMAGENET_STD)
    transform = data.eval_transform(settings.image_size)
    model.eval().to(device)
    scores, bs = [], max(settings.baseline_batch, 128)
    for start in range(0, len(imageset), bs):
        x = load_images(imageset, np.arange(start, min(len(imageset), start + bs)), transform, device, False)
        scores.append(detector.predict(x).detach().cpu())
    return normality_from_outlier(torch.cat(scores))


def posthoc_normality(name: str, model: Classifier, support_out: dict, test_out: dict, test_set,
                      support_labels: np.ndarray, settings: Settings) -> np.ndarray:
    """Normality (higher = known) of every test image under detector `name`.

    `support_out`/`test_out` are `classifier.infer` outputs (logits, pooled features).
    """
    if name in LOGIT_DETECTORS:
        return normality_from_outlier(LOGIT_DETECTORS[name](test_out["logits"].double()))
    if name == "odin":
        return odin_normality(model, test_set, settings)
    labels = torch.as_tensor(np.asarray(support_labels), dtype=torch.long)
    if name == "mahalanobis":
        detector = fit_mahalanobis(support_out["features"], labels)
        return normality_from_outlier(detector.predict_features(test_out["features"].double()))
    if name == "knn":
        detector = KNN(None, k=min(KNN_K, len(labels))).fit_features(support_out["features"], labels)
        return normality_from_outlier(detector.predict_features(test_out["features"]))
    raise KeyError(f"unknown post-hoc detector {name!r}: valid ones are {', '.join(POSTHOC)}")

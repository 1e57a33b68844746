"""ReSeND as a pytorch-ood detector: `ReSeNDDetector(model, objective).fit(support).predict(x)` gives outlier scores
(larger = more likely unknown), so a trained ReSeND runs beside pytorch-ood's detectors and through its
`pytorch_ood.metrics.OODMetrics`.

The scores are those of `lib.evaluate.score_benchmark` with the sign pytorch-ood wants: ``predict(x) =
-normality`` (docs/METHOD.md §6: prototypes of the support's known classes, class scores, max softmax or the kNN
rule). Nothing is trained: ``fit`` only computes the prototypes. Inputs are preprocessed float images (B, 3, H, W)
as pytorch-ood's loaders give them (``lib.data.eval_transform`` for ours). pytorch-ood marks unknown samples with
labels < 0, where our benchmarks label them >= num_known: `ood_targets` converts. Its ``FPR95TPR`` takes
unknown = positive: it is our ``fpr95_ood``, not ``fpr95`` (`lib.metrics`).
"""

from __future__ import annotations

import numpy as np
import torch
from pytorch_ood.api import Detector, DetectorInfo, Paper, RequiresFittingException, Task
from torch.utils.data import DataLoader

from lib.config import CHOICES
from lib.evaluate import build_prototypes, normality_scores, pair_similarities
from lib.features import model_device

PROTOTYPE_KINDS = CHOICES["prototypes"]  # the settings' choices: mean | kcenter | knn | knn_class


def ood_targets(labels, num_known: int) -> torch.Tensor:
    """Our test labels (known 0..K-1, unknown >= K) as pytorch-ood targets: known keep their class, unknown -> -1."""
    labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    return torch.where(labels < num_known, labels, torch.full_like(labels, -1))


class ReSeNDDetector(Detector):
    """Outlier score = -normality of a trained ReSeND (`model`: ``features`` + ``relate``; `objective`:
    ``similarity``) against the prototypes of a support set. ``prototypes``, ``k``: as the settings of the same
    names (mean | kcenter | knn | knn_class); ``batch_pairs``: pairs per ``relate`` call."""

    requires_fit = True
    info = DetectorInfo(  # pytorch-ood's metadata record of a detector
        tasks={Task.CLASSIFICATION},
        paper=Paper(title="Semantic Novelty Detection via Relational Reasoning", venue="ECCV", year=2022,
                    url="https://arxiv.org/abs/2207.08699", code="https://github.com/FrancescoCappio/ReSeND"),
        ai_coded=True,
    )

    def __init__(self, model: torch.nn.Module, objective, prototypes: str = "mean", k: int = 3,
                 batch_pairs: int = 1024, cpu_amp: bool = False):
        if prototypes not in PROTOTYPE_KINDS:
            raise ValueError(f"prototypes={prototypes!r} is not one of {', '.join(PROTOTYPE_KINDS)}")
        for name, value in (("k", k), ("batch_pairs", batch_pairs)):  # as the settings' checks (lib.config)
            if isinstance(value, bool) or int(value) != value or value < 1:
                raise ValueError(f"{name}={value!r} must be an integer >= 1")
        self.model, self.objective = model, objective
        self.prototypes, self.k, self.batch_pairs, self.cpu_amp = prototypes, k, batch_pairs, cpu_amp
        self.protos: torch.Tensor | None = None
        self.owners: np.ndarray | None = None
        self.num_known = 0

    @torch.inference_mode()
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone features (B, 512) of preprocessed images (B, 3, H, W), model in eval mode."""
        self.model.eval()
        return self.model.features(x.to(model_device(self.model))).float()

    def fit(self, data, labels=None) -> "ReSeNDDetector":
        """Prototypes from a support set: a DataLoader yielding ``(x, y)`` batches (pytorch-ood's convention), or a
        tensor of images `data` with its `labels`. Labels are the known classes 0..K-1, every one present."""
        if isinstance(data, DataLoader):
            if labels is not None:
                raise ValueError("fit(loader) takes the labels from the loader's (x, y) batches: drop labels=")
            batches = [(self.features(batch[0]), torch.as_tensor(batch[1])) for batch in data]
            if not batches:
                raise ValueError("fit(loader): the loader yielded no batch: give it the support set's known images")
            feats, ys = zip(*batches)
            return self.fit_features(torch.cat(feats), torch.cat(ys))
        if labels is None:
            raise ValueError("fit(x) needs the support labels: fit(x, labels) or fit(DataLoader of (x, y))")
        return self.fit_features(self.features(torch.as_tensor(data)), labels)

    def fit_features(self, feats: torch.Tensor, labels) -> "ReSeNDDetector":
        """Prototypes from support backbone features (N, 512) and their labels (N,) in 0..K-1."""
        labels = np.asarray(torch.as_tensor(labels).cpu(), dtype=np.int64)
        if len(labels) != len(feats):
            raise ValueError(f"support features ({len(feats)}) and labels ({len(labels)}) differ in length")
        if len(labels) == 0 or labels.min() < 0:
            raise ValueError("support labels must be the known classes 0..K-1 (no unknown / negative labels): "
                             "fit on the known images only")
        self.num_known = int(labels.max()) + 1
        self.protos, self.owners = build_prototypes(feats.to(model_device(self.model)), labels, self.num_known,
                                                    self.prototypes, self.k)
        return self

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Outlier scores (B,) float64 of preprocessed images: -normality (larger = more likely unknown)."""
        return self.predict_features(self.features(x))

    def predict_features(self, feats: torch.Tensor) -> torch.Tensor:
        """Outlier scores (B,) float64 from backbone features (B, 512)."""
        return -self.score_features(feats)[0]

    def score_features(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(normality (B,) float64, predicted known class (B,) int64) of backbone features, as `score_benchmark`."""
        if self.protos is None:
            raise RequiresFittingException("ReSeNDDetector: call fit(support) before predict(x)")
        sims = pair_similarities(self.model, self.objective, feats.to(self.protos.device), self.protos,
                                 self.batch_pairs, self.cpu_amp)
        normality, predictions, _ = normality_scores(sims, self.owners, self.num_known, self.prototypes, self.k)
        return normality, predictions

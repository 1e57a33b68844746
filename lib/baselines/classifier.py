"""Support-set classifiers for the comparison methods (docs/METHOD.md §10): a ResNet-18 trained by the one loop of
`lib.supervised` (``train_classifier``, with a per-method `lib.supervised.Recipe`).

Training criterion: every trained method states what it must reach on its support set (`criterion`, by default
clean support-set accuracy >= CRITERION_ACCURACY) and records the value reached and whether it was met.
"""

from __future__ import annotations

import torch
from torch import nn

from lib import pretrain
from lib.backbone import initialise, resnet18_features, trunk_of
from lib.config import Settings
from lib.supervised import Classifier, accuracy, cross_entropy_loss, infer, support_recipe, train_classifier

CRITERION_ACCURACY = 0.95  # training criterion of every trained method: support-set accuracy (clean images) >= this


def resnet18_trunk(settings: Settings) -> tuple[nn.Module, str]:
    """ResNet-18 up to its last feature map (B,512,h,w), and what initialised it.

    Built as ReSeND's backbone is (same small stem, same weights rule: `lib.pretrain.backbone_weights`).
    """
    net = resnet18_features(settings.small_stem)
    note = initialise(net, pretrain.backbone_weights(settings))
    return trunk_of(net), note


def build_classifier(num_classes: int, settings: Settings) -> tuple[Classifier, str]:
    """A fresh trunk + fc, initialised from ``settings.seed`` (where not loaded), and what initialised the trunk."""
    torch.manual_seed(settings.seed)
    trunk, note = resnet18_trunk(settings)
    return Classifier(trunk, num_classes), note


def criterion_record(value: float, what: str = "support_accuracy", threshold: float = CRITERION_ACCURACY) -> dict:
    """A method's training-criterion fields: ``criterion`` (what it must reach), ``criterion_value``, ``criterion_met``."""
    return {"criterion": f"{what} >= {threshold:g}", "criterion_value": float(value),
            "criterion_met": bool(value >= threshold)}


def train_support_classifier(benchmark, settings: Settings, budget_s: float = 0.0) -> tuple[Classifier, dict]:
    """The CE classifier on the benchmark's support set (`support_recipe`), shared by the six post-hoc detectors and
    the base of MixOE; its info holds the training record, the recipe and the criterion (support accuracy)."""
    model, note = build_classifier(benchmark.num_known, settings)
    recipe = support_recipe(settings)
    info = train_classifier(model, cross_entropy_loss, benchmark.support, settings, budget_s, recipe=recipe)
    support_logits = infer(model, benchmark.support, settings)["logits"]
    info.update(weights=note, **recipe.record(settings),
                **criterion_record(accuracy(support_logits, benchmark.support.labels)))
    return model, info

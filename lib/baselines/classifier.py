"""Support-set classifiers for the comparison methods (docs/METHOD.md §10): a ResNet-18 trained by the one loop of
`lib.supervised` (``train_classifier``, with a per-method `lib.supervised.Recipe`).

Budget (docs/METHOD.md §10): in the budget-matched setting a method's `Budget` starts when the method starts and
is charged everything it does until its scores exist — building its network, training, its own inference passes and
scoring; `Budget.stages` turns what is left, after the inference still to come (`inference_seconds`, timed on one
batch), into the deadlines of its training stages (`lib.supervised.Deadline`).

Training criterion: every trained method states what it must reach on its support set (`criterion`, by default
clean support-set accuracy >= CRITERION_ACCURACY) and records the value reached and whether it was met.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
from torch import nn

from lib import pretrain
from lib.backbone import initialise, resnet18_features, trunk_of
from lib.config import Settings
from lib.supervised import (IMAGE_BATCH_MIN, Classifier, Deadline, accuracy, cross_entropy_loss, infer,
                            support_recipe, train_classifier)

CRITERION_ACCURACY = 0.95  # training criterion of every trained method: support-set accuracy (clean images) >= this
CLOCK = time.perf_counter  # the clock every budget reads (tests swap in a fake one)
ODIN_PASSES = 3  # ODIN's input-gradient pass over the test set: about 3 forward passes (forward, backward, forward)


def now() -> float:
    return CLOCK()


class Budget:
    """One method's wall-clock budget on one benchmark (docs/METHOD.md §10), started at construction; ``seconds <= 0``
    (false): no budget, the converged setting. `spent` is charged everything done since the start."""

    def __init__(self, seconds: float):
        self.seconds, self.start = float(seconds), now()

    def __bool__(self) -> bool:
        return self.seconds > 0

    def spent(self) -> float:
        return now() - self.start

    def stages(self, reserve: float, shares: tuple[float, ...] = (1.0,)) -> list[Deadline | None]:
        """Deadlines of consecutive training stages: the seconds left once `reserve` (the inference and scoring
        still to come) is kept aside, split in proportion to `shares` (the split rule: each stage's epochs in its
        converged recipe, `stage_shares`). Without a budget: one None per stage (train to the recipe's end)."""
        if not self:
            return [None] * len(shares)
        begin, end = now(), self.start + self.seconds - reserve
        cumulative = np.cumsum(shares) / sum(shares)
        return [Deadline(now, begin + (end - begin) * float(c)) for c in cumulative]


def stage_shares(*epochs: float) -> tuple[float, ...]:
    """The budget's split between the training stages of a two-stage method (MixOE, SSOD: a CE base, then its own
    fine-tuning): in proportion to each stage's epochs in its converged recipe (each pass over the same support set)."""
    return tuple(float(e) for e in epochs)


def inference_seconds(model: Classifier, sets, settings: Settings, image_size: int | None = None,
                      extra_test_passes: float = 0.0) -> float:
    """Estimated seconds of `lib.supervised.infer` over every image set of `sets` (and `extra_test_passes` more
    passes over the last one): one batch of the first set is inferred and timed (on the budget's clock, so it is
    charged too), times the number of batches."""
    batch = max(settings.baseline_batch, IMAGE_BATCH_MIN)
    probe = sets[0].subset(np.arange(min(batch, len(sets[0]))))
    start = now()
    infer(model, probe, settings, image_size=image_size)
    per_batch = now() - start
    batches = sum(math.ceil(len(s) / batch) for s in sets) + extra_test_passes * math.ceil(len(sets[-1]) / batch)
    return per_batch * batches


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


def train_support_classifier(benchmark, settings: Settings, budget: Budget | float = 0.0) -> tuple[Classifier, dict]:
    """The CE classifier on the benchmark's support set (`support_recipe`), shared by the six post-hoc detectors and
    the base of MixOE; its info holds the training record, the recipe, the criterion (support accuracy) and
    ``spent_seconds`` (building + training, on the budget's clock). With a budget, training stops leaving the
    inference of support + test and ODIN's passes (the dearest scoring of the detectors sharing it) inside it."""
    budget = budget if isinstance(budget, Budget) else Budget(budget)
    model, note = build_classifier(benchmark.num_known, settings)
    recipe = support_recipe(settings)
    reserve = (inference_seconds(model, [benchmark.support, benchmark.test], settings, extra_test_passes=ODIN_PASSES)
               if budget else 0.0)
    (deadline,) = budget.stages(reserve)
    info = train_classifier(model, cross_entropy_loss, benchmark.support, settings, recipe=recipe, deadline=deadline)
    spent = budget.spent()
    fitted = not untrained(budget, info)
    support_logits = infer(model, benchmark.support, settings)["logits"] if fitted else None  # a check, not charged
    info.update(weights=note, **recipe.record(settings), spent_seconds=spent, budget_s=budget.seconds,
                **criterion_record(accuracy(support_logits, benchmark.support.labels) if fitted else float("nan")))
    return model, info


def untrained(budget: Budget | float, info: dict) -> bool:
    """True for a budget-matched training that took no step inside its budget: such a method did not train, and is
    not run on the test set (`not_run`)."""
    return bool(budget) and info["steps"] == 0


def not_run(benchmark, spent_seconds: float, what: str = "support_accuracy") -> dict:
    """The result fields of a method that took no training step inside its budget: constant normality (AUROC 0.5),
    class 0 predicted, the seconds spent finding so (its budget's probe), its criterion not met: its row reads "did
    not train" (`lib.baselines.readable_table`), and no inference overruns the budget."""
    n = len(benchmark.test)
    return {"normality": np.zeros(n), "predictions": np.zeros(n, dtype=np.int64), "spent_seconds": spent_seconds,
            **criterion_record(float("nan"), what=what)}

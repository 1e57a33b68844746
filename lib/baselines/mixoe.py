"""MixOE (Zhang et al., WACV 2023): mix known images with auxiliary outliers, soften the targets (docs/METHOD.md §10).

L = CE(f(x), y) + beta * softCE(f(x_mix), y_mix),  y_mix = lam * onehot(y) + (1 - lam) / K,  lam ~ Beta(a, a)
(one lam per batch, as in the reference code). mixup: x_mix = lam x + (1 - lam) x_out; cutmix: paste an
outlier box of area ~(1 - lam) into x, then lam := 1 - box area / image area. Score = MSP.

As the official code (zjysteven/MixOE, train/train_mixoe.py): the clean and the mixed batch go through the network
in two passes (each with its own batch-norm statistics); the model is a converged CE baseline fine-tuned with
`recipe` (10 epochs, SGD lr 1e-3 Nesterov, batch 32, wd 1e-5, cosine per step to 1e-6, no gradient clipping).
The outliers come from another dataset family than the benchmark (`lib.data.outlier_pool`), never from the
test unknowns' distribution; every result says which (``aux_data``).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from lib.supervised import Batch, Classifier, Recipe, TrainContext, load_images

DEFAULTS = {"mixup": {"alpha": 1.0, "beta": 5.0}, "cutmix": {"alpha": 2.0, "beta": 5.0}}


def recipe(epochs: int = 10, lr: float = 1e-3, batch: int = 32, weight_decay: float = 1e-5, lr_min: float = 1e-6
           ) -> Recipe:
    """The official fine-tuning recipe (its argparse defaults); `settings.mixoe_epochs` passes `epochs`."""
    return Recipe(epochs=epochs, lr=lr, batch=batch, weight_decay=weight_decay, lr_min=lr_min)


def soft_targets(labels: torch.Tensor, lam: float, num_classes: int) -> torch.Tensor:
    """(B,K) lam * onehot(y) + (1 - lam) / K: the outlier share is spread uniformly over the known classes."""
    return lam * F.one_hot(labels, num_classes).float() + (1.0 - lam) / num_classes


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """mean_i  -sum_k targets_ik log softmax(logits_i)_k."""
    return -(targets * F.log_softmax(logits.float(), dim=1)).sum(dim=1).mean()


def mixup(x: torch.Tensor, x_out: torch.Tensor, lam: float) -> torch.Tensor:
    return lam * x + (1.0 - lam) * x_out


def cutmix_box(height: int, width: int, lam: float, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """A box (y0, y1, x0, x1) of area about (1 - lam) * H * W, centre uniform, clipped to the image."""
    cut = np.sqrt(1.0 - lam)
    ch, cw = int(height * cut), int(width * cut)
    cy, cx = int(rng.integers(height)), int(rng.integers(width))
    return (int(np.clip(cy - ch // 2, 0, height)), int(np.clip(cy + ch // 2, 0, height)),
            int(np.clip(cx - cw // 2, 0, width)), int(np.clip(cx + cw // 2, 0, width)))


def cutmix(x: torch.Tensor, x_out: torch.Tensor, box: tuple[int, int, int, int]) -> tuple[torch.Tensor, float]:
    """Paste x_out's `box` into x; return (mixed, lam) with lam = 1 - box area / image area (the clipped box)."""
    y0, y1, x0, x1 = box
    mixed = x.clone()
    mixed[:, :, y0:y1, x0:x1] = x_out[:, :, y0:y1, x0:x1]
    return mixed, 1.0 - (y1 - y0) * (x1 - x0) / (x.shape[2] * x.shape[3])


def mixoe_loss(variant: str, outliers, alpha: float | None = None, beta: float | None = None
               ) -> Callable[[Classifier, TrainContext], Callable[[Batch], torch.Tensor]]:
    """Loss factory for `lib.supervised.train_classifier`; per step, len(batch) outliers drawn uniformly from `outliers`
    (an ImageSet, train-augmented like the support), then one lam ~ Beta(alpha, alpha)."""
    if variant not in DEFAULTS:
        raise KeyError(f"unknown MixOE variant {variant!r}: choose mixup or cutmix")
    alpha = DEFAULTS[variant]["alpha"] if alpha is None else alpha
    beta = DEFAULTS[variant]["beta"] if beta is None else beta

    def make(model: Classifier, ctx: TrainContext) -> Callable[[Batch], torch.Tensor]:
        def loss(batch: Batch) -> torch.Tensor:
            idx = ctx.rng.integers(len(outliers), size=len(batch.y))
            x_out = load_images(outliers, idx, ctx.transform, ctx.device, ctx.channels_last)
            lam = float(ctx.rng.beta(alpha, alpha))
            if variant == "mixup":
                x_mix = mixup(batch.x, x_out, lam)
            else:
                x_mix, lam = cutmix(batch.x, x_out, cutmix_box(batch.x.shape[2], batch.x.shape[3], lam, ctx.rng))
            known = model(batch.x)  # two passes: clean and mixed images keep their own batch-norm statistics
            mixed = model(x_mix)
            return F.cross_entropy(known.float(), batch.y) + beta * soft_cross_entropy(
                mixed, soft_targets(batch.y, lam, ctx.num_classes))

        return loss

    return make

"""Support-set classifiers for the comparison methods (docs/METHOD.md §10): a ResNet-18 and ONE training loop.

Every trained method (plain CE for the post-hoc detectors, MixOE, SSOD, ReweightOOD) plugs a
``loss(batch) -> scalar`` callable and a `Recipe` (optimiser values, input size, augmentation) into
`train_classifier`; there is no second loop. No comparison source clips gradients, so no method recipe does.

Budget rule (ReSeND §5.3): ``budget_s > 0`` stops training once that many wall-clock seconds are spent
(the cosine schedule then runs on elapsed time); ``budget_s == 0`` is the converged setting, ``epochs``
full passes over the support set. The seconds, epochs and steps actually used are returned.

Training criterion: every trained method states what it must reach on its support set (`criterion`, by default
clean support-set accuracy >= CRITERION_ACCURACY) and records the value reached and whether it was met.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lib import data
from lib.config import Settings
from lib.device import autocast, resolve_device

FEATURE_DIM = 512  # ResNet-18 pooled feature width
# lib.pretrain's source classifier (the ImageNet stand-in) was built by this loop with gradient clipping at 5; its
# cached weights are keyed by its recipe, not by code, so a call without a Recipe keeps that clipping. The comparison
# methods always pass a Recipe, whose default is no clipping (none of their sources clips).
PRETRAIN_GRAD_CLIP = 5.0
CRITERION_ACCURACY = 0.95  # training criterion of every trained method: support-set accuracy (clean images) >= this


def resnet18_trunk(settings: Settings) -> tuple[nn.Module, str]:
    """ResNet-18 up to its last feature map (B,512,h,w), and what initialised it.

    Built by `lib.model` (same small stem, same local ImageNet weights rule as ReSeND's backbone).
    """
    from lib import model as resend_model

    net = resend_model.resnet18_features(settings.small_stem)
    path, what = resend_model.backbone_weights(settings)
    note = resend_model.load_backbone_weights(net, path, what) if path else "random init"
    return trunk_of(net), note


def trunk_of(net: nn.Module) -> nn.Sequential:
    """torchvision ResNet -> Sequential up to layer4 (sharing its modules, so ``net.state_dict()`` sees training)."""
    return nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3, net.layer4)


class Classifier(nn.Module):
    """CNN trunk + linear classifier; `heads` holds method-specific extras (SSOD OOD head, projections)."""

    def __init__(self, trunk: nn.Module, num_classes: int):
        super().__init__()
        self.trunk = trunk
        self.fc = nn.Linear(FEATURE_DIM, num_classes)
        self.heads = nn.ModuleDict()

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """(B,512,h,w) last feature map."""
        return self.trunk(x)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B,512) globally average-pooled feature."""
        return self.feature_map(x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B,K) class logits."""
        return self.fc(self.features(x))


def build_classifier(num_classes: int, settings: Settings) -> tuple[Classifier, str]:
    """A fresh trunk + fc, initialised from ``settings.seed`` (where not loaded), and what initialised the trunk."""
    torch.manual_seed(settings.seed)
    trunk, note = resnet18_trunk(settings)
    return Classifier(trunk, num_classes), note


def load_images(imageset, idx: np.ndarray, transform: Callable, device: torch.device, channels_last: bool) -> torch.Tensor:
    x = data.augment_batch(imageset, idx, transform).to(device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


@dataclass(frozen=True)
class Recipe:
    """How one method trains: SGD (momentum ``settings.momentum``, Nesterov), lr cosine from `lr` to `lr_min` over
    the planned steps (or the budget's seconds), `batch` images of `image_size` px per step, `augment` views."""

    epochs: int  # passes over the support set in the converged setting
    lr: float  # peak (first-step) learning rate
    batch: int  # images per step (at most the support size)
    weight_decay: float  # SGD L2 weight decay
    lr_min: float = 0.0  # floor of the cosine schedule
    image_size: int = 0  # input side in px (the augmentation resizes to it); 0 = settings.image_size
    augment: Callable[..., Callable] = data.train_transform  # (image_size, hflip) -> uint8 (3,H,W) -> normalised float
    views: int = 1  # augmented views of each image per step (2 for contrastive losses)
    grad_clip: float = 0.0  # max global gradient norm; 0 = off

    def record(self, settings: Settings) -> dict:
        """The recipe's numbers for a method's result record."""
        return {"recipe_epochs": float(self.epochs), "lr": self.lr, "lr_min": self.lr_min, "batch": float(self.batch),
                "weight_decay": self.weight_decay, "image_size": float(self.size(settings)), "grad_clip": self.grad_clip}

    def size(self, settings: Settings) -> int:
        return self.image_size or settings.image_size


def support_recipe(settings: Settings, **changes) -> Recipe:
    """The project's support-set recipe (CE of the post-hoc detectors, SSOD, ReweightOOD): ``baseline_epochs``,
    ``baseline_lr``, ``baseline_batch``, ``weight_decay``, cosine to 0; `changes` replace fields."""
    return Recipe(epochs=settings.baseline_epochs, lr=settings.baseline_lr, batch=settings.baseline_batch,
                  weight_decay=settings.weight_decay, **changes)


@dataclass
class Batch:
    """One training batch: `x` (B,3,S,S) augmented images, `y` (B,) labels, `x2` a second view (or None)."""

    x: torch.Tensor
    y: torch.Tensor
    x2: torch.Tensor | None = None


@dataclass
class TrainContext:
    """What a method's loss needs besides the batch: the device, the transform, autocast flags."""

    device: torch.device
    transform: Callable
    channels_last: bool
    num_classes: int
    rng: np.random.Generator


def cosine_lr(recipe: Recipe, progress: float) -> float:
    """The learning rate at `progress` in [0, 1] of training: lr_min + (lr - lr_min) (1 + cos(pi progress)) / 2."""
    return recipe.lr_min + (recipe.lr - recipe.lr_min) * 0.5 * (1 + math.cos(math.pi * progress))


def train_classifier(
    model: Classifier,
    make_loss: Callable[[Classifier, TrainContext], Callable[[Batch], torch.Tensor]],
    support,
    settings: Settings,
    budget_s: float = 0.0,
    epochs: int | None = None,
    desc: str | None = None,
    recipe: Recipe | None = None,
) -> dict:
    """Train `model` on `support` with the loss `make_loss(model, ctx)` under `recipe`; return what was spent.

    Returns ``{"train_seconds", "epochs", "steps", "budget_s", "budget_mode"}`` (epochs as a float:
    fraction of passes over the support set). `epochs` overrides the recipe's. Without a recipe: `support_recipe`
    with lib.pretrain's clipping (PRETRAIN_GRAD_CLIP). `desc` shows a tqdm bar over steps.
    """
    from tqdm.auto import tqdm

    recipe = recipe or support_recipe(settings, grad_clip=PRETRAIN_GRAD_CLIP)
    device = resolve_device(settings)
    channels_last = settings.channels_last
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    rng = np.random.default_rng(settings.seed)
    torch.manual_seed(settings.seed)
    ctx = TrainContext(device, data.augmentation(support, recipe.size(settings), recipe.augment), channels_last, int(model.fc.out_features), rng)
    loss_fn = make_loss(model, ctx)
    n = len(support)
    batch = min(recipe.batch, n)
    steps_per_epoch = max(1, n // batch)  # drop the last partial batch (BatchNorm, SSOD/contrastive need >1)
    epochs = recipe.epochs if epochs is None else epochs
    planned = steps_per_epoch * epochs if budget_s <= 0 else None
    opt = torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=settings.momentum,
                          weight_decay=recipe.weight_decay, nesterov=True)
    labels = torch.as_tensor(np.asarray(support.labels), dtype=torch.long)
    model.train()
    bar = tqdm(total=planned, desc=desc, disable=desc is None)
    start, step, stopped = time.perf_counter(), 0, False
    while not stopped:
        order = rng.permutation(n)
        for b in range(steps_per_epoch):
            elapsed = time.perf_counter() - start
            progress = step / planned if planned else elapsed / budget_s
            if progress >= 1.0:
                stopped = True
                break
            for group in opt.param_groups:
                group["lr"] = cosine_lr(recipe, progress)
            idx = order[b * batch:(b + 1) * batch]
            x = load_images(support, idx, ctx.transform, device, channels_last)
            x2 = load_images(support, idx, ctx.transform, device, channels_last) if recipe.views == 2 else None
            with autocast(device, settings.amp):
                loss = loss_fn(Batch(x, labels[idx].to(device), x2))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if recipe.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
            opt.step()
            step += 1
            bar.update(1)
            if step % 20 == 0:
                bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    bar.close()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    model.eval()
    return {"train_seconds": seconds, "epochs": step / steps_per_epoch, "steps": float(step),
            "budget_s": float(budget_s), "budget_mode": float(planned is None)}


def cross_entropy_loss(model: Classifier, ctx: TrainContext) -> Callable[[Batch], torch.Tensor]:
    """Plain CE on the known classes: the support-set classifier of the post-hoc detectors."""
    return lambda batch: F.cross_entropy(model(batch.x), batch.y)


def float32_convolutions():
    """A context without cuDNN's TF32 convolutions (its CUDA default, 10 mantissa bits): float32 features in fact."""
    cudnn = torch.backends.cudnn
    return cudnn.flags(enabled=cudnn.enabled, benchmark=cudnn.benchmark, deterministic=cudnn.deterministic,
                       allow_tf32=False)


@torch.no_grad()
def infer(model: Classifier, imageset, settings: Settings, outputs: Callable | None = None,
          image_size: int | None = None) -> dict[str, torch.Tensor]:
    """Eval-transform pass over `imageset` at `image_size` px (default ``settings.image_size``): ``{"logits",
    "features"}`` on the CPU, plus what ``outputs(model, feature_map) -> dict`` adds (e.g. SSOD's OOD-head logits).

    Always in float32, even where training ran in bf16: Mahalanobis and KNN read these features.
    """
    device = resolve_device(settings)
    channels_last = settings.channels_last
    transform = data.eval_transform(image_size or settings.image_size)
    model.eval().to(device)
    parts: dict[str, list] = {}
    n, bs = len(imageset), max(settings.baseline_batch, 128)
    for start in range(0, n, bs):
        x = load_images(imageset, np.arange(start, min(n, start + bs)), transform, device, channels_last)
        with float32_convolutions():
            fmap = model.feature_map(x)
        feat = fmap.mean(dim=(2, 3))
        out = {"features": feat, "logits": model.fc(feat)}
        if outputs is not None:
            out.update(outputs(model, fmap))
        for key, value in out.items():
            parts.setdefault(key, []).append(value.cpu())
    return {key: torch.cat(value) for key, value in parts.items()}


def accuracy(logits: torch.Tensor, labels) -> float:
    """Fraction of rows whose argmax is the label."""
    return float((logits.argmax(1).numpy() == np.asarray(labels)).mean())


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

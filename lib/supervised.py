"""The one supervised classifier loop: a CNN trunk + linear classifier trained with SGD + cosine on a labelled set.

Source pretraining (`lib.pretrain`, the ImageNet stand-in) and every trained comparison method (`lib.baselines`:
plain CE for the post-hoc detectors, MixOE, SSOD, ReweightOOD) plug a ``loss(batch) -> scalar`` callable and a
`Recipe` (optimiser values, input size, augmentation) into `train_classifier`; there is no second loop. No
comparison source clips gradients, so no method recipe does.

Budget rule (ReSeND §5.3, docs/METHOD.md §10): with a `Deadline` (or ``budget_s > 0``: a deadline that many
wall-clock seconds ahead) training stops before the step that would end past it, that step's cost estimated as the
mean of the previous steps (the first step always starts when the deadline is ahead); the cosine schedule then runs
on elapsed time. Without one (``budget_s == 0``) it is the converged setting, ``epochs`` full passes over the
training set. The seconds, epochs and steps actually used are returned.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lib import data
from lib.backbone import FEATURE_DIM
from lib.config import Settings
from lib.device import autocast, resolve_device
from lib.progress import bar as progress_bar

# lib.pretrain's source classifier (the ImageNet stand-in) was built by this loop with gradient clipping at 5; its
# cached weights are keyed by its recipe, not by code, so a call without a Recipe keeps that clipping. The comparison
# methods always pass a Recipe, whose default is no clipping (none of their sources clips).
PRETRAIN_GRAD_CLIP = 5.0
IMAGE_BATCH_MIN = 128  # `infer` takes batches of max(baseline_batch, this) images


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



def load_images(imageset, idx: np.ndarray, transform: Callable, device: torch.device, channels_last: bool,
                num_workers: int = 0) -> torch.Tensor:
    """`transform`ed images `idx` on `device` (a file-backed set decoded in `num_workers` workers, pinned on CUDA)."""
    x = data.augment_batch(imageset, idx, transform, num_workers, device.type == "cuda", device)
    x = x.to(device, non_blocking=True)
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
    warmup: float = 0.0  # fraction of training with a linear lr warm-up (from lr * WARMUP_FROM) before the cosine

    def record(self, settings: Settings) -> dict:
        """The recipe's numbers for a method's result record."""
        return {"recipe_epochs": float(self.epochs), "lr": self.lr, "lr_min": self.lr_min, "batch": float(self.batch),
                "weight_decay": self.weight_decay, "image_size": float(self.size(settings)), "grad_clip": self.grad_clip,
                "warmup": self.warmup}

    def size(self, settings: Settings) -> int:
        return self.image_size or settings.image_size


def support_recipe(settings: Settings, **changes) -> Recipe:
    """The project's support-set recipe (CE of the post-hoc detectors, SSOD, ReweightOOD): ``baseline_epochs``,
    ``baseline_lr``, ``baseline_batch``, ``weight_decay``, cosine to 0; `changes` replace fields."""
    base = Recipe(epochs=settings.baseline_epochs, lr=settings.baseline_lr, batch=settings.baseline_batch,
                  weight_decay=settings.weight_decay)
    return replace(base, **changes)


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


# Warm-up start, relative to the peak lr: CIDER / ReweightOOD's trainer warms up from 0.001 at lr 0.1 (SupCon's rule)
WARMUP_FROM = 0.01


def scheduled_lr(recipe: Recipe, progress: float) -> float:
    """The learning rate at `progress` in [0, 1]: during the first ``recipe.warmup`` of training a linear ramp from
    ``lr * WARMUP_FROM`` to the cosine's value at the warm-up's end (SupCon / CIDER's warm-up, on the cosine of the
    whole run), then `cosine_lr`. Without warm-up, `cosine_lr`."""
    if progress >= recipe.warmup:
        return cosine_lr(recipe, progress)
    start, end = recipe.lr * WARMUP_FROM, cosine_lr(recipe, recipe.warmup)
    return start + (end - start) * progress / recipe.warmup


@dataclass(frozen=True)
class Deadline:
    """A wall-clock mark training must not pass: `clock` (seconds, e.g. time.perf_counter) and the `end` reading."""

    clock: Callable[[], float]
    end: float

    def left(self) -> float:
        return self.end - self.clock()


def train_classifier(
    model: Classifier,
    make_loss: Callable[[Classifier, TrainContext], Callable[[Batch], torch.Tensor]],
    support,
    settings: Settings,
    budget_s: float = 0.0,
    epochs: int | None = None,
    desc: str | None = None,
    recipe: Recipe | None = None,
    deadline: Deadline | None = None,
) -> dict:
    """Train `model` on `support` with the loss `make_loss(model, ctx)` under `recipe`; return what was spent.

    Returns ``{"train_seconds", "epochs", "steps", "budget_s", "budget_mode", "step_seconds"}`` (epochs as a float:
    fraction of passes over the support set; step_seconds: the mean step, the estimate of the next one).
    `deadline` (or ``budget_s > 0``): the budget-matched setting, see the module docstring. `epochs` overrides the recipe's. Without a recipe: `support_recipe`
    with lib.pretrain's clipping (PRETRAIN_GRAD_CLIP). `desc` shows a tqdm bar over steps.
    """
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
    clock = deadline.clock if deadline is not None else time.perf_counter
    if deadline is None and budget_s > 0:
        deadline = Deadline(clock, clock() + budget_s)
    planned = steps_per_epoch * epochs if deadline is None else None
    opt = torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=settings.momentum,
                          weight_decay=recipe.weight_decay, nesterov=True)
    labels = torch.as_tensor(np.asarray(support.labels), dtype=torch.long)
    model.train()
    bar = progress_bar(total=planned, desc=desc, disable=desc is None)
    start, step, stopped = clock(), 0, False
    span = (deadline.end - start) if deadline is not None else 0.0  # the seconds the schedule runs over
    while not stopped:
        order = rng.permutation(n)
        for b in range(steps_per_epoch):
            now = clock()
            step_estimate = (now - start) / step if step else 0.0  # mean of the previous steps
            if planned:
                progress = step / planned
            else:  # a step that would end past the deadline is not started
                progress = 1.0 if now + step_estimate > deadline.end or span <= 0 else (now - start) / span
            if progress >= 1.0:
                stopped = True
                break
            for group in opt.param_groups:
                group["lr"] = scheduled_lr(recipe, progress)
            idx = order[b * batch:(b + 1) * batch]
            x = load_images(support, idx, ctx.transform, device, channels_last, settings.num_workers)
            x2 = (load_images(support, idx, ctx.transform, device, channels_last, settings.num_workers)
                  if recipe.views == 2 else None)
            with autocast(device, settings.amp):
                loss = loss_fn(Batch(x, labels[idx].to(device), x2))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if recipe.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
            opt.step()
            if device.type == "cuda" and deadline is not None:
                torch.cuda.synchronize()  # the step's real cost, not its launch
            step += 1
            bar.update(1)
            if step % 20 == 0:
                bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    bar.close()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = clock() - start
    model.eval()
    return {"train_seconds": seconds, "epochs": step / steps_per_epoch, "steps": float(step),
            "budget_s": float(budget_s if budget_s > 0 or deadline is None else span),
            "budget_mode": float(planned is None), "step_seconds": seconds / step if step else 0.0}


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
    n, bs = len(imageset), max(settings.baseline_batch, IMAGE_BATCH_MIN)
    for start in range(0, n, bs):
        x = load_images(imageset, np.arange(start, min(n, start + bs)), transform, device, channels_last,
                        settings.num_workers)
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

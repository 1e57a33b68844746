"""Support-set classifiers for the comparison methods (SPEC 10): a ResNet-18 and ONE training loop.

Every finetuning method (plain CE for the post-hoc detectors, MixOE, SSOD, ReweightOOD) plugs a
``loss(batch) -> scalar`` callable into `train_classifier`; there is no second loop.

Budget rule (ReSeND §5.3): ``budget_s > 0`` stops training once that many wall-clock seconds are spent
(the cosine schedule then runs on elapsed time); ``budget_s == 0`` is the converged setting, ``epochs``
full passes over the support set. The seconds, epochs and steps actually used are returned.
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

from lib.config import Settings
from lib.data import augment_batch
from lib.device import autocast, resolve_device

FEATURE_DIM = 512  # ResNet-18 pooled feature width
GRAD_CLIP = 5.0  # max gradient L2 norm: MixOE's (1 + beta)-scaled loss diverges at lr .05 from random init without it


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
    trunk, note = resnet18_trunk(settings)
    return Classifier(trunk, num_classes), note


def load_images(imageset, idx: np.ndarray, transform: Callable, device: torch.device, channels_last: bool) -> torch.Tensor:
    x = augment_batch(imageset, idx, transform).to(device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


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


def train_classifier(
    model: Classifier,
    make_loss: Callable[[Classifier, TrainContext], Callable[[Batch], torch.Tensor]],
    support,
    settings: Settings,
    budget_s: float = 0.0,
    epochs: int | None = None,
    views: int = 1,
    desc: str | None = None,
) -> dict:
    """Train `model` on `support` with the loss `make_loss(model, ctx)`; return what was spent.

    Returns ``{"train_seconds", "epochs", "steps", "budget_s", "budget_mode"}`` (epochs as a float:
    fraction of passes over the support set). SGD(momentum, weight decay) with a cosine schedule
    over the planned steps, or over the budget's seconds when ``budget_s > 0``. `desc` shows a tqdm bar over steps.
    """
    from tqdm.auto import tqdm

    from lib import data

    device = resolve_device(settings)
    channels_last = settings.channels_last
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    rng = np.random.default_rng(settings.seed)
    torch.manual_seed(settings.seed)
    ctx = TrainContext(device, data.train_transform(settings.image_size), channels_last, int(model.fc.out_features), rng)
    loss_fn = make_loss(model, ctx)
    n = len(support)
    batch = min(settings.baseline_batch, n)
    steps_per_epoch = max(1, n // batch)  # drop the last partial batch (BatchNorm, SSOD/contrastive need >1)
    epochs = settings.baseline_epochs if epochs is None else epochs
    planned = steps_per_epoch * epochs if budget_s <= 0 else None
    opt = torch.optim.SGD(model.parameters(), lr=settings.baseline_lr, momentum=settings.momentum,
                          weight_decay=settings.weight_decay, nesterov=True)
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
                group["lr"] = settings.baseline_lr * 0.5 * (1 + math.cos(math.pi * progress))
            idx = order[b * batch:(b + 1) * batch]
            x = load_images(support, idx, ctx.transform, device, channels_last)
            x2 = load_images(support, idx, ctx.transform, device, channels_last) if views == 2 else None
            with autocast(device, settings.amp):
                loss = loss_fn(Batch(x, labels[idx].to(device), x2))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
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


@torch.no_grad()
def infer(model: Classifier, imageset, settings: Settings, outputs: Callable | None = None) -> dict[str, torch.Tensor]:
    """Eval-transform pass over `imageset`: ``{"logits", "features"}`` on the CPU (float32), plus what
    ``outputs(model, features_map) -> dict`` adds (e.g. SSOD's OOD-head logits)."""
    from lib import data

    device = resolve_device(settings)
    channels_last = settings.channels_last
    transform = data.eval_transform(settings.image_size)
    model.eval().to(device)
    parts: dict[str, list] = {}
    n, bs = len(imageset), max(settings.baseline_batch, 128)
    for start in range(0, n, bs):
        x = load_images(imageset, np.arange(start, min(n, start + bs)), transform, device, channels_last)
        with autocast(device, settings.amp):
            fmap = model.feature_map(x)
            feat = fmap.mean(dim=(2, 3))
            out = {"features": feat, "logits": model.fc(feat)}
            if outputs is not None:
                out.update(outputs(model, fmap))
        for key, value in out.items():
            parts.setdefault(key, []).append(value.float().cpu())
    return {key: torch.cat(value) for key, value in parts.items()}


def train_support_classifier(benchmark, settings: Settings, budget_s: float = 0.0) -> tuple[Classifier, dict]:
    """The CE classifier on the benchmark's support set, shared by the six post-hoc detectors."""
    torch.manual_seed(settings.seed)
    model, note = build_classifier(benchmark.num_known, settings)
    info = train_classifier(model, cross_entropy_loss, benchmark.support, settings, budget_s)
    info["weights"] = note
    return model, info

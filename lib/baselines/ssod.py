"""SSOD (ICLR 2024): self-supervised ID/OOD patches from the classifier's own feature map (SPEC 10).

The fc is applied at every location of the last feature map (a 1x1-conv view of it). A location whose
ground-truth-class probability is >= gamma is an ID patch, <= 1 - gamma an OOD patch, otherwise ignored
(masks without gradient). An OOD head (MLP -> 2 logits, index 1 = ID) learns ID vs OOD patches.
Loss = CE(class logits of the GAP feature, y) + lam * 1/2 (CE(head(ID patches), ID) + CE(head(OOD patches), OOD)),
an empty patch set contributing 0. Score = max softmax(class) * P_ID(head(GAP feature)).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lib.baselines.classifier import FEATURE_DIM, Batch, Classifier, TrainContext

GAMMA = 0.95  # patch-confidence threshold (paper: 0.95-0.99)
LAMBDA = 1.0  # weight of the OOD-head term ("loss-wise balance")
OOD, ID = 0, 1  # OOD-head logit indices


def add_ood_head(model: Classifier, hidden: int = 256) -> nn.Module:
    head = nn.Sequential(nn.Linear(FEATURE_DIM, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 2))
    model.heads["ood"] = head
    return head


def location_logits(model: Classifier, fmap: torch.Tensor) -> torch.Tensor:
    """(B,K,h,w): the fc applied at every location of the feature map (B,C,h,w)."""
    return torch.einsum("bchw,kc->bkhw", fmap, model.fc.weight) + model.fc.bias[None, :, None, None]


@torch.no_grad()
def patch_masks(gt_prob: torch.Tensor, gamma: float = GAMMA) -> tuple[torch.Tensor, torch.Tensor]:
    """(id_mask, ood_mask), bool like `gt_prob` (B,h,w): p >= gamma is ID, p <= 1 - gamma is OOD."""
    return gt_prob >= gamma, gt_prob <= 1.0 - gamma


def ssod_loss(gamma: float = GAMMA, lam: float = LAMBDA) -> Callable[[Classifier, TrainContext], Callable[[Batch], torch.Tensor]]:
    def make(model: Classifier, ctx: TrainContext) -> Callable[[Batch], torch.Tensor]:
        head = add_ood_head(model).to(ctx.device)

        def loss(batch: Batch) -> torch.Tensor:
            fmap = model.feature_map(batch.x)  # (B,C,h,w)
            cls = F.cross_entropy(model.fc(fmap.mean(dim=(2, 3))).float(), batch.y)
            with torch.no_grad():
                probs = location_logits(model, fmap).float().softmax(dim=1)
                gt = probs.gather(1, batch.y[:, None, None, None].expand(-1, 1, *probs.shape[2:]))[:, 0]
            id_mask, ood_mask = patch_masks(gt, gamma)
            patches = fmap.permute(0, 2, 3, 1)  # (B,h,w,C): one feature vector per location
            terms = []
            for mask, target in ((id_mask, ID), (ood_mask, OOD)):
                if mask.any():
                    logits = head(patches[mask]).float()
                    terms.append(F.cross_entropy(logits, torch.full((len(logits),), target, device=logits.device)))
                else:
                    terms.append(cls.new_zeros(()))
            return cls + lam * 0.5 * (terms[0] + terms[1])

        return loss

    return make


def ssod_score(class_logits: torch.Tensor, ood_logits: torch.Tensor) -> np.ndarray:
    """Normality = max_k softmax(class)_k * softmax(ood head)_ID, higher = known."""
    msp = class_logits.double().softmax(dim=1).max(dim=1).values
    return (msp * ood_logits.double().softmax(dim=1)[:, ID]).numpy()


def ood_head_outputs(model: Classifier, fmap: torch.Tensor) -> dict[str, torch.Tensor]:
    """`classifier.infer` hook: the OOD-head logits on the GAP feature."""
    return {"ood_logits": model.heads["ood"](fmap.mean(dim=(2, 3)))}

"""SSOD (ICLR 2024): self-supervised ID/OOD patches from the classifier's own feature map (docs/METHOD.md §10).

The fc is applied at every location of the last feature map (a 1x1-conv view of it). A location whose
ground-truth-class probability is >= gamma is an ID patch, <= 1 - gamma an OOD patch, otherwise ignored
(masks without gradient). An OOD head (MLP -> 2 logits, index 1 = ID) learns ID vs OOD patches.
Loss = CE(class logits of the GAP feature, y) + lam * mean over the NON-EMPTY patch sets of
CE(head(ID patches), ID) and CE(head(OOD patches), OOD): with both sets present this is the paper's
1/2 (CE_ID + CE_OOD); a batch without one set is not halved; without either, the patch term is 0.
Score = max softmax(class) * P_ID(head(GAP feature)).

Training: SSOD fine-tunes a CE classifier that already knows the support classes at SSOD's input size (`base_recipe`,
the support recipe at `input_size`), for ``settings.ssod_epochs`` at a fifth of the support lr (`recipe`). Its
self-labelling needs that: the patch labels come from the classifier's own confidence. Measured on glyph_printed
(mini, 128 px, seed 0): from a fresh fc every location is an OOD patch (p ~ 1/50 <= 1 - gamma), the head learns
"OOD" with a logit gap ~ 20, and the first ID patch to appear carries a loss ~ 20 (half of the patch term, as the
mean of a one-element set) that wrecks the classifier: support accuracy 0.13 after 10 epochs, AUROC 0.50. From
the converged CE classifier at 128 px both sets are there from the first step (64 ID and 161 OOD of 1024
locations) and the fine-tuned model keeps support accuracy 0.97 (MSP AUROC 0.977, SSOD score 0.903, the OOD
head alone 0.53 on the pooled feature: white paper is no background of another class).

Input size: SSOD needs a feature map with real locations, and the mini preset's 32 px with the standard stem
(stride 32) leaves a 1x1 map, where the one "patch" is the whole image. SSOD therefore upsamples its inputs until
the last map is MIN_MAP_SIDE x MIN_MAP_SIDE (`input_size`): 128 px with the standard stem, the small stem's 32 px
unchanged, the paper preset's 224 px (7x7) unchanged; the paper itself upsamples to 224 px "to obtain sufficient
background information". Measured by benchmarks/ssod_map_size.py (1 thread, ResNet-18, batch 32, forward +
backward): standard stem 32 px 1x1 0.13 s/step; 64 px 2x2 0.31 s; 128 px 4x4 1.17 s; 224 px 7x7 3.47 s; small
stem 32 px 4x4 1.04 s. Upsampling to 128 px costs about what the small stem does and keeps the preset's
pretrained backbone (a small stem needs its own: ImageNet's 7x7 conv1 does not fit it and the source-pretrained
backbone is built per stem); 224 px would triple the cost again for a 7x7 map.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lib.config import Settings
from lib.supervised import FEATURE_DIM, Batch, Classifier, Recipe, TrainContext, support_recipe

GAMMA = 0.95  # patch-confidence threshold (paper: 0.95-0.99)
LAMBDA = 1.0  # weight of the OOD-head term ("loss-wise balance")
OOD, ID = 0, 1  # OOD-head logit indices
MIN_MAP_SIDE = 4  # SSOD's last feature map is at least 4x4 locations (16 patches per image)


def input_size(settings: Settings) -> int:
    """SSOD's input side: ``settings.image_size`` upsampled until ResNet-18's last map (stride 8 with the small stem,
    32 with the standard one) is at least MIN_MAP_SIDE wide."""
    stride = 8 if settings.small_stem else 32
    return max(settings.image_size, MIN_MAP_SIDE * stride)


FINETUNE_LR_SCALE = 0.2  # SSOD's fine-tuning lr = this x the support recipe's (0.01 at the mini preset's 0.05)


def base_recipe(settings: Settings) -> Recipe:
    """The CE classifier SSOD starts from: the support-set recipe at SSOD's input size."""
    return support_recipe(settings, image_size=input_size(settings))


def recipe(settings: Settings) -> Recipe:
    """SSOD's fine-tuning recipe: ``settings.ssod_epochs`` at SSOD's input size, lr scaled by FINETUNE_LR_SCALE."""
    return support_recipe(settings, image_size=input_size(settings), epochs=settings.ssod_epochs,
                          lr=settings.baseline_lr * FINETUNE_LR_SCALE)


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


def patch_sets(model: Classifier, fmap: torch.Tensor, labels: torch.Tensor, gamma: float = GAMMA
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """(ID patches (n_id,C), OOD patches (n_ood,C)): the feature vectors of the locations of `fmap` (B,C,h,w)
    whose probability of the image's label `labels` (B,) is >= gamma, resp. <= 1 - gamma (masks without gradient)."""
    with torch.no_grad():
        probs = location_logits(model, fmap).float().softmax(dim=1)
        gt = probs.gather(1, labels[:, None, None, None].expand(-1, 1, *probs.shape[2:]))[:, 0]
    id_mask, ood_mask = patch_masks(gt, gamma)
    patches = fmap.permute(0, 2, 3, 1)  # (B,h,w,C): one feature vector per location
    return patches[id_mask], patches[ood_mask]


def patch_loss(head: nn.Module, id_patches: torch.Tensor, ood_patches: torch.Tensor) -> torch.Tensor:
    """Mean over the non-empty sets of CE(head(ID patches), ID) and CE(head(OOD patches), OOD); 0 if both are empty."""
    terms = [F.cross_entropy(head(p).float(), torch.full((len(p),), target, device=p.device))
             for p, target in ((id_patches, ID), (ood_patches, OOD)) if len(p)]
    return torch.stack(terms).mean() if terms else id_patches.new_zeros((), dtype=torch.float32)


def ssod_loss(gamma: float = GAMMA, lam: float = LAMBDA) -> Callable[[Classifier, TrainContext], Callable[[Batch], torch.Tensor]]:
    def make(model: Classifier, ctx: TrainContext) -> Callable[[Batch], torch.Tensor]:
        head = add_ood_head(model).to(ctx.device)

        def loss(batch: Batch) -> torch.Tensor:
            fmap = model.feature_map(batch.x)  # (B,C,h,w)
            cls = F.cross_entropy(model.fc(fmap.mean(dim=(2, 3))).float(), batch.y)
            return cls + lam * patch_loss(head, *patch_sets(model, fmap, batch.y, gamma))

        return loss

    return make


def ssod_score(class_logits: torch.Tensor, ood_logits: torch.Tensor) -> np.ndarray:
    """Normality = max_k softmax(class)_k * softmax(ood head)_ID, higher = known."""
    msp = class_logits.double().softmax(dim=1).max(dim=1).values
    return (msp * ood_logits.double().softmax(dim=1)[:, ID]).numpy()


def ood_head_outputs(model: Classifier, fmap: torch.Tensor) -> dict[str, torch.Tensor]:
    """`lib.supervised.infer` hook: the OOD-head logits on the GAP feature."""
    return {"ood_logits": model.heads["ood"](fmap.mean(dim=(2, 3)))}

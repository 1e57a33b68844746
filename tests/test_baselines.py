"""Comparison methods (lib/baselines): every loss and score on hand-worked tensors, the recipes, the budget stop,
the training criterion, mean ± std over seeds, the ReSeND rows, and a tiny end-to-end run of every registered
method (16 px images, a few steps, CPU); SSOD's patches on a real batch of glyph images."""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from lib import baselines, config, data, supervised
from lib.baselines import classifier as clf
from lib.baselines import mixoe, posthoc, reweightood, ssod
from lib.data import Benchmark, TensorImageSet
from lib.paths import REPO_ROOT


def sigmoid(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-v))


# ---------------------------------------------------------------- tiny data / model
def class_images(labels, size=16, seed=0):
    """Class c = a bright square in quadrant c on noise, so a classifier can learn something in a few steps."""
    g = torch.Generator().manual_seed(seed)
    imgs = torch.randint(0, 60, (len(labels), 3, size, size), generator=g, dtype=torch.uint8)
    h = size // 2
    for i, c in enumerate(labels):
        r, q = divmod(int(c) % 4, 2)
        imgs[i, :, r * h:(r + 1) * h, q * h:(q + 1) * h] = 220
    return imgs


@pytest.fixture(scope="module")
def bench():
    sup_labels = np.repeat([0, 1], 12)
    test_labels = np.repeat([0, 1, 2], 6)
    return Benchmark("fake", "intra", TensorImageSet(class_images(sup_labels), sup_labels),
                     TensorImageSet(class_images(test_labels, seed=1), test_labels), 2, "toy", "toy")


@pytest.fixture(scope="module")
def outliers():
    labels = np.full(12, 3)
    return TensorImageSet(class_images(labels, seed=2), labels)


@pytest.fixture(scope="module")
def settings():
    return config.resolve("smoke", image_size=16, baseline_batch=8, baseline_epochs=1, device="cpu")


def tiny_classifier(num_classes=2):
    """A 1-conv trunk with the ResNet feature width: 16 px -> (B,512,4,4)."""
    torch.manual_seed(0)
    return supervised.Classifier(nn.Sequential(nn.Conv2d(3, supervised.FEATURE_DIM, 4, stride=4), nn.ReLU()), num_classes)


# ---------------------------------------------------------------- SSOD
def test_ssod_masks_on_a_known_confidence_map():
    # 2x2 feature map of 2 channels, fc = identity, so each location's class logits ARE its features.
    # p(class 0) = softmax: (0,0) [5,0] -> e^5/(e^5+1) = .9933 >= .95 ID;  (0,1) [0,0] -> .5 ignored;
    #                       (1,0) [0,5] -> 1/(1+e^5) = .0067 <= .05 OOD;   (1,1) [3,0] -> e^3/(e^3+1) = .9526 ID
    model = supervised.Classifier(nn.Identity(), 2)
    model.fc = nn.Linear(2, 2)
    with torch.no_grad():
        model.fc.weight.copy_(torch.eye(2))
        model.fc.bias.zero_()
    fmap = torch.tensor([[[5.0, 0.0], [0.0, 3.0]], [[0.0, 0.0], [5.0, 0.0]]])[None]  # (1,C=2,2,2)
    gt_prob = ssod.location_logits(model, fmap).softmax(dim=1)[:, 0]  # ground truth y = 0
    assert torch.allclose(gt_prob[0], torch.tensor([[0.99331, 0.5], [0.00669, 0.95257]]), atol=1e-4)
    id_mask, ood_mask = ssod.patch_masks(gt_prob, gamma=0.95)
    assert id_mask[0].tolist() == [[True, False], [False, True]]
    assert ood_mask[0].tolist() == [[False, False], [True, False]]
    # gamma .99: (1,1) at .9526 is no longer confident -> ignored
    assert ssod.patch_masks(gt_prob, gamma=0.99)[0][0].tolist() == [[True, False], [False, False]]


def test_ssod_score_is_msp_times_p_id():
    # class softmax([ln3, 0]) = [.75, .25] -> MSP .75; OOD head softmax([0, ln4]) -> P_ID (index 1) = 4/5 -> .75*.8 = .6
    # class [0,0] -> .5; head [0,0] -> .5 -> .25
    score = ssod.ssod_score(torch.tensor([[math.log(3), 0.0], [0.0, 0.0]]), torch.tensor([[0.0, math.log(4)], [0.0, 0.0]]))
    assert np.allclose(score, [0.6, 0.25])


def test_ssod_loss_with_empty_patch_sets_is_plain_ce():
    # gamma 1.5: no location has p >= 1.5 (ID) or p <= -0.5 (OOD) -> both patch terms are 0
    model = tiny_classifier()
    ctx = supervised.TrainContext(torch.device("cpu"), None, False, 2, np.random.default_rng(0))
    loss = ssod.ssod_loss(gamma=1.5)(model, ctx)
    batch = supervised.Batch(torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 0, 1]))
    expected = nn.functional.cross_entropy(model(batch.x), batch.y)
    assert torch.allclose(loss(batch), expected)
    # gamma .5: every location is ID (p >= .5) or OOD (p <= .5): the patch term is added, loss is finite and larger
    full = ssod.ssod_loss(gamma=0.5)(tiny_classifier(), ctx)(batch)
    assert torch.isfinite(full) and full > expected


def test_ssod_patch_term_averages_only_the_non_empty_sets():
    # hand-made 2x2 map, fc = identity, y = 0: locations [5,0] (p .9933) and [3,0] (p .9526) are ID, [0,0] (p .5)
    # ignored; the head is a Linear(2,2) with zero weight and bias [0, ln 3]: every patch gets P(ID) = 3/4
    model = supervised.Classifier(nn.Identity(), 2)
    model.fc = nn.Linear(2, 2)
    head = nn.Linear(2, 2)
    with torch.no_grad():
        model.fc.weight.copy_(torch.eye(2))
        model.fc.bias.zero_()
        head.weight.zero_()
        head.bias.copy_(torch.tensor([0.0, math.log(3)]))
    fmap = torch.tensor([[[5.0, 0.0], [0.0, 3.0]], [[0.0, 0.0], [0.0, 0.0]]])[None]  # (1,C=2,2,2): no OOD location
    id_patches, ood_patches = ssod.patch_sets(model, fmap, torch.tensor([0]))
    assert torch.equal(id_patches, torch.tensor([[5.0, 0.0], [3.0, 0.0]])) and ood_patches.shape == (0, 2)
    ce_id, ce_ood = -math.log(0.75), -math.log(0.25)  # .2877, 1.3863
    # only ID patches: the ID term alone, NOT halved (1/2 * .2877 would be the old rule)
    assert math.isclose(ssod.patch_loss(head, id_patches, ood_patches).item(), ce_id, rel_tol=1e-6)
    # only OOD patches ([0,5] -> p(y=0) = .0067 <= .05): the OOD term alone
    ood_only = ssod.patch_sets(model, torch.tensor([[[0.0]], [[5.0]]])[None], torch.tensor([0]))
    assert len(ood_only[0]) == 0 and len(ood_only[1]) == 1
    assert math.isclose(ssod.patch_loss(head, *ood_only).item(), ce_ood, rel_tol=1e-6)
    # both present: the paper's 1/2 (CE_ID + CE_OOD) = .8370; neither: 0
    both = ssod.patch_loss(head, id_patches, ood_only[1])
    assert math.isclose(both.item(), 0.5 * (ce_id + ce_ood), rel_tol=1e-6)
    assert ssod.patch_loss(head, id_patches[:0], ood_patches).item() == 0.0


@pytest.mark.parametrize(("overrides", "size"), [({}, 128), ({"small_stem": True}, 32), ({"image_size": 224}, 224),
                                                 ({"image_size": 64, "small_stem": True}, 64)])
def test_ssod_input_size_gives_at_least_a_4x4_map(overrides, size):
    # standard stem: stride 32 -> 4 * 32 = 128 px; small stem: stride 8 -> 32 px; larger inputs stay as they are
    settings = config.resolve("mini", say=lambda _: None, **overrides)
    assert ssod.input_size(settings) == size and ssod.recipe(settings).image_size == size


def test_ssod_on_real_glyph_images_has_locations_and_both_patch_sets():
    # the mini preset's data and stem (random init, so no pretraining is built): at 32 px the map is 1x1 (not SSOD);
    # at SSOD's input size it is 4x4, and once the fc separates the batch (fitted on the GAP features, as the CE term
    # does) some locations are confident (ID) and some are not the image's class at all (OOD: the empty background)
    torch.manual_seed(0)
    settings = config.resolve("mini", pretrained="none", device="cpu", say=lambda _: None)
    bench = data.load_benchmark("glyph_printed", settings)
    idx = np.concatenate([np.flatnonzero(bench.support.labels == c)[:2] for c in range(10)])
    labels = torch.as_tensor(bench.support.labels[idx])
    model, _ = clf.build_classifier(bench.num_known, settings)
    model.eval()
    with torch.no_grad():
        assert model.feature_map(data.augment_batch(bench.support, idx[:2], data.eval_transform(32))).shape[2:] == (1, 1)
        fmap = model.feature_map(data.augment_batch(bench.support, idx, data.eval_transform(ssod.input_size(settings))))
    assert fmap.shape[2:] == (4, 4)
    opt = torch.optim.Adam(model.fc.parameters(), lr=1e-2)
    for _ in range(200):
        loss = nn.functional.cross_entropy(model.fc(fmap.mean(dim=(2, 3))), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    id_patches, ood_patches = ssod.patch_sets(model, fmap, labels)
    assert len(id_patches) > 0 and len(ood_patches) > 0 and len(id_patches) + len(ood_patches) <= 16 * len(idx)


# ---------------------------------------------------------------- MixOE
def test_mixoe_soft_targets():
    # lam .7, K 4: true class .7 + .3/4 = .775, others .3/4 = .075
    t = mixoe.soft_targets(torch.tensor([0, 2]), 0.7, 4)
    assert torch.allclose(t, torch.tensor([[0.775, 0.075, 0.075, 0.075], [0.075, 0.075, 0.775, 0.075]]))
    # soft CE of uniform logits over 4 classes = ln 4 whatever the (normalised) target
    assert math.isclose(mixoe.soft_cross_entropy(torch.zeros(2, 4), t).item(), math.log(4), rel_tol=1e-6)


def test_mixup_mix():
    # lam .25: .25*2 + .75*4 = 3.5
    assert torch.allclose(mixoe.mixup(torch.full((1, 3, 2, 2), 2.0), torch.full((1, 3, 2, 2), 4.0), 0.25), torch.tensor(3.5))


def test_cutmix_lambda_is_one_minus_box_area():
    # 8x8 image, box rows 2..6, cols 0..4 -> 16 px of 64 -> lam = 1 - 16/64 = .75
    x, x_out = torch.zeros(1, 1, 8, 8), torch.ones(1, 1, 8, 8)
    mixed, lam = mixoe.cutmix(x, x_out, (2, 6, 0, 4))
    assert lam == 0.75 and mixed.sum().item() == 16 and mixed[0, 0, 2:6, 0:4].eq(1).all()
    # random boxes: clipped to the image, lam recomputed from the real box area
    rng = np.random.default_rng(0)
    for _ in range(20):
        y0, y1, x0, x1 = mixoe.cutmix_box(8, 8, 0.75, rng)  # nominal side 8*sqrt(.25) = 4
        assert 0 <= y0 <= y1 <= 8 and 0 <= x0 <= x1 <= 8 and (y1 - y0) <= 4 and (x1 - x0) <= 4
        assert mixoe.cutmix(x, x_out, (y0, y1, x0, x1))[1] == 1 - (y1 - y0) * (x1 - x0) / 64


def test_mixoe_recipe_is_the_official_one():
    # zjysteven/MixOE train_mixoe.py defaults: 10 epochs, lr 1e-3, batch 32, wd 1e-5, cosine to 1e-6, no clipping
    r = mixoe.recipe()
    assert (r.epochs, r.lr, r.batch, r.weight_decay, r.lr_min, r.grad_clip) == (10, 1e-3, 32, 1e-5, 1e-6, 0.0)
    assert config.resolve("mini", say=lambda _: None).mixoe_epochs == 10 and config.resolve("paper").mixoe_epochs == 10
    assert config.resolve("smoke").mixoe_epochs == 1  # scaled down for the seconds-long smoke runs (config comment)
    # the schedule: 1e-3 at the start, 1e-6 at the end, their mean half-way
    assert supervised.cosine_lr(r, 0.0) == 1e-3 and math.isclose(supervised.cosine_lr(r, 1.0), 1e-6)
    assert math.isclose(supervised.cosine_lr(r, 0.5), (1e-3 + 1e-6) / 2)


def test_mixoe_loss_passes_clean_and_mixed_images_separately(outliers):
    # with batch norm in train mode, each pass normalises with its own batch statistics (official code: two net()
    # calls); replay the loss's random draws (outlier indices, then lam) with the same seed
    torch.manual_seed(0)
    trunk = nn.Sequential(nn.Conv2d(3, supervised.FEATURE_DIM, 4, stride=4), nn.BatchNorm2d(supervised.FEATURE_DIM), nn.ReLU())
    model = supervised.Classifier(trunk, 2).train()
    transform = data.eval_transform(16)
    ctx = supervised.TrainContext(torch.device("cpu"), transform, False, 2, np.random.default_rng(0))
    batch = supervised.Batch(torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 0, 1]))
    loss = mixoe.mixoe_loss("mixup", outliers)(model, ctx)(batch)
    rng = np.random.default_rng(0)
    x_out = supervised.load_images(outliers, rng.integers(len(outliers), size=4), transform, torch.device("cpu"), False)
    lam = float(rng.beta(1.0, 1.0))
    x_mix = mixoe.mixup(batch.x, x_out, lam)
    targets = mixoe.soft_targets(batch.y, lam, 2)
    separate = nn.functional.cross_entropy(model(batch.x), batch.y) + 5.0 * mixoe.soft_cross_entropy(model(x_mix), targets)
    joint = model(torch.cat([batch.x, x_mix]))
    together = nn.functional.cross_entropy(joint[:4], batch.y) + 5.0 * mixoe.soft_cross_entropy(joint[4:], targets)
    assert torch.allclose(loss, separate, rtol=1e-5) and not torch.allclose(loss, together, rtol=1e-3)


def test_no_comparison_recipe_clips_gradients(bench, settings, monkeypatch):
    recipes = [supervised.support_recipe(settings), mixoe.recipe(), ssod.recipe(settings), reweightood.recipe(settings)]
    assert all(r.grad_clip == 0.0 for r in recipes)
    calls = []
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", lambda *a, **k: calls.append(a))
    supervised.train_classifier(tiny_classifier(), supervised.cross_entropy_loss, bench.support, settings, recipe=recipes[0])
    assert calls == []
    supervised.train_classifier(tiny_classifier(), supervised.cross_entropy_loss, bench.support, settings)  # lib.pretrain's call
    assert len(calls) == 3 and calls[0][1] == supervised.PRETRAIN_GRAD_CLIP  # 3 steps, clipped as the cached backbone was


# ---------------------------------------------------------------- ReweightOOD
@pytest.mark.parametrize("s, w_pos, w_neg", [
    (0.0, sigmoid(1.0), sigmoid(-4.0)),   # .7311, .0180
    (0.5, 0.5, sigmoid(-1.5)),            # sigma(0) = .5, .1824
    (1.0, sigmoid(-1.0), sigmoid(1.0)),   # .2689, .7311
])
def test_reweight_weights(s, w_pos, w_neg):
    wp, wn = reweightood.reweight_weights(torch.tensor(s))
    assert math.isclose(wp.item(), w_pos, rel_tol=1e-6) and math.isclose(wn.item(), w_neg, rel_tol=1e-6)


def test_reweight_loss_by_hand():
    # z0=(1,0) z1=(.6,.8) [class 0], z2=(0,1) z3=(.8,.6) [class 1]. Pairs i < j, each once:
    # positives (0,1) s=.6, (2,3) s=.6; negatives (0,2) s=0, (0,3) s=.8, (1,2) s=.8, (1,3) s=.96
    z = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0], [0.8, 0.6]])
    y = torch.tensor([0, 0, 1, 1])
    tau = 0.1
    lse = lambda *v: math.log(sum(math.exp(t) for t in v))  # noqa: E731
    pos = lambda s: -sigmoid(1 - 2 * s) * s / tau  # noqa: E731  -w+ s / tau
    neg = lambda s: sigmoid(5 * s - 4) * s / tau  # noqa: E731  w- s / tau
    lse_pos = lse(pos(0.6), pos(0.6))  # -sigma(-.2)*6 + ln 2 = -2.7010 + .6931 = -2.0079
    lse_neg = lse(neg(0.0), neg(0.8), neg(0.8), neg(0.96))  # LSE(0, 4, 4, sigma(.8)*9.6 = 6.6238) = 6.7604
    expected = lse_pos + lse_neg  # 4.7525 > 0: ELU = identity
    assert math.isclose(expected, 4.7525, abs_tol=1e-3)
    assert math.isclose(reweightood.reweight_contrastive_loss(z, y, tau).item(), expected, rel_tol=1e-5)
    # collapsed classes: positives identical (s=1), negatives orthogonal (s=0), 4 negative pairs:
    # LSE_pos = -sigma(-1)*10 + ln 2 = -1.9963, LSE_neg = ln 4 = 1.3863, sum -.6100 < 0 -> ELU = e^-.6100 - 1 = -.4567
    z2 = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    expected2 = math.exp(-sigmoid(-1.0) / tau + math.log(2) + math.log(4)) - 1
    assert math.isclose(expected2, -0.4567, abs_tol=1e-3)
    assert math.isclose(reweightood.reweight_contrastive_loss(z2, y, tau).item(), expected2, rel_tol=1e-5)


def test_reweight_loss_without_negative_pairs_is_minus_one_with_zero_gradient():
    # one class: LSE over no negative pair = -inf, ELU(-inf) = -1 (the official code's value), gradient 0
    z = torch.nn.functional.normalize(torch.randn(4, 3), dim=1).requires_grad_()
    loss = reweightood.reweight_contrastive_loss(z, torch.zeros(4, dtype=torch.long))
    loss.backward()
    assert loss.item() == -1.0 and torch.equal(z.grad, torch.zeros_like(z))


def test_cider_transform_is_ciders_strong_augmentation():
    from torchvision.transforms import v2

    steps = reweightood.cider_transform(32).transforms
    crop, flip, jitter, gray = steps[:4]
    assert isinstance(crop, v2.RandomResizedCrop) and crop.scale == (0.2, 1.0) and tuple(crop.size) == (32, 32)
    assert isinstance(flip, v2.RandomHorizontalFlip) and jitter.p == 0.8 and gray.p == 0.2
    cj = jitter.transforms[0]
    assert (cj.brightness, cj.contrast, cj.saturation, cj.hue) == ((0.6, 1.4), (0.6, 1.4), (0.6, 1.4), (-0.1, 0.1))
    assert reweightood.recipe(config.resolve("smoke")).views == 2
    assert reweightood.cider_transform(32)(torch.zeros(3, 40, 40, dtype=torch.uint8)).shape == (3, 32, 32)


def test_cider_score_is_the_kth_neighbour_distance_on_normalised_features():
    # support (normalised): (1,0) [class 0], (0,1) [class 1], (1,1)/sqrt2 [class 1]; 3 images -> k = 1
    support = torch.tensor([[2.0, 0.0], [0.0, 5.0], [3.0, 3.0]])
    test = torch.tensor([[7.0, 0.0], [1.0, 1.0], [1.0, -1.0]])
    normality, predictions = reweightood.cider_normality(support, [0, 1, 1], test)
    # (1,-1)/sqrt2 is nearest to (1,0): |(1 - .7071, .7071)| = sqrt(.0858 + .5) = .7654
    assert np.allclose(normality, [0.0, 0.0, -math.sqrt((1 - 2 ** -0.5) ** 2 + 0.5)], atol=1e-6)
    assert predictions.tolist() == [0, 1, 0]
    # only directions count: rescaling any feature changes nothing
    assert np.allclose(reweightood.cider_normality(support * torch.tensor([[3.0], [0.5], [2.0]]), [0, 1, 1], 4 * test)[0],
                       normality, atol=1e-6)


def test_reweightood_score_is_mahalanobis_on_normalised_features_by_hand():
    # Support features whose norms differ wildly; normalised: class 0 at (.6,.8), (.8,.6), class 1 at (-.6,.8),
    # (-.8,.6). Means (.7,.7) and (-.7,.7); centred rows (-/+.1, +/-.1) and (+/-.1, +/-.1): tied covariance
    # sum of outer products / 4 = [[.01, 0], [0, .01]], precision 100 I.
    support = torch.tensor([[6.0, 8.0], [1.6, 1.2], [-3.0, 4.0], [-0.4, 0.3]], dtype=torch.float64)
    labels = np.array([0, 0, 1, 1])
    test = torch.tensor([[3.0, 0.0], [-7.0, 7.0]])  # normalised: (1, 0) and (-1, 1) / sqrt 2
    r = 1 / math.sqrt(2)
    d2 = np.array([[100 * (0.3 ** 2 + 0.7 ** 2), 100 * (1.7 ** 2 + 0.7 ** 2)],  # 58, 338
                   [100 * ((r + 0.7) ** 2 + (r - 0.7) ** 2), 200 * (r - 0.7) ** 2]])
    normality, predictions = reweightood.mahalanobis_normality(support, labels, test)
    assert np.allclose(normality, -d2.min(axis=1)) and predictions.tolist() == [0, 1]
    assert math.isclose(normality[0], -58.0) and math.isclose(normality[1], -200 * (r - 0.7) ** 2)
    # the official postprocessor, not CIDER's KNN, is the reweightood method's score (KNN: the labelled extra)
    assert baselines.METHODS["reweightood_knn"] is not baselines.METHODS["reweightood"]
    # without the normalisation the raw norms would decide: a different score
    assert not np.allclose(posthoc.mahalanobis_scores(support, labels, test)[0], normality)


def test_reweightood_recipe_warms_up_over_the_first_tenth(settings):
    recipe = reweightood.recipe(settings)
    assert recipe.warmup == 0.1 and recipe.views == 2
    lr, peak = supervised.scheduled_lr, recipe.lr
    end = supervised.cosine_lr(recipe, 0.1)  # the cosine of the whole run at the warm-up's end
    assert math.isclose(lr(recipe, 0.0), peak * supervised.WARMUP_FROM)
    assert math.isclose(lr(recipe, 0.05), (peak * supervised.WARMUP_FROM + end) / 2)  # linear: halfway at 5 %
    assert math.isclose(lr(recipe, 0.1), end) and math.isclose(lr(recipe, 0.5), supervised.cosine_lr(recipe, 0.5))
    assert supervised.scheduled_lr(supervised.support_recipe(settings), 0.0) == settings.baseline_lr  # no warm-up


def test_backbone_scores_by_hand():
    # support: class 0 at (1, 0) and (2, 0) (same direction), class 1 at (0, 3); test (0, 1) and (1, 1)
    support = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 3.0]])
    labels = np.array([0, 0, 1])
    test = torch.tensor([[0.0, 1.0], [1.0, 1.0]])
    scores = posthoc.backbone_scores(support, labels, test)
    normality, predictions = scores["knn1"]
    # normalised: (0, 1) is on class 1's support point (distance 0); (1, 1)/sqrt 2 is at distance
    # sqrt((1 - 1/sqrt 2)^2 + 1/2) = sqrt(2 - sqrt 2) from both directions (tie: the first, class 0)
    assert np.allclose(normality, [0.0, -math.sqrt(2 - math.sqrt(2))]) and predictions.tolist() == [1, 0]
    # Mahalanobis on raw features: means (1.5, 0) and (0, 3); centred (-.5, 0), (.5, 0), (0, 0) -> covariance
    # [[.5/3, 0], [0, 0]]: singular, pseudo-inverse [[6, 0], [0, 0]] (only x is spanned)
    d2 = np.array([[6 * 1.5 ** 2, 0.0], [6 * 0.5 ** 2, 6 * 1.0]])
    normality, predictions = scores["mahalanobis"]
    assert np.allclose(normality, -d2.min(axis=1)) and predictions.tolist() == [1, 0]


def test_leave_one_out_accuracy_by_hand():
    # a=(1,0) b=(1,.1) [class 0], c=(0,1) d=(1,.3) [class 1]: a->b, b->a, c->d right; d's nearest other is b
    # (cos .9817 vs a .9578): wrong -> 3/4
    feats = torch.tensor([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0], [1.0, 0.3]])
    assert reweightood.leave_one_out_accuracy(feats, [0, 0, 1, 1]) == 0.75


def test_mahalanobis_tied_covariance_2d():
    # class 0 around (0,0), class 1 around (4,0): each has scatter diag(2,2) -> tied Sigma = diag(4,4)/8 = diag(.5,.5)
    feats = torch.tensor([[0, 1], [0, -1], [1, 0], [-1, 0], [4, 1], [4, -1], [5, 0], [3, 0]], dtype=torch.float64)
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    det = posthoc.fit_mahalanobis(feats, labels)
    assert torch.allclose(det.cov.double(), torch.diag(torch.tensor([0.5, 0.5], dtype=torch.float64)), atol=1e-5)
    # (1,1): d0^2 = 2*(1+1) = 4, d1^2 = 2*(9+1) = 20; (2,0): d0^2 = d1^2 = 2*4 = 8. pytorch-ood outlier = .5*min d^2
    normality = posthoc.normality_from_outlier(det.predict_features(torch.tensor([[1.0, 1.0], [2.0, 0.0]], dtype=torch.float64)))
    assert np.allclose(normality, [-2.0, -4.0], atol=1e-4)


# ---------------------------------------------------------------- post-hoc sign convention
@pytest.mark.parametrize("name", ["msp", "maxlogit", "energy"])
def test_posthoc_logit_scores_are_normality(name):
    # a confidently classified input (logits 10,0,0) must be MORE normal than an unsure one (.1,0,0)
    out = {"logits": torch.tensor([[10.0, 0.0, 0.0], [0.1, 0.0, 0.0]])}
    n = posthoc.posthoc_normality(name, None, {}, out, None, np.zeros(1), None)
    assert n[0] > n[1]


@pytest.mark.parametrize("name", ["mahalanobis", "knn"])
def test_posthoc_feature_scores_are_normality(name):
    g = torch.Generator().manual_seed(0)
    support = {"features": torch.cat([torch.randn(60, 4, generator=g) + 5, torch.randn(60, 4, generator=g) - 5])}
    labels = np.repeat([0, 1], 60)
    test = {"features": torch.tensor([[5.0, 5, 5, 5], [-5.0, -5, -5, -5], [5.0, -5, 30, 0]])}  # in, in, far away
    n = posthoc.posthoc_normality(name, None, support, test, None, labels, None)
    assert n[0] > n[2] and n[1] > n[2]


# ---------------------------------------------------------------- training loop, budget, registry
def test_support_recipe_changes_replace_the_settings_values(settings):
    recipe = supervised.support_recipe(settings, lr=0.01, epochs=3, image_size=128)
    assert (recipe.lr, recipe.epochs, recipe.image_size) == (0.01, 3, 128)
    assert (recipe.batch, recipe.weight_decay) == (settings.baseline_batch, settings.weight_decay)
    assert supervised.support_recipe(settings).lr == settings.baseline_lr


def test_budget_stops_training_early(bench, settings):
    model = tiny_classifier()
    t0 = time.perf_counter()
    recipe = supervised.support_recipe(settings)
    info = supervised.train_classifier(model, supervised.cross_entropy_loss, bench.support, settings, budget_s=0.2, recipe=recipe)
    # no step is started that would end past the deadline (estimated from the previous steps' mean)
    assert info["budget_mode"] == 1.0 and info["train_seconds"] <= 0.2 + info["step_seconds"] + 0.05
    assert time.perf_counter() - t0 < 3.0 and info["steps"] >= 1 and info["epochs"] == info["steps"] / 3
    # converged setting: exactly epochs * (24 // 8) steps
    info = supervised.train_classifier(tiny_classifier(), supervised.cross_entropy_loss, bench.support, settings, budget_s=0.0, epochs=2,
                                recipe=recipe)
    assert info["steps"] == 6 and info["epochs"] == 2 and info["budget_mode"] == 0.0 and info["train_seconds"] > 0


def test_methods_from_spec():
    assert baselines.methods_from_spec("all") == list(baselines.METHODS) and len(baselines.METHODS) == 13
    assert baselines.methods_from_spec(" msp, ssod ") == ["msp", "ssod"]
    with pytest.raises(ValueError, match="valid ones are backbone_knn1"):
        baselines.methods_from_spec("msp,mixoe")


@pytest.fixture
def tiny_trunk(monkeypatch):
    # ResNet-18 is too slow for a unit test on a loaded CPU: swap in the tiny trunk (the real one runs in the notebook)
    monkeypatch.setattr(clf, "resnet18_trunk", lambda s: (tiny_classifier().trunk, "tiny test trunk"))


def test_every_method_end_to_end(bench, outliers, settings, tiny_trunk):
    results = baselines.run_methods(list(baselines.METHODS), bench, settings, outliers)
    assert set(results) == set(baselines.METHODS)
    for name, r in results.items():
        assert 0.0 <= r["auroc"] <= 1.0 and 0.0 <= r["fpr95"] <= 1.0 and 0.0 <= r["accuracy"] <= 1.0, name
        assert r["normality"].shape == (len(bench.test),) and np.isfinite(r["normality"]).all(), name
        assert r["spent_seconds"] >= r["train_seconds"], name  # everything spent: training, inference, scoring
        if name in baselines.BACKBONE:  # what the trained methods start from: no training on the support set
            assert (r["train_seconds"], r["steps"], r["family"]) == (0.0, 0.0, baselines.BACKBONE_FAMILY), name
            assert r["aux_data"] == baselines.NO_AUX and r["criterion_met"] is True
            continue
        assert r["train_seconds"] > 0 and r["grad_clip"] == 0.0, name
        # 24 support images: batch 8 -> 3 steps per epoch x baseline_epochs 1; MixOE: batch 32 -> one step of 24
        # images per epoch x its mixoe_epochs 1 (smoke) fine-tuning epoch
        assert r["steps"] == (1 if name in baselines.NEEDS_OUTLIERS else 3), name
        # the training criterion: stated, reached value recorded, met exactly when value >= threshold
        assert r["criterion"].endswith(">= 0.95") and 0.0 <= r["criterion_value"] <= 1.0, name
        assert r["criterion_met"] is (r["criterion_value"] >= 0.95), name
        assert r["aux_data"] == ("given outliers: 12 images of 1 classes" if name in baselines.NEEDS_OUTLIERS
                                 else baselines.NO_AUX), name
        json.dumps(baselines.record(r))  # the record is JSON-ready
    assert results["ssod"]["image_size"] == 32  # smoke: small stem, 16 px -> upsampled to 4 * 8 = 32 px
    # SSOD fine-tunes (ssod_epochs 1, lr 0.2 x baseline_lr) a CE classifier trained at its input size (1 epoch)
    ssod_run = results["ssod"]
    assert (ssod_run["base_epochs"], ssod_run["epochs"]) == (settings.baseline_epochs, settings.ssod_epochs) == (1, 1)
    assert math.isclose(ssod_run["lr"], 0.2 * settings.baseline_lr)
    assert ssod_run["train_seconds"] > ssod_run["base_train_seconds"] > 0
    assert ssod_run["weights"].startswith("support CE classifier at 32 px")
    assert results["reweightood"]["criterion"] == "support_1nn_accuracy >= 0.95" and results["reweightood"]["warmup"] == 0.1
    # its two scores share one trained network: same training record, different scores
    assert results["reweightood_knn"]["train_seconds"] == results["reweightood"]["train_seconds"]
    assert not np.array_equal(results["reweightood_knn"]["normality"], results["reweightood"]["normality"])
    # the six post-hoc detectors and converged MixOE share one classifier: identical training record
    assert len({results[n]["train_seconds"] for n in baselines.POSTHOC}) == 1
    assert results["mixoe_mixup"]["base_train_seconds"] == results["msp"]["train_seconds"]
    assert results["mixoe_mixup"]["train_seconds"] > results["msp"]["train_seconds"]


def test_seeds_and_settings_give_mean_and_std(bench, outliers, settings, tiny_trunk):
    names = ["msp", "mixoe_mixup", "ssod"]
    rows, normality = baselines.run_seeds(names, bench, settings, outliers, {"converged": 0.0, "budget": 0.3}, [0, 1])
    assert len(rows) == 2 * 2 * 3 and set(normality) == {f"{s}__seed{k}__{n}" for s in ("converged", "budget")
                                                         for k in (0, 1) for n in names}
    assert (rows["budget_mode"] == (rows["setting"] == "budget")).all()
    budget_mixoe = rows.query("setting == 'budget' and method == 'mixoe_mixup'")
    assert (budget_mixoe["base_train_seconds"] < 0.3).all()  # its own CE base on half the budget, not the shared one
    assert not np.array_equal(normality["converged__seed0__ssod"], normality["converged__seed1__ssod"])
    table = baselines.mean_std(rows)
    assert table[["method", "setting"]].values.tolist() == [[n, s] for s in ("converged", "budget") for n in names]
    ssod_rows = rows.query("setting == 'converged' and method == 'ssod'")["auroc"]
    ssod_summary = table.query("setting == 'converged' and method == 'ssod'").iloc[0]
    assert math.isclose(ssod_summary["auroc"], ssod_rows.mean()) and math.isclose(ssod_summary["auroc_std"], ssod_rows.std())
    assert (table["n_seeds"] == 2).all() and table["aux_data"].str.contains("outliers").sum() == 2


def test_mean_std_and_flat_metrics_by_hand():
    rows = pd.DataFrame({"method": ["a"] * 4, "setting": ["converged"] * 3 + ["budget"], "seed": [0, 1, 2, 0],
                         "family": "f", "aux_data": "none", "criterion": "support_accuracy >= 0.95",
                         "auroc": [0.6, 0.7, 0.8, 0.5], "criterion_value": [0.96, 0.9, 1.0, 0.5],
                         "criterion_met": [True, False, True, False]})
    table = baselines.mean_std(rows)
    conv, budget = table.iloc[0], table.iloc[1]
    # mean .7; sample std sqrt(((-.1)^2 + 0 + .1^2) / (3 - 1)) = .1; met by 2 of 3 seeds
    assert math.isclose(conv["auroc"], 0.7) and math.isclose(conv["auroc_std"], 0.1)
    assert math.isclose(conv["criterion_met"], 2 / 3) and conv["n_seeds"] == 3
    assert budget["n_seeds"] == 1 and math.isnan(budget["auroc_std"])  # one seed: no std
    flat = baselines.flat_metrics(table)
    assert math.isclose(flat["auroc__a"], 0.7) and math.isclose(flat["auroc_std__a"], 0.1)
    assert flat["auroc__a__budget"] == 0.5 and "auroc_std__a__budget" not in flat and flat["n_seeds__a"] == 3.0


def test_comparison_tables_say_which_split_the_benchmark_read(monkeypatch):
    """A real benchmark on derived lists: every row and the mean_std table say "derived split, not the paper's";
    the split is a label, not a metric (flat_metrics leaves it out)."""
    def fake_methods(names, benchmark, settings, outliers, budget_s, progress=None):
        return {n: {"family": "post-hoc", "aux_data": "none", "criterion": "c", "criterion_met": True,
                    "auroc": 0.5 + settings.seed / 10, "normality": np.zeros(2)} for n in names}

    monkeypatch.setattr(baselines, "run_methods", fake_methods)
    derived = Benchmark("pacs_ms_photo", "cross", None, None, 6, "a+c+s", "photo", split="derived")
    rows, _ = baselines.run_seeds(["msp"], derived, config.resolve("smoke"), seeds=[0, 1])
    label = "derived split, not the paper's; " + baselines.PACS_MS_DERIVED  # its support: 6 of 6 classes per domain
    assert rows["split"].tolist() == [label] * 2 and "3 of 6" in label
    table = baselines.mean_std(rows)
    assert table.loc[0, "split"] == label and math.isclose(table.loc[0, "auroc"], 0.55)
    dtd = Benchmark("dtd", "intra", None, None, 23, "images", "images", split="derived")
    assert baselines.split_label(dtd) == "derived split, not the paper's"
    assert list(table.columns[:6]) == ["method", "setting", "family", "aux_data", "criterion", "split"]
    assert not any(k.startswith("split") for k in baselines.flat_metrics(table))
    embedded = Benchmark("glyph_printed", "intra", None, None, 2, "printed", "printed")
    assert baselines.run_seeds(["msp"], embedded, config.resolve("smoke"), seeds=[0])[0]["split"].tolist() == ["embedded"]


def test_resend_rows_fixed_config_and_labelled_best(tmp_path):
    # two configs x two seeds; bce has the better mean AUROC (.85 vs .7), resend_eccv is the fixed row anyway
    for config_name, seed, auroc in [("resend_eccv", 0, 0.6), ("resend_eccv", 1, 0.8), ("bce", 0, 0.8), ("bce", 1, 0.9)]:
        run = tmp_path / f"{config_name}__seed{seed}"
        run.mkdir()
        (run / "metrics.json").write_text(json.dumps({"auroc__b": auroc, "fpr95__b": 0.5, "eval_seconds__b": 10.0 + seed}))
    (tmp_path / "comparisons_b__seed0").mkdir()  # skipped: not a ReSeND run
    assert baselines.FIXED_RESEND_CONFIG == "resend_eccv"  # the published method, the a-priori choice
    rows = baselines.resend_results(tmp_path, "b")
    assert rows["method"].tolist() == ["resend_eccv", "resend_best_of_2"] and rows["config"].tolist() == ["resend_eccv", "bce"]
    assert "chosen after seeing the study" in rows["selection"][1]
    assert math.isclose(rows["auroc"][0], 0.7) and math.isclose(rows["auroc_std"][0], math.sqrt(0.02))
    assert math.isclose(rows["auroc"][1], 0.85) and "optimistic" in rows["selection"][1] and (rows["n_seeds"] == 2).all()
    assert baselines.resend_eval_seconds(tmp_path, "b") == 10.5
    assert baselines.resend_results(tmp_path, "other").empty and baselines.resend_eval_seconds(tmp_path, "other") is None


def test_infer_features_are_float32(bench, settings):
    model = tiny_classifier()
    out = supervised.infer(model, bench.support, settings)
    x = data.augment_batch(bench.support, np.arange(len(bench.support)), data.eval_transform(settings.image_size))
    with torch.no_grad():
        expected = model.features(x.contiguous(memory_format=torch.channels_last))
    assert out["features"].dtype == torch.float32 and torch.allclose(out["features"], expected, atol=1e-6)
    # a bf16 feature would round the Mahalanobis / KNN distances: refused with the fix named
    bf16 = {"features": out["features"].bfloat16()}
    with pytest.raises(TypeError, match="feature detectors read float32 features, got torch.bfloat16"):
        posthoc.posthoc_normality("knn", model, out, bf16, None, bench.support.labels, settings)


def test_criterion_record():
    assert clf.criterion_record(0.96) == {"criterion": "support_accuracy >= 0.95", "criterion_value": 0.96,
                                          "criterion_met": True}
    assert clf.criterion_record(0.5, what="x", threshold=0.6)["criterion_met"] is False


def test_mahalanobis_on_a_singular_covariance_matches_sklearns_pseudo_inverse():
    # 12 support images in 20 dimensions (as 175-325 images in 512-d): the tied covariance has rank <= 10
    from sklearn.covariance import EmpiricalCovariance

    g = torch.Generator().manual_seed(0)
    feats = torch.randn(12, 20, generator=g, dtype=torch.float64)
    labels = torch.tensor([0] * 6 + [1] * 6)
    test = torch.randn(5, 20, generator=g, dtype=torch.float64)
    det = posthoc.fit_mahalanobis(feats, labels)
    means = torch.stack([feats[labels == c].mean(0) for c in (0, 1)])
    centred = (feats - means[labels]).numpy()
    sk = EmpiricalCovariance(assume_centered=True).fit(centred)  # its precision_ is the pseudo-inverse (pinvh)
    d2 = np.stack([sk.mahalanobis(test.numpy() - means[c].numpy()) for c in (0, 1)], axis=1)
    expected = -0.5 * d2.min(axis=1)
    assert np.linalg.matrix_rank(centred) < 20
    assert np.allclose(posthoc.normality_from_outlier(det.predict_features(test)), expected, rtol=1e-6)


@pytest.mark.parametrize(("support", "k"), [(1, 1), (175, 1), (325, 1), (1500, 2), (50_000, 50), (1_281_167, 1281)])
def test_knn_k_follows_the_papers_fraction_of_the_training_set(support, k):
    assert posthoc.knn_k(support) == k  # 50 of CIFAR-10's 50,000 = 0.1 %; at least 1, at most the support


def test_budget_settings_rule(tmp_path):
    for seed in (0, 1):  # ReSeND eval seconds 10 and 11 on benchmark b: mean 10.5
        run = tmp_path / f"mse_c10__seed{seed}"
        run.mkdir()
        (run / "metrics.json").write_text(json.dumps({"auroc__b": 0.7, "eval_seconds__b": 10.0 + seed}))
    assert baselines.budget_settings(0.0, None, "b") == (
        {"converged": 0.0}, {"comparison_budget_s": 0.0, "comparison_budget_from": "none"})  # converged only
    assert baselines.budget_settings(0.0, tmp_path, "b") == (
        {"converged": 0.0, "budget": 10.5}, {"comparison_budget_s": 10.5, "comparison_budget_from": "resend eval seconds"})
    assert baselines.budget_settings(2.5, tmp_path, "b") == (  # an explicit budget_s wins over the study's seconds
        {"converged": 0.0, "budget": 2.5}, {"comparison_budget_s": 2.5, "comparison_budget_from": "budget_s"})
    assert baselines.budget_settings(0.0, tmp_path, "other")[0] == {"converged": 0.0}  # no runs on that benchmark


def test_write_results_records_rows_arrays_and_mean_std(tmp_path):
    (tmp_path / "metrics.json").write_text(json.dumps({"kept": 1.0}))
    rows = pd.DataFrame({"method": ["a"] * 3, "setting": ["converged"] * 2 + ["budget"], "seed": [0, 1, 0],
                         "family": "f", "aux_data": "none", "criterion": "c", "auroc": [0.6, 0.8, 0.5],
                         "criterion_value": [1.0, 1.0, 0.5], "criterion_met": [True, True, False]})
    normality = {f"{s}__seed{k}__a": np.array([0.1 * k, 0.9]) for s, k in [("converged", 0), ("converged", 1), ("budget", 0)]}
    table, metrics = baselines.write_results(tmp_path, rows, normality, np.array([False, True]))
    assert table[["method", "setting"]].values.tolist() == [["a", "converged"], ["a", "budget"]]
    # converged mean (.6 + .8) / 2 = .7, sample std sqrt(2 * .1^2 / 1) = .141421; budget: one seed, no std key
    assert metrics["auroc__a"] == pytest.approx(0.7) and metrics["auroc_std__a"] == pytest.approx(0.141421, rel=1e-5)
    assert metrics["auroc__a__budget"] == 0.5 and "auroc_std__a__budget" not in metrics and metrics["kept"] == 1.0
    assert json.loads((tmp_path / "metrics.json").read_text()) == metrics
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "methods.csv"), rows)
    with np.load(tmp_path / "normality.npz") as saved:
        assert sorted(saved.files) == sorted(["is_known", *normality])
        assert saved["is_known"].tolist() == [False, True] and saved["converged__seed1__a"].dtype == np.float32
        assert np.allclose(saved["converged__seed1__a"], [0.1, 0.9])


class TickClock:
    """A fake clock: every reading advances it by `tick` seconds (a step, a timed batch cost one reading each)."""

    def __init__(self, tick=0.01):
        self.t, self.tick = 0.0, tick

    def __call__(self):
        self.t += self.tick
        return self.t


def test_no_method_exceeds_its_budget_by_more_than_one_step(bench, outliers, settings, tiny_trunk, monkeypatch):
    """Budget-matched: everything a method spends (training, its inference, scoring) is charged, and no step that
    would end past the budget is started (its cost estimated from the previous steps), on a fake clock."""
    monkeypatch.setattr(clf, "CLOCK", TickClock())
    budget = 0.25
    results = baselines.run_methods(list(baselines.METHODS), bench, settings, outliers, budget_s=budget)
    for name, r in results.items():
        assert r["budget_s"] == budget and r["spent_seconds"] > 0, name
        assert r["spent_seconds"] <= budget + r.get("step_seconds", 0.0) + 1e-9, (name, r["spent_seconds"])
        if name not in baselines.BACKBONE:
            assert r["steps"] >= 1 and r["budget_mode"] == 1.0, name
    # the two-stage methods split the training seconds by their converged epochs (SSOD: baseline 1 : ssod 1)
    ssod_run = results["ssod"]
    assert ssod_run["base_train_seconds"] > 0 and ssod_run["train_seconds"] > ssod_run["base_train_seconds"]
    # a budget the inference alone fills: no step is started, and the table reads "did not train"
    monkeypatch.setattr(clf, "CLOCK", TickClock())
    rows, _ = baselines.run_seeds(["msp", "reweightood"], bench, settings, budgets={"budget": 0.02}, seeds=[0])
    assert (rows["steps"] == 0).all() and not rows["criterion_met"].any()
    assert (rows["auroc"] == 0.5).all()  # not run on the test set: its inference would overrun the budget
    readable = baselines.readable_table(baselines.mean_std(rows))
    assert readable["AUROC"].tolist() == ["did not train (criterion met on 0 of 1 seeds)"] * 2


def test_readable_table_by_hand():
    table = pd.DataFrame({"method": ["resend_eccv", "a", "b"], "setting": ["no support training", "budget", "budget"],
                          "family": ["ReSeND", "f", "f"], "auroc": [0.9, 0.8, 0.7], "auroc_std": [0.01, 0.02, float("nan")],
                          "criterion_met": [float("nan"), 1.0, 2 / 3], "n_seeds": [2, 3, 3],
                          "eval_seconds": [1.5, float("nan"), float("nan")], "spent_seconds": [float("nan"), 1.25, 0.5]})
    readable = baselines.readable_table(table)
    assert readable["AUROC"].tolist() == ["0.900 ± 0.010", "0.800 ± 0.020", "did not train (criterion met on 2 of 3 seeds)"]
    assert readable["spent s"].tolist() == ["1.500", "1.250", "0.500"]  # ReSeND: its evaluation seconds
    text = baselines.markdown_table(table)
    assert text.startswith("Cells: mean ± sample std (ddof 1)") and "| a | budget | f |" in text


def test_saved_scores_recompute_the_tables_auroc(tmp_path, bench, outliers, settings, tiny_trunk):
    rows, normality = baselines.run_seeds(["backbone_knn1", "msp"], bench, settings, outliers, seeds=[0, 1])
    table, _ = baselines.write_results(tmp_path, rows, normality, bench.is_known())
    recomputed = baselines.recompute_auroc(tmp_path)
    assert len(recomputed) == 4 and np.allclose(recomputed["auroc"], recomputed["auroc_recomputed"], atol=1e-4)
    assert (tmp_path / "normality.npz").stat().st_size < 10_000  # float32, compressed: small enough to commit
    (tmp_path / "comparisons.csv").write_text(baselines.comparison_table(table).to_csv(index=False))
    check_recomputes_from_saved_scores(tmp_path)  # the check of committed tables


COMMITTED_TABLES = sorted(p for p in (REPO_ROOT / "outputs").glob("*/comparisons_*") if (p / "methods.csv").exists())


def check_recomputes_from_saved_scores(run_dir):
    """A comparison table: each seed's AUROC from its saved per-image scores, then the table's mean."""
    recomputed = baselines.recompute_auroc(run_dir)
    assert np.allclose(recomputed["auroc"], recomputed["auroc_recomputed"], atol=1e-4)
    means = recomputed.groupby(["method", "setting"], sort=False)["auroc_recomputed"].mean()
    table = pd.read_csv(run_dir / "comparisons.csv").dropna(subset=["setting"]).set_index(["method", "setting"])
    for key, value in means.items():
        assert math.isclose(table.loc[key, "auroc"], value, abs_tol=1e-4), key


def test_committed_comparison_tables_recompute_from_their_saved_scores():
    """Every committed comparison table comes with its per-image scores, and its AUROCs recompute from them."""
    assert COMMITTED_TABLES, "no committed comparison table under outputs/*/comparisons_*"
    for run_dir in COMMITTED_TABLES:
        assert (run_dir / baselines.NORMALITY_FILE).exists(), f"{run_dir} has a table but no {baselines.NORMALITY_FILE}"
        check_recomputes_from_saved_scores(run_dir)

"""Comparison methods (lib/baselines): every loss and score on hand-worked tensors, the budget stop, and
a tiny end-to-end run of every registered method (16 px images, a few steps, CPU)."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch
from torch import nn

from lib import baselines, config
from lib.baselines import classifier as clf
from lib.baselines import mixoe, posthoc, reweightood, ssod
from lib.data import Benchmark, TensorImageSet


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
    return clf.Classifier(nn.Sequential(nn.Conv2d(3, clf.FEATURE_DIM, 4, stride=4), nn.ReLU()), num_classes)


# ---------------------------------------------------------------- SSOD
def test_ssod_masks_on_a_known_confidence_map():
    # 2x2 feature map of 2 channels, fc = identity, so each location's class logits ARE its features.
    # p(class 0) = softmax: (0,0) [5,0] -> e^5/(e^5+1) = .9933 >= .95 ID;  (0,1) [0,0] -> .5 ignored;
    #                       (1,0) [0,5] -> 1/(1+e^5) = .0067 <= .05 OOD;   (1,1) [3,0] -> e^3/(e^3+1) = .9526 ID
    model = clf.Classifier(nn.Identity(), 2)
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
    ctx = clf.TrainContext(torch.device("cpu"), None, False, 2, np.random.default_rng(0))
    loss = ssod.ssod_loss(gamma=1.5)(model, ctx)
    batch = clf.Batch(torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 0, 1]))
    expected = nn.functional.cross_entropy(model(batch.x), batch.y)
    assert torch.allclose(loss(batch), expected)
    # gamma .5: every location is ID (p >= .5) or OOD (p <= .5): the patch term is added, loss is finite and larger
    full = ssod.ssod_loss(gamma=0.5)(tiny_classifier(), ctx)(batch)
    assert torch.isfinite(full) and full > expected


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
    # z0=(1,0) z1=(.6,.8) [class 0], z2=(0,1) z3=(.8,.6) [class 1]; s01=.6 s02=0 s03=.8 s12=.8 s13=.96 s23=.6
    z = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0], [0.8, 0.6]])
    y = torch.tensor([0, 0, 1, 1])
    tau = 0.1
    pos = -sigmoid(1 - 2 * 0.6) * 0.6 / tau  # every anchor's single positive has s = .6: -sigma(-.2)*6 = -2.7010
    neg_a = lambda s: sigmoid(5 * s - 4) * s / tau  # noqa: E731
    lse = lambda *v: math.log(sum(math.exp(t) for t in v))  # noqa: E731
    # anchors 0 and 2: negatives s = 0, .8 -> LSE(0, .5*8) = 4.0181; anchors 1 and 3: s = .8, .96 -> LSE(4, 6.6237) = 6.6937
    t02 = pos + lse(neg_a(0.0), neg_a(0.8))  # 1.3171 > 0: ELU = identity
    t13 = pos + lse(neg_a(0.8), neg_a(0.96))  # 3.9927
    expected = (t02 + t13) / 2  # 2.6549
    assert math.isclose(expected, 2.6549, abs_tol=1e-3)
    assert math.isclose(reweightood.reweight_contrastive_loss(z, y, tau).item(), expected, rel_tol=1e-5)
    # collapsed classes: positives identical (s=1), negatives orthogonal (s=0):
    # term = -sigma(-1)*10 + LSE(0,0) = -2.689 + ln2 = -1.996 < 0 -> ELU = e^-1.996 - 1 = -.8641
    z2 = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    expected2 = math.exp(-sigmoid(-1.0) / tau + math.log(2)) - 1
    assert math.isclose(reweightood.reweight_contrastive_loss(z2, y, tau).item(), expected2, rel_tol=1e-5)


def test_mahalanobis_tied_covariance_2d():
    # class 0 around (0,0), class 1 around (4,0): each has scatter diag(2,2) -> tied Sigma = diag(4,4)/8 = diag(.5,.5)
    feats = torch.tensor([[0, 1], [0, -1], [1, 0], [-1, 0], [4, 1], [4, -1], [5, 0], [3, 0]], dtype=torch.float64)
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    det = posthoc.fit_mahalanobis(feats, labels)
    assert torch.allclose(det.cov.double(), torch.diag(torch.tensor([0.5, 0.5], dtype=torch.float64)), atol=1e-5)
    # (1,1): d0^2 = 2*(1+1) = 4, d1^2 = 2*(9+1) = 20; (2,0): d0^2 = d1^2 = 2*4 = 8. pytorch-ood outlier = .5*min d^2
    normality = posthoc.normality_from_outlier(det.predict_features(torch.tensor([[1.0, 1.0], [2.0, 0.0]], dtype=torch.float64)))
    assert np.allclose(normality, [-2.0, -4.0], atol=1e-4)
    # ReweightOOD's version works on L2-normalised features: any positive rescaling gives the same result
    test = torch.tensor([[1.0, 0.2], [0.0, 1.0]], dtype=torch.float64)
    a = reweightood.mahalanobis_normality(feats + 0.5, labels, test)
    b = reweightood.mahalanobis_normality(3 * (feats + 0.5), labels, 5 * test)
    assert np.allclose(a[0], b[0]) and (a[1] == b[1]).all()


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
def test_budget_stops_training_early(bench, settings):
    model = tiny_classifier()
    t0 = time.perf_counter()
    info = clf.train_classifier(model, clf.cross_entropy_loss, bench.support, settings, budget_s=0.2)
    assert info["budget_mode"] == 1.0 and 0.2 <= info["train_seconds"] < 0.2 + 2.0
    assert time.perf_counter() - t0 < 3.0 and info["steps"] >= 1 and info["epochs"] == info["steps"] / 3
    # converged setting: exactly epochs * (24 // 8) steps
    info = clf.train_classifier(tiny_classifier(), clf.cross_entropy_loss, bench.support, settings, budget_s=0.0, epochs=2)
    assert info["steps"] == 6 and info["epochs"] == 2 and info["budget_mode"] == 0.0 and info["train_seconds"] > 0


def test_methods_from_spec():
    assert baselines.methods_from_spec("all") == list(baselines.METHODS) and len(baselines.METHODS) == 10
    assert baselines.methods_from_spec(" msp, ssod ") == ["msp", "ssod"]
    with pytest.raises(ValueError, match="valid ones are msp"):
        baselines.methods_from_spec("msp,mixoe")


def test_every_method_end_to_end(bench, outliers, settings, monkeypatch):
    # ResNet-18 is too slow for a unit test on a loaded CPU: swap in the tiny trunk (the real one runs in the notebook)
    monkeypatch.setattr(clf, "resnet18_trunk", lambda s: (tiny_classifier().trunk, "tiny test trunk"))
    results = baselines.run_methods(list(baselines.METHODS), bench, settings, outliers)
    assert set(results) == set(baselines.METHODS)
    for name, r in results.items():
        assert 0.0 <= r["auroc"] <= 1.0 and 0.0 <= r["fpr95"] <= 1.0 and 0.0 <= r["accuracy"] <= 1.0, name
        assert r["normality"].shape == (len(bench.test),) and np.isfinite(r["normality"]).all(), name
        assert r["steps"] == 3 and r["train_seconds"] > 0, name
    # the six post-hoc detectors share one classifier: identical training record and predictions
    assert len({results[n]["train_seconds"] for n in baselines.POSTHOC}) == 1
    flat = baselines.flat_metrics(results)
    assert "auroc__ssod" in flat and "train_seconds__mixoe_cutmix" in flat and "accuracy__msp" in flat


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

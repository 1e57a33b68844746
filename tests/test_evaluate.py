"""Novelty metrics on hand-worked score vectors (ties included), prototypes, batched scoring invariants, errors."""

import math

import numpy as np
import pytest
import torch

from conftest import CELL_TIMEOUT
from lib import checkpoints, config, evaluate, features, metrics
from lib.data import Benchmark, TensorImageSet

# ----------------------------------------------------------------------------- metrics, hand-worked
# known scores 0.9 0.8 0.7 0.6, unknown 0.75 0.5 0.4 (no ties)
S1 = np.array([0.9, 0.8, 0.7, 0.6, 0.75, 0.5, 0.4])
K1 = np.array([1, 1, 1, 1, 0, 0, 0], dtype=bool)


def test_metrics_hand_worked_without_ties():
    m = metrics.novelty_metrics(S1, K1)
    # AUROC: known > unknown in 3 + 3 + 2 + 2 = 10 of the 4 * 3 = 12 pairs
    assert m["auroc"] == pytest.approx(10 / 12)
    # FPR95: k = ceil(0.95 * 4) = 4 -> threshold = 4th largest known = 0.6; unknown >= 0.6: {0.75} -> 1/3
    assert m["fpr95"] == pytest.approx(1 / 3)
    # FPR95-OOD (unknown = positive): k = ceil(0.95 * 3) = 3 -> u = 3rd lowest unknown = 0.75; known <= 0.75:
    # {0.7, 0.6} -> 2/4, not our 1/3
    assert m["fpr95_ood"] == pytest.approx(0.5)
    # AUPR-in (AP): ranking 0.9K 0.8K 0.75U 0.7K 0.6K ...; precision at each known: 1, 1, 3/4, 4/5
    assert m["aupr_in"] == pytest.approx((1 + 1 + 0.75 + 0.8) / 4)
    # AUPR-out on -score: ranking 0.4U 0.5U 0.6K 0.7K 0.75U; precision at each unknown: 1, 1, 3/5
    assert m["aupr_out"] == pytest.approx((1 + 1 + 0.6) / 3)
    assert np.isnan(m["accuracy"])


def test_metrics_hand_worked_with_ties():
    # known 0.8 0.5, unknown 0.5 0.2: pairs (0.8>0.5) (0.8>0.2) (0.5=0.5 counts 1/2) (0.5>0.2) -> 3.5 / 4
    s, k = np.array([0.8, 0.5, 0.5, 0.2]), np.array([1, 1, 0, 0], dtype=bool)
    m = metrics.novelty_metrics(s, k)
    assert m["auroc"] == pytest.approx(3.5 / 4)
    # k = ceil(0.95 * 2) = 2 -> threshold 0.5; the tied unknown 0.5 is accepted -> 1/2
    assert m["fpr95"] == pytest.approx(0.5)
    # AP: threshold 0.8 -> P 1, R 1/2; threshold 0.5 (tie block K+U) -> P 2/3, R 1: 1/2*1 + 1/2*2/3
    assert m["aupr_in"] == pytest.approx(0.5 + 1 / 3)
    assert m["aupr_out"] == pytest.approx(0.5 + 1 / 3)


def test_fpr95_ties_at_threshold_accept_more_than_95_percent():
    # 20 known: 10 at 0.9, 10 at 0.6. k = ceil(0.95 * 20) = 19 -> threshold = 19th largest = 0.6, which accepts
    # all 20 known (100 % >= 95 %). Unknown 0.6 0.7 0.3 0.95: >= 0.6 -> 3 of 4.
    s = np.array([0.9] * 10 + [0.6] * 10 + [0.6, 0.7, 0.3, 0.95])
    k = np.arange(24) < 20
    assert metrics.fpr_at_95_known(s, k) == pytest.approx(0.75)
    # 19 known at 0.8 and 1 at 0.2: threshold = 19th largest = 0.8; unknown 0.8 0.8 0.5 0.1 -> 2 of 4
    s = np.array([0.8] * 19 + [0.2] + [0.8, 0.8, 0.5, 0.1])
    assert metrics.fpr_at_95_known(s, np.arange(24) < 20) == pytest.approx(0.5)


def test_fpr95_differs_from_pytorch_ood_convention():
    """pytorch-ood (like OpenOOD) takes OOD as positive and reports the FPR of *known* images at 95 % TPR of
    *unknown* detection. On S1: it must flag all 3 unknowns (ceil(0.95 * 3) = 3), i.e. outlier threshold at
    -0.75, which also flags knowns 0.7 and 0.6 -> 2/4 = 0.5. Ours (unknown accepted at 95 % known accepted) is 1/3."""
    from pytorch_ood.metrics import OODMetrics

    ood = OODMetrics()
    ood.update(torch.tensor(-S1), torch.tensor(np.where(K1, 0, -1)))
    theirs = ood.compute()
    assert theirs["FPR95TPR"] == pytest.approx(0.5)
    assert metrics.novelty_metrics(S1, K1)["fpr95"] == pytest.approx(1 / 3)
    assert metrics.novelty_metrics(S1, K1)["fpr95_ood"] == pytest.approx(float(theirs["FPR95TPR"]))
    assert theirs["AUROC"] == pytest.approx(metrics.novelty_metrics(S1, K1)["auroc"])  # AUROC is symmetric


def test_fpr95_ood_ties_hand_worked_and_as_pytorch_ood():
    """20 unknown: 10 at 0.1, 10 at 0.4; known 0.9 0.4 0.3 0.05. fpr95_ood: k = ceil(0.95 * 20) = 19 -> u = 19th
    lowest unknown = 0.4 (the tie flags all 20); known <= 0.4: 0.4, 0.3, 0.05 -> 3/4. fpr95 (ours): k = ceil(3.8) = 4
    -> threshold 0.05 accepts every unknown -> 1. pytorch-ood's FPR95TPR on -normality agrees with fpr95_ood."""
    from pytorch_ood.metrics import OODMetrics

    s = np.array([0.1] * 10 + [0.4] * 10 + [0.9, 0.4, 0.3, 0.05])
    k = np.arange(24) >= 20
    m = metrics.novelty_metrics(s, k)
    assert m["fpr95_ood"] == pytest.approx(0.75) and m["fpr95"] == pytest.approx(1.0)
    ood = OODMetrics()
    ood.update(torch.tensor(-s), torch.tensor(np.where(k, 0, -1)))
    assert float(ood.compute()["FPR95TPR"]) == pytest.approx(m["fpr95_ood"])


def test_fpr95_reference_rule_hand_worked():
    """The reference code's FPR95: the ROC point whose known recall is nearest 0.95 (lowest threshold on ties)."""
    # 12 known at 1..12, unknown 0.5 1 1 2.5 3. Ours: k = ceil(0.95 * 12) = ceil(11.4) = 12 -> t = 1 (recall 12/12);
    # unknown >= 1: 1, 1, 2.5, 3 -> 4/5. Reference: recall 11/12 = .917 (t = 2) is nearer .95 (.033) than 12/12
    # (.05) -> unknown >= 2: 2.5, 3 -> 2/5. One known image (1/n_known of recall) apart.
    s = np.array([*range(1, 13), 0.5, 1.0, 1.0, 2.5, 3.0], dtype=float)
    k = np.arange(17) < 12
    assert metrics.fpr_at_95_known(s, k) == pytest.approx(4 / 5)
    assert metrics.fpr95_reference(s, k) == pytest.approx(2 / 5)
    # same known, unknown 1 1.5 1.7: recall 11/12 holds for t = 1.5, 1.7 and 2; the lowest, 1.5, accepts 1.5 and
    # 1.7 -> 2/3 (the highest, t = 2, would give 0). Ours: t = 1 accepts all three -> 1.
    s, k = np.array([*range(1, 13), 1.0, 1.5, 1.7], dtype=float), np.arange(15) < 12
    assert metrics.fpr95_reference(s, k) == pytest.approx(2 / 3)
    assert metrics.fpr_at_95_known(s, k) == pytest.approx(1.0)
    # 10 known at 1..10, unknown 1 1.5: recall .9 and 1 are both .05 from .95, but in float |.9 - .95| is the
    # smaller, so recall .9 wins: lowest such t = 1.5 -> 1/2. Ours: ceil(9.5) = 10 -> t = 1 -> 2/2.
    s, k = np.array([*range(1, 11), 1.0, 1.5], dtype=float), np.arange(12) < 10
    assert metrics.fpr95_reference(s, k) == pytest.approx(0.5) and metrics.fpr_at_95_known(s, k) == 1.0
    # S1 (4 known): ours t = 0.6 (recall 1) -> 1/3; reference: recall 3/4 (.2 away) vs 1 (.05) -> same t, 1/3
    assert metrics.fpr95_reference(S1, K1) == pytest.approx(1 / 3)
    assert "fpr95_reference" not in metrics.novelty_metrics(S1, K1)  # not a recorded metric


def test_fpr95_reference_matches_sklearn_roc_points():
    from sklearn.metrics import roc_curve

    rng = np.random.default_rng(0)
    for n_known in (7, 10, 12, 33, 50):
        s = np.round(rng.normal(size=n_known + 40), 1)  # rounded: ties between and within the groups
        k = np.arange(len(s)) < n_known
        fpr, tpr, thresholds = roc_curve(k, s, drop_intermediate=False)  # thresholds decreasing
        keep = thresholds >= s[k].min()  # the reference's curve ends where recall reaches 1
        distance = np.abs(tpr[keep] - 0.95)
        lowest_nearest = np.flatnonzero(distance == distance.min())[-1]
        assert metrics.fpr95_reference(s, k) == pytest.approx(fpr[keep][lowest_nearest])


def test_accuracy_on_known_only():
    preds = np.array([0, 1, 2, 2, 0, 0, 0])
    labels = np.array([0, 1, 1, 2, 5, 6, 7])  # the unknown rows are ignored
    assert metrics.novelty_metrics(S1, K1, preds, labels)["accuracy"] == pytest.approx(3 / 4)


def test_metric_errors():
    with pytest.raises(ValueError, match="no unknown test images"):
        metrics.novelty_metrics(np.array([0.2, 0.3]), np.array([True, True]))
    with pytest.raises(ValueError, match="no known test images"):
        metrics.novelty_metrics(np.array([0.2, 0.3]), np.array([False, False]))
    with pytest.raises(ValueError, match="NaN"):
        metrics.novelty_metrics(np.array([np.nan, 0.3]), np.array([True, False]))


def test_perfect_and_inverted_detector():
    k = np.array([1, 1, 1, 0, 0], dtype=bool)
    good = metrics.novelty_metrics(np.array([0.9, 0.8, 0.7, 0.2, 0.1]), k)
    assert good["auroc"] == 1.0 and good["fpr95"] == 0.0 and good["aupr_in"] == 1.0 and good["aupr_out"] == 1.0
    bad = metrics.novelty_metrics(np.array([0.1, 0.2, 0.3, 0.8, 0.9]), k)
    assert bad["auroc"] == 0.0 and bad["fpr95"] == 1.0


# ----------------------------------------------------------------------------- prototypes
def test_kcenter_picks_spread_points():
    feats = torch.tensor([[0.0, 0.0], [0.1, 0.0], [10.0, 0.0], [0.0, 10.0], [0.05, 0.05]])
    chosen = evaluate.kcenter_indices(feats, 3)
    assert len(set(chosen)) == 3 and {2, 3} <= set(chosen)
    assert len(evaluate.kcenter_indices(feats[:2], 5)) == 2  # K capped by the class size


def test_build_prototypes_and_class_scores():
    feats = torch.arange(12.0).view(6, 2)
    labels = np.array([0, 0, 0, 1, 1, 1])
    protos, owners = evaluate.build_prototypes(feats, labels, 2, "mean")
    assert torch.allclose(protos, torch.tensor([[2.0, 3.0], [8.0, 9.0]])) and owners.tolist() == [0, 1]
    protos, owners = evaluate.build_prototypes(feats, labels, 2, "knn")
    assert len(protos) == 6 and torch.equal(protos, evaluate.build_prototypes(feats, labels, 2, "knn_class")[0])
    sims = torch.tensor([[1.0, 2.0, 3.0, 9.0, 0.0, 0.0]])
    # knn k=2: class 0 -> mean(3, 2) = 2.5, class 1 -> mean(9, 0) = 4.5 ; kcenter-style max: 3, 9
    assert evaluate.class_scores(sims, owners, 2, "knn", 2).tolist() == [[2.5, 4.5]]
    assert evaluate.class_scores(sims, owners, 2, "knn_class", 2).tolist() == [[2.5, 4.5]]
    assert evaluate.class_scores(sims, owners, 2, "kcenter").tolist() == [[3.0, 9.0]]
    with pytest.raises(ValueError, match="1 class"):
        evaluate.build_prototypes(feats, np.zeros(6, dtype=int), 1, "mean")
    with pytest.raises(ValueError, match="no support images"):
        evaluate.build_prototypes(feats, labels, 3, "mean")


def test_knn_normality_reference_and_per_class_hand_worked():
    """knn (reference): normality = mean of the top-k similarities to ALL support samples, no softmax;
    knn_class: softmax over the per-class top-k means. Both predict the argmax of the per-class means."""
    owners = np.array([0, 0, 0, 1, 1, 1])
    sims = torch.tensor([[1.0, 2.0, 3.0, 9.0, 0.0, 0.0],   # one very similar support image of class 1
                         [5.0, 5.0, 5.0, 0.0, 0.0, 0.0]])  # uniformly similar to class 0
    # knn k=2: row 0 -> top-2 of all = 9, 3 -> 6; row 1 -> 5, 5 -> 5
    assert evaluate.knn_normality(sims, 2).tolist() == [6.0, 5.0]
    assert evaluate.knn_normality(sims, 10).tolist() == pytest.approx([15 / 6, 15 / 6])  # k capped at M = 6
    # knn_class k=2: class means row 0 = [2.5, 4.5] -> max softmax 1 / (1 + e^-2) = 0.880797;
    # row 1 = [5, 0] -> 1 / (1 + e^-5) = 0.993307. The two rules rank the rows in opposite order.
    scores = evaluate.class_scores(sims, owners, 2, "knn_class", 2)
    per_class = torch.softmax(scores.double(), dim=1).max(1).values
    assert per_class.tolist() == pytest.approx([1 / (1 + math.exp(-2)), 1 / (1 + math.exp(-5))])
    assert scores.argmax(1).tolist() == [1, 0]


def test_average_metrics_and_table():
    per = {"a": dict(auroc=0.8, fpr95=0.4, fpr95_ood=0.3, aupr_in=0.7, aupr_out=0.6, accuracy=0.9),
           "b": dict(auroc=0.6, fpr95=0.6, fpr95_ood=0.5, aupr_in=0.5, aupr_out=0.4, accuracy=0.7),
           "c": dict(auroc=0.5, fpr95=1.0, fpr95_ood=0.9, aupr_in=0.5, aupr_out=0.5, accuracy=0.5)}
    flat = metrics.average_metrics(per, {"a": "intra", "b": "intra", "c": "cross"})
    assert flat["auroc__a"] == 0.8 and flat["auroc__intra_avg"] == pytest.approx(0.7)
    assert flat["fpr95__cross_avg"] == 1.0 and flat["auroc__avg"] == pytest.approx(1.9 / 3)
    assert flat["fpr95_ood__intra_avg"] == pytest.approx(0.4)
    table = evaluate.paper_table(flat, ["a", "b", "c"])
    assert list(table.columns) == ["AUROC", "FPR95"] and list(table.index) == ["a", "b", "c", "intra_avg",
                                                                             "cross_avg", "avg"]


# ----------------------------------------------------------------------------- scoring with a tiny model
class ToyRelational(torch.nn.Module):
    """Same interface as lib.model.ReSeND, a few hundred parameters (used when lib.model is not importable)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.up = torch.nn.Linear(4, 512)
        self.proj = torch.nn.Linear(512, 8)
        self.head = torch.nn.Linear(8, 1)

    def features(self, x):
        return self.up(self.conv(x).mean((2, 3)))

    def relate(self, fa, fb, return_repr=False):
        rep = torch.tanh(self.proj(fa) + self.proj(fb)) * self.proj(fa * fb)
        out = self.head(rep)
        return (out, rep) if return_repr else out


class FirstLogit:
    out_dim = 1

    def similarity(self, out):
        return out[:, 0]


def tiny_model():
    """A tiny lib.model.ReSeND (d_model 16, 1 block, small stem) when available, else ToyRelational."""
    try:
        from lib import model as model_lib, objectives, pretrain

        cfg = config.resolve("smoke", d_model=16, n_heads=2, n_blocks=1, head_hidden=8, image_size=16,
                             pretrained="none", device="cpu")
        objective = objectives.make(cfg.loss, **cfg.objective_params())
        torch.manual_seed(0)
        model, _ = model_lib.build(cfg, objective.out_dim, pretrain.backbone_weights(cfg))
        return model.eval(), objective
    except ImportError:
        return ToyRelational().eval(), FirstLogit()


def toy_benchmark(seed=0, n_known=3, n_unknown=2, per_class=4, size=16):
    gen = torch.Generator().manual_seed(seed)
    labels_s = np.repeat(np.arange(n_known), per_class)
    labels_t = np.repeat(np.arange(n_known + n_unknown), 3)
    base = torch.randint(0, 256, (n_known + n_unknown, 3, size, size), generator=gen)
    noise = lambda n: torch.randint(-20, 21, (n, 3, size, size), generator=gen)  # noqa: E731
    support = (base[labels_s] + noise(len(labels_s))).clamp(0, 255).to(torch.uint8)
    test = (base[labels_t] + noise(len(labels_t))).clamp(0, 255).to(torch.uint8)
    return Benchmark("toy", "intra", TensorImageSet(support, labels_s), TensorImageSet(test, labels_t), n_known, "toy", "toy")


@pytest.fixture(scope="module")
def tiny():
    pytest.importorskip("lib.data")
    return tiny_model()


def settings(**kw):
    return config.resolve("smoke", image_size=16, device="cpu", **kw)


def test_batched_features_equal_per_image_eval_transform(tiny):
    from lib import data

    model, _ = tiny
    bench = toy_benchmark()
    feats = features.extract_features(model, bench.test, 16, batch_size=4)
    transform = data.eval_transform(16)
    with torch.inference_mode():
        one = torch.cat([model.features(transform(bench.test.get_uint8(i))[None]) for i in range(len(bench.test))])
    torch.testing.assert_close(feats, one, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", ["mean", "kcenter", "knn_class"])
def test_score_benchmark_invariants(tiny, kind):
    model, objective = tiny
    bench = toy_benchmark()
    scores = evaluate.score_benchmark(model, objective, bench, settings(prototypes=kind, prototypes_k=2))
    n, c = len(bench.test), bench.num_known
    assert scores.similarities.shape == (n, c) and scores.normality.shape == (n,)
    assert np.all(scores.normality >= 1 / c - 1e-9) and np.all(scores.normality <= 1 + 1e-9)
    assert np.array_equal(scores.predictions, scores.similarities.argmax(1))
    assert scores.is_known.sum() == 9 and (~scores.is_known).sum() == 6
    m = scores.metrics()
    assert all(0.0 <= m[k] <= 1.0 for k in evaluate.METRICS)


def test_score_benchmark_knn_is_the_reference_evaluator(tiny):
    """knn: normality = mean top-k similarity to all support images (checked against the pair similarities
    computed here), same class scores and predictions as knn_class, whose normality is a max softmax."""
    model, objective = tiny
    bench = toy_benchmark()
    knn = evaluate.score_benchmark(model, objective, bench, settings(prototypes="knn", prototypes_k=2))
    per_class = evaluate.score_benchmark(model, objective, bench, settings(prototypes="knn_class", prototypes_k=2))
    support = features.extract_features(model, bench.support, 16)
    test = features.extract_features(model, bench.test, 16)
    sims = evaluate.pair_similarities(model, objective, test, support).double()  # (15 test, 12 support)
    expected = sims.sort(dim=1, descending=True).values[:, :2].mean(1).numpy()
    np.testing.assert_allclose(knn.normality, expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(knn.similarities, per_class.similarities)
    np.testing.assert_array_equal(knn.predictions, per_class.predictions)
    assert not np.allclose(knn.normality, per_class.normality)
    assert np.all(per_class.normality >= 1 / 3 - 1e-9) and np.all(per_class.normality <= 1 + 1e-9)
    # the global top-2 mean is at least every class's top-2 mean (each class holds 4 support images)
    assert np.all(knn.normality >= knn.similarities.max(1) - 1e-6)
    assert all(0.0 <= v <= 1.0 for v in knn.metrics().values())


def test_batched_equals_one_pair_at_a_time_and_permutation(tiny):
    model, objective = tiny
    bench = toy_benchmark()
    big = evaluate.score_benchmark(model, objective, bench, settings(eval_batch_size=1024))
    small = evaluate.score_benchmark(model, objective, bench, settings(eval_batch_size=1))
    np.testing.assert_allclose(big.similarities, small.similarities, rtol=1e-4, atol=1e-5)
    perm = np.random.default_rng(0).permutation(len(bench.test))
    bench.test = bench.test.subset(perm)
    permuted = evaluate.score_benchmark(model, objective, bench, settings())
    np.testing.assert_allclose(permuted.normality, big.normality[perm], rtol=1e-4, atol=1e-6)


def test_feature_memo_gives_identical_metrics_and_skips_shared_images(tiny, monkeypatch):
    """Emoji benchmarks share vendor sets: emoji_google_to_twitter reuses emoji_google's support, emoji_twitter's
    test is emoji_google_to_twitter's. With the memo those images are not recomputed; nothing else changes."""
    from lib import data

    load = data.load_benchmark

    def small(name, cfg):  # 2 support images per known class, every 8th test image (same rows in every benchmark)
        bench = load(name, cfg)
        rows = np.concatenate([np.flatnonzero(bench.support.labels == c)[:2] for c in range(bench.num_known)])
        return Benchmark(bench.name, bench.kind, bench.support.subset(rows), bench.test.subset(np.arange(0, 526, 8)),
                         bench.num_known, bench.domain_support, bench.domain_test)

    monkeypatch.setattr(data, "load_benchmark", small)
    model, objective = tiny
    cfg = config.resolve("smoke", device="cpu", benchmarks="emoji_google,emoji_google_to_twitter,emoji_twitter")
    memo = features.FeatureMemo()
    with_memo, scores_memo = evaluate.evaluate_benchmarks((model, objective), cfg, memo=memo)
    without, scores_plain = evaluate.evaluate_benchmarks((model, objective), cfg, memo=False)
    assert with_memo.keys() == without.keys()
    assert all(0.0 <= with_memo[f"auroc_se__{name}"] < 0.5 for name in scores_plain)  # recorded by 03 for the tables
    assert {k: v for k, v in with_memo.items() if not k.startswith("eval_seconds")} == \
        {k: v for k, v in without.items() if not k.startswith("eval_seconds")}
    for name, plain in scores_plain.items():
        assert np.array_equal(scores_memo[name].normality, plain.normality)
        assert np.array_equal(scores_memo[name].similarities, plain.similarities)
        assert plain.memo_seconds == 0.0
    support, test = 2 * 15, len(range(0, 526, 8))
    assert (memo.hits, memo.computed) == (support + test, 2 * support + 2 * test)  # google support, twitter test
    assert scores_memo["emoji_google"].memo_seconds == 0.0 and scores_memo["emoji_twitter"].memo_seconds > 0.0


def test_feature_memo_ignores_placeholder_ids(tiny):
    """TensorImageSets built without ids get img0, img1, ... in every set: never a memo key."""
    model, objective = tiny
    bench = toy_benchmark()
    assert features.content_ids(bench.test) is None and features.content_ids(bench.support) is None
    memo = features.FeatureMemo()
    plain = evaluate.score_benchmark(model, objective, bench, settings())
    memoised = evaluate.score_benchmark(model, objective, bench, settings(), memo)
    assert memo.hits == 0 and memo.computed == len(bench.support) + len(bench.test) and not memo.rows
    assert np.array_equal(plain.normality, memoised.normality)
    bench.test.ids = np.array([f"t{i}" for i in range(len(bench.test))])
    assert features.content_ids(bench.test) is not None
    bench.test.ids[1] = "t0"  # repeated within the set: not an identity
    assert features.content_ids(bench.test) is None


def test_single_class_support_is_an_error(tiny):
    model, objective = tiny
    bench = toy_benchmark(n_known=1, n_unknown=2)
    with pytest.raises(ValueError, match="1 class"):
        evaluate.score_benchmark(model, objective, bench, settings())


def test_benchmark_without_unknown_or_known_is_an_error(tiny):
    model, objective = tiny
    bench = toy_benchmark(n_known=3, n_unknown=0)
    with pytest.raises(ValueError, match="toy: the test set has 9 known and 0 unknown"):
        evaluate.score_benchmark(model, objective, bench, settings())
    bench.test = bench.test.subset(np.arange(0))
    with pytest.raises(ValueError, match="0 known and 0 unknown"):
        evaluate.score_benchmark(model, objective, bench, settings())


def test_merge_settings_model_from_trained_eval_from_notebook():
    trained = config.resolve("smoke", d_model=16, n_heads=2, image_size=16, loss="hinge", hinge_delta=0.1,
                             data_root="/data/a", benchmarks="glyph")
    requested = config.resolve("smoke", benchmarks="emoji", prototypes="knn", eval_batch_size=64, run_dir="/tmp/r")
    merged = checkpoints.merge_settings(trained, requested)
    assert (merged.d_model, merged.image_size, merged.loss, merged.hinge_delta) == (16, 16, "hinge", 0.1)
    assert (merged.benchmarks, merged.prototypes, merged.eval_batch_size) == ("emoji", "knn", 64)
    assert merged.data_root == "/data/a" and merged.run_dir == "/tmp/r"  # empty notebook data_root keeps the run's


def test_missing_checkpoint_message(tmp_path):
    with pytest.raises(FileNotFoundError, match="no trained model in .*02_train"):
        evaluate.evaluate_benchmarks(tmp_path, settings())


# ----------------------------------------------------------------------------- notebooks 03 + 04 end to end
@pytest.mark.notebook
def test_notebooks_03_and_04_record_sane_metrics(tmp_path):
    """Train a tiny run (1 step), then run 03_evaluate and 04_r2 on it with papermill as the sweep does."""
    import json

    import papermill

    from lib import data, train
    from lib.paths import NOTEBOOKS_DIR, REPO_ROOT

    run_dir = tmp_path / "bce__seed0"
    cfg = config.resolve("smoke", run_dir=str(run_dir), device="cpu", d_model=16, n_heads=2, head_hidden=8,
                         image_size=16, steps=1, warmup_steps=1, source_classes=10, batch_pairs=42, pretrained="none")
    train.train(cfg, run_dir, data.load_source(cfg))
    for name, extra in (("03_evaluate", {"benchmarks": "glyph_printed", "interactive": True}),
                        ("04_r2", {"r2_pairs": 84})):
        papermill.execute_notebook(str(NOTEBOOKS_DIR / f"{name}.ipynb"), str(run_dir / f"{name}.ipynb"),
                                   parameters={"run_dir": str(run_dir), "device": "cpu", **extra},
                                   kernel_name="python3", cwd=str(REPO_ROOT), progress_bar=False, execution_timeout=CELL_TIMEOUT)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert all(0.0 <= metrics[f"{k}__glyph_printed"] <= 1.0 for k in evaluate.METRICS)
    assert metrics["auroc__intra_avg"] == metrics["auroc__glyph_printed"]
    assert 0.0 <= metrics["r2"] <= 1.0 and metrics["r2_pairs"] == 84
    assert (run_dir / "eval_table.csv").exists() and (run_dir / "figures" / "03_roc.png").exists()
    assert (run_dir / "figures" / "03_hist.png").exists()


# ----------------------------------------------------------------------------- pytorch-ood detector
def _preprocessed(imageset):
    from lib import data

    transform = data.eval_transform(16)
    return torch.stack([transform(imageset.get_uint8(i)) for i in range(len(imageset))])


@pytest.mark.parametrize("kind", ["mean", "knn"])
def test_resend_detector_is_score_benchmark_in_pytorch_ood_form(tiny, kind):
    """fit(DataLoader of (x, y)) + predict(x) = -normality of score_benchmark; through pytorch-ood's OODMetrics
    (unknown targets < 0) its AUROC equals ours on the same scores and its FPR95TPR is our fpr95_ood."""
    from pytorch_ood.api import RequiresFittingException
    from pytorch_ood.metrics import OODMetrics
    from torch.utils.data import DataLoader, TensorDataset

    from lib import detector

    model, objective = tiny
    bench = toy_benchmark(seed=1)
    ours = evaluate.score_benchmark(model, objective, bench, settings(prototypes=kind, prototypes_k=2))
    det = detector.ReSeNDDetector(model, objective, prototypes=kind, k=2)
    x_test = _preprocessed(bench.test)
    with pytest.raises(RequiresFittingException, match="call fit"):
        det.predict(x_test)
    support = TensorDataset(_preprocessed(bench.support), torch.as_tensor(bench.support.labels))
    assert det.fit(DataLoader(support, batch_size=5)) is det and det.num_known == 3
    outlier = torch.cat([det(x) for x in x_test.split(4)])  # __call__ = predict, any batching
    np.testing.assert_allclose(outlier.numpy(), -ours.normality, rtol=1e-5, atol=1e-7)
    targets = detector.ood_targets(bench.test.labels, bench.num_known)
    assert targets.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2] + [-1] * 6
    ood = OODMetrics()
    ood.update(outlier, targets)
    theirs = ood.compute()
    mine = metrics.novelty_metrics(-outlier.numpy(), targets.numpy() >= 0)
    assert float(theirs["AUROC"]) == pytest.approx(mine["auroc"], abs=1e-12)
    assert float(theirs["FPR95TPR"]) == pytest.approx(mine["fpr95_ood"], abs=1e-12)
    # tensors + labels give the same prototypes as the loader
    again = detector.ReSeNDDetector(model, objective, prototypes=kind, k=2).fit(*support.tensors)
    torch.testing.assert_close(again.predict(x_test), outlier)


def test_resend_detector_errors(tiny):
    from lib import detector

    model, objective = tiny
    with pytest.raises(ValueError, match="prototypes='proto' is not one of mean, kcenter, knn, knn_class"):
        detector.ReSeNDDetector(model, objective, prototypes="proto")
    det = detector.ReSeNDDetector(model, objective)
    x = torch.zeros(4, 3, 16, 16)
    with pytest.raises(ValueError, match="fit on the known images only"):
        det.fit(x, torch.tensor([0, 1, -1, 1]))
    with pytest.raises(ValueError, match=r"fit\(x\) needs the support labels"):
        det.fit(x)
    with pytest.raises(ValueError, match=r"known classes \[1\] have no support images"):
        det.fit(x, torch.tensor([0, 0, 2, 2]))
    # issue 21: an empty loader said "not enough values to unpack", k = 0 gave NaN scores
    from torch.utils.data import DataLoader, TensorDataset

    empty = DataLoader(TensorDataset(torch.zeros(0, 3, 16, 16), torch.zeros(0, dtype=torch.long)), batch_size=4)
    with pytest.raises(ValueError, match=r"^fit\(loader\): the loader yielded no batch"):
        det.fit(empty)
    for kind in ("knn", "kcenter"):
        with pytest.raises(ValueError, match=r"^k=0 must be an integer >= 1$"):
            detector.ReSeNDDetector(model, objective, prototypes=kind, k=0)
    with pytest.raises(ValueError, match=r"^batch_pairs=0 must be an integer >= 1$"):
        detector.ReSeNDDetector(model, objective, batch_pairs=0)

"""lib.pairs: both pairing modes have the docs/METHOD.md §3 pair statistics."""

import numpy as np
import pytest
from scipy import stats

from lib import DIFFERENT, SAME, pairs

# 12 classes of unequal size (3..14 images): balancing has work to do
SIZES = np.arange(3, 15)
LABELS = np.repeat(np.arange(len(SIZES)), SIZES)
K = 5


def draw(mode, steps=300, anchors=8, balance=True, seed=0):
    sampler = pairs.PairSampler(LABELS, neg_to_pos_ratio=K, class_balance=balance, mode=mode, images_per_class=4,
                                seed=seed)
    return [sampler.sample(anchors) for _ in range(steps)]


@pytest.fixture(scope="module", params=["per_pair", "in_batch"])
def batches(request):
    return request.param, draw(request.param, steps=600, anchors=16)


def test_every_pair_has_the_right_label(batches):
    mode, drawn = batches
    for batch in drawn:
        first, second = batch.images[batch.a], batch.images[batch.b]
        same_class = LABELS[first] == LABELS[second]
        assert batch.num_pairs == 16 * (1 + K)
        assert np.array_equal(same_class, batch.label == SAME)  # positives same class, negatives different
        assert (first[batch.label == SAME] != second[batch.label == SAME]).all()  # a positive is ANOTHER image
        assert (batch.label == SAME).mean() == pytest.approx(1 / (1 + K))
        assert np.array_equal(batch.label.reshape(-1, 1 + K)[:, 0], np.full(16, SAME))
        assert (batch.label.reshape(-1, 1 + K)[:, 1:] == DIFFERENT).all()
        assert np.array_equal(first.reshape(-1, 1 + K)[:, 0], batch.anchors)


def test_one_backbone_pass_per_image_in_batch_two_per_pair_reference(batches):
    mode, drawn = batches
    for batch in drawn[:20]:
        if mode == "per_pair":
            assert len(batch.images) == 2 * batch.num_pairs
            assert len(set(batch.a.tolist()) | set(batch.b.tolist())) == 2 * batch.num_pairs
        else:
            assert len(batch.images) == 16  # 16 anchors = 4 classes x 4 images
            assert len(batch.images) < batch.num_pairs / 2


def chi_square_p(counts):
    return stats.chisquare(counts).pvalue


def test_negative_classes_are_uniform(batches):
    mode, drawn = batches
    neg = np.concatenate([LABELS[b.images[b.b[b.label == DIFFERENT]]] for b in drawn])
    counts = np.bincount(neg, minlength=len(SIZES))
    # in_batch negatives of one step share its 3 other classes (clustered draws): a deviation bound, not chi-square
    assert counts.min() > 0.75 * counts.mean() and counts.max() < 1.25 * counts.mean(), counts
    # conditioned on the anchor's class, the negative class is uniform over the OTHER classes
    anchor_cls = np.concatenate([LABELS[b.images[b.a[b.label == DIFFERENT]]] for b in drawn])
    for c in (0, 11):
        cond = np.bincount(neg[anchor_cls == c], minlength=len(SIZES))
        assert cond[c] == 0
        cond = np.delete(cond, c)
        assert cond.min() > 0.6 * cond.mean() and cond.max() < 1.4 * cond.mean(), cond


def test_anchor_counts_are_balanced(batches):
    mode, drawn = batches
    counts = np.bincount(LABELS[np.concatenate([b.anchors for b in drawn])], minlength=len(SIZES))
    assert chi_square_p(counts) > 1e-4, counts  # class 0 has 3 images, class 11 has 14
    assert counts.min() > 0.75 * counts.max()


def test_without_balancing_anchors_follow_class_sizes():
    drawn = draw("per_pair", steps=150, balance=False)
    counts = np.bincount(LABELS[np.concatenate([b.anchors for b in drawn])], minlength=len(SIZES))
    # 150 * 8 = 1200 anchors = 11.1 epochs of 108 images: counts proportional to the sizes
    assert np.corrcoef(counts, SIZES)[0, 1] > 0.95 and counts[-1] > 3 * counts[0]


def test_per_pair_epoch_visits_every_image():
    sampler = pairs.PairSampler(LABELS, neg_to_pos_ratio=K, class_balance=True, mode="per_pair", seed=1)
    epoch = len(SIZES) * SIZES.max()  # balanced epoch: 12 classes x 14 anchors
    anchors = np.concatenate([sampler.sample(12).anchors for _ in range(epoch // 12)])
    assert set(anchors.tolist()) == set(range(len(LABELS)))
    assert (np.bincount(LABELS[anchors]) == SIZES.max()).all()


def test_reproducible_and_resumable():
    for mode in ("per_pair", "in_batch"):
        one = pairs.PairSampler(LABELS, K, mode=mode, seed=3)
        two = pairs.PairSampler(LABELS, K, mode=mode, seed=3)
        [one.sample(8) for _ in range(5)]
        state = one.state_dict()
        [two.sample(8) for _ in range(5)]
        resumed = pairs.PairSampler(LABELS, K, mode=mode, seed=99)
        resumed.load_state_dict(state)
        for _ in range(3):
            x, y, z = one.sample(8), two.sample(8), resumed.sample(8)
            assert np.array_equal(x.images, y.images) and np.array_equal(x.images, z.images)
            assert np.array_equal(x.b, z.b)
        assert not np.array_equal(pairs.PairSampler(LABELS, K, mode=mode, seed=4).sample(8).images,
                                  pairs.PairSampler(LABELS, K, mode=mode, seed=3).sample(8).images)


def test_a_class_with_one_image_is_an_error():
    with pytest.raises(ValueError, match="fewer than 2 images"):
        pairs.PairSampler(np.array([0, 0, 1, 2, 2]), 3)


def test_anchors_per_step():
    assert pairs.anchors_per_step(336, 20) == 16 and pairs.anchors_per_step(4096, 20) == 195

"""R^2 (docs/METHOD.md §8): hand-worked tiny cases, the diagonal convention, block == naive N x N."""

import math

import numpy as np
import pytest
import torch

from lib import r2

E = torch.eye(4, dtype=torch.float64)  # e1..e4, mutually orthogonal: cos = 0, distance = 1


def naive_r2(reprs: torch.Tensor, labels: torch.Tensor) -> float:
    """The definition written out with the full N x N cosine-distance matrix (diagonal included)."""
    unit = torch.nn.functional.normalize(reprs.double(), dim=1)
    dist = 1 - unit @ unit.T
    d = torch.tensor([[dist[labels == g][:, labels == h].mean() for h in (0, 1)] for g in (0, 1)])
    return float(1 - (d[0, 0] + d[1, 1]) / 2 / d.mean())


def test_identical_groups_give_zero():
    # both groups = {e1, e2}: every D_gh = (0 + 1 + 1 + 0) / 4 = 0.5, so R^2 = 1 - 0.5 / 0.5 = 0
    reprs = torch.stack([E[0], E[1], E[0], E[1]])
    assert r2.r_squared(reprs, torch.tensor([0, 0, 1, 1])) == pytest.approx(0.0, abs=1e-12)


def test_perfectly_separated_orthogonal_groups_give_one():
    # group 0 = {e1, e1}, group 1 = {e2, e2}: D_00 = D_11 = 0, D_01 = D_10 = 1, mean of four = 0.5
    # R^2 = 1 - 0 / 0.5 = 1
    reprs = torch.stack([E[0], 3 * E[0], E[1], 0.5 * E[1]])  # lengths do not matter (cosine)
    assert r2.r_squared(reprs, torch.tensor([0, 0, 1, 1])) == pytest.approx(1.0)


def test_diagonal_is_included():
    # group 0 = {e1, e2}, group 1 = {e3, e4}; with a = b included (Kornblith: divide by N_k^2):
    #   D_00 = D_11 = (0 + 1 + 1 + 0) / 4 = 0.5, D_01 = D_10 = 1, mean of four = 0.75, R^2 = 1 - 0.5/0.75 = 1/3.
    # (Excluding the diagonal would give D_00 = D_11 = 1 and R^2 = 0.)
    reprs = E.clone()
    labels = torch.tensor([0, 0, 1, 1])
    assert r2.r_squared(reprs, labels) == pytest.approx(1 / 3)
    assert r2.group_mean_distances(reprs, labels).numpy() == pytest.approx(np.array([[0.5, 1.0], [1.0, 0.5]]))


def test_unequal_group_sizes_hand_worked():
    # group 0 = {e1, e1, e2}: cos sums: e1.e1 pairs 2x2 = 4, e2.e2 = 1 -> sum 5 over 9 -> D_00 = 1 - 5/9 = 4/9
    # group 1 = {e2}: D_11 = 0; between: cos(e1,e2)=0 twice, cos(e2,e2)=1 once -> D_01 = 1 - 1/3 = 2/3
    # R^2 = 1 - (4/9 + 0)/2 / ((4/9 + 0 + 2 * 2/3) / 4) = 1 - (2/9) / (4/9) = 0.5
    reprs = torch.stack([E[0], E[0], E[1], E[1]])
    assert r2.r_squared(reprs, torch.tensor([0, 0, 0, 1])) == pytest.approx(0.5)


def test_block_equals_naive_on_random_data():
    gen = torch.Generator().manual_seed(0)
    reprs = torch.randn(203, 9, generator=gen) + torch.tensor([1.0] + [0.0] * 8)
    labels = (torch.rand(203, generator=gen) < 0.3).long()
    reprs[labels == 1] += 0.8  # some separation
    expected = naive_r2(reprs, labels)
    for block in (1, 7, 64, 4096):
        assert r2.r_squared(reprs, labels, block=block) == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert 0.0 < expected < 1.0


def test_label_order_invariance():
    gen = torch.Generator().manual_seed(1)
    reprs, labels = torch.randn(50, 5, generator=gen), torch.arange(50) % 2
    perm = torch.randperm(50, generator=gen)
    assert r2.r_squared(reprs[perm], labels[perm]) == pytest.approx(r2.r_squared(reprs, labels))


def test_errors():
    with pytest.raises(ValueError, match="both groups"):
        r2.r_squared(torch.randn(5, 3), torch.ones(5, dtype=torch.long))
    with pytest.raises(ValueError, match="0 \\(different\\) or 1 \\(same\\)"):
        r2.r_squared(torch.randn(3, 3), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="must be \\(N, D\\)"):
        r2.r_squared(torch.randn(3), torch.tensor([0, 1, 1]))
    assert not math.isnan(r2.r_squared(torch.randn(4, 3), torch.tensor([0, 1, 0, 1])))


def test_sample_triples_as_the_reference_r2_builds_them():
    from lib import DIFFERENT, SAME, config

    cfg = config.resolve("smoke", seed=3)
    labels = np.repeat(np.arange(10), 4)  # 10 classes x 4 images
    triples = r2.sample_triples(labels, 50, cfg)
    # 50 pairs need ceil(50 / 12) = 5 classes x 2 anchors x (1 same + 5 different) = 60 pairs
    assert triples.shape == (60, 3) and triples.dtype == np.int64
    per_anchor = triples.reshape(10, 6, 3)  # rows come anchor by anchor: same pair, then its 5 different pairs
    assert np.all(per_anchor[:, :, 0] == per_anchor[:, :1, 0])  # one anchor per block of 6
    assert np.all(per_anchor[:, 0, 2] == SAME) and np.all(per_anchor[:, 1:, 2] == DIFFERENT)  # exactly 1 : 5
    anchor_classes = labels[per_anchor[:, 0, 0]]
    assert len(set(anchor_classes.tolist())) == 5
    assert np.all(np.bincount(anchor_classes, minlength=10)[anchor_classes] == 2)  # 2 anchors per class used
    assert len(set(per_anchor[:, 0, 0].tolist())) == 10  # the two anchors of a class are different images
    same = triples[:, 2] == SAME
    assert np.all(labels[triples[same, 0]] == labels[triples[same, 1]])
    assert np.all(triples[same, 0] != triples[same, 1])  # a positive is another image of the class
    assert np.all(labels[triples[~same, 0]] != labels[triples[~same, 1]])
    assert np.array_equal(triples, r2.sample_triples(labels, 50, cfg))  # seeded by settings.seed
    other = r2.sample_triples(labels, 50, config.resolve("smoke", seed=4))
    assert not np.array_equal(triples, other)


def test_sample_triples_with_too_few_classes_uses_them_all():
    from lib import SAME, config

    labels = np.array([0, 0, 1, 1, 1, 2])  # class 2 has one image: no same pair, but it serves as a negative
    triples = r2.sample_triples(labels, 12_000, config.resolve("smoke"))
    assert len(triples) == 2 * 12  # the two classes with >= 2 images, 12 pairs each
    assert set(labels[triples[triples[:, 2] == SAME, 0]].tolist()) == {0, 1}
    with pytest.raises(ValueError, match=">= 2 images"):
        r2.sample_triples(np.array([0, 1, 2]), 12, config.resolve("smoke"))


def test_relational_r2_on_a_tiny_model():
    pytest.importorskip("lib.data")
    from test_evaluate import tiny_model
    from lib.data import TensorImageSet

    from lib import config

    model, _ = tiny_model()
    gen = torch.Generator().manual_seed(0)
    labels = np.repeat(np.arange(5), 4)
    source = TensorImageSet(torch.randint(0, 256, (20, 3, 16, 16), generator=gen, dtype=torch.uint8), labels)
    cfg = config.resolve("smoke", image_size=16, device="cpu", eval_batch_size=7)
    out = r2.relational_r2(model, source, cfg, n_pairs=40)
    # ceil(40 / 12) = 4 of the 5 classes, 12 pairs each: 8 same, 40 different
    assert out["n_pairs"] == 48 and out["n_same"] == 8 and out["n_different"] == 40
    assert out["n_pairs_requested"] == 40 and out["n_classes"] == 4
    assert -1e-9 <= out["r2"] <= 1 + 1e-9

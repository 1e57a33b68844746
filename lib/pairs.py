"""Pair sampling (docs/METHOD.md §3): each anchor gets 1 positive and k negatives; labels ``SAME = 1`` / ``DIFFERENT = 0``.

Both modes return a `PairBatch`: the dataset indices of the images to load (each loaded and augmented once)
and, per pair, the positions of its two images in that list, so the training step is always
"load images -> one backbone pass -> index the feature matrix -> relate".

* ``per_pair`` (reference): anchors come from shuffled epochs of the (balanced) anchor list; the positive is a
  uniform other image of the anchor's class, each negative's class is uniform among the other classes and its
  image uniform in that class. Every pair's two images are separate entries (2 backbone passes per pair,
  independent augmentation), exactly like a per-pair DataLoader.
* ``in_batch`` (ours): draw P classes (uniformly without replacement with class balancing, else weighted by
  class size), ``images_per_class`` images of each; anchors are batch images; the positive is another batch
  image of the anchor's class; each negative's class is uniform among the batch's other classes and its image
  uniform among the batch images of that class. Since the batch classes are a uniform random subset, the
  negative class is marginally uniform over all other classes, and anchors are balanced over classes in
  expectation — the same pair statistics as ``per_pair`` at one backbone pass per image (negatives within one
  step share the batch's P - 1 classes, the price of the speed-up).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lib import DIFFERENT, SAME


@dataclass
class PairBatch:
    images: np.ndarray  # (M,) dataset indices to load, each augmented independently
    a: np.ndarray  # (P,) position in `images` of each pair's first image (the anchor)
    b: np.ndarray  # (P,) position in `images` of each pair's second image
    label: np.ndarray  # (P,) int64, SAME = 1 / DIFFERENT = 0
    anchors: np.ndarray  # (A,) dataset indices of the anchors (pairs come in runs of 1 + k per anchor)

    @property
    def num_pairs(self) -> int:
        return len(self.label)


class PairSampler:
    """Draws `PairBatch`es of `num_anchors * (1 + k)` pairs; deterministic given `seed` (numpy Generator)."""

    def __init__(self, labels, neg_to_pos_ratio: int = 20, class_balance: bool = True, mode: str = "in_batch",
                 images_per_class: int = 4, seed: int = 0):
        self.labels = np.asarray(labels, dtype=np.int64)
        self.k = int(neg_to_pos_ratio)
        self.class_balance = class_balance
        self.mode = mode
        self.images_per_class = int(images_per_class)
        if mode not in ("in_batch", "per_pair"):
            raise ValueError(f"pairing mode {mode!r} must be in_batch or per_pair")
        self.classes, counts = np.unique(self.labels, return_counts=True)
        small = self.classes[counts < 2]
        if len(small):
            raise ValueError(f"classes {small.tolist()[:10]} have fewer than 2 images: no positive pair can be formed; "
                             "drop them from the source set")
        if len(self.classes) < 2:
            raise ValueError("the source set needs at least 2 classes to form negative pairs")
        self.members = [np.flatnonzero(self.labels == c) for c in self.classes]
        self.class_pos = {int(c): i for i, c in enumerate(self.classes)}
        self.counts = counts
        self.rng = np.random.default_rng(seed)
        self._epoch: np.ndarray = np.empty(0, dtype=np.int64)
        self._cursor = 0

    # --- state for bit-identical resume -------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"rng": self.rng.bit_generator.state, "epoch": self._epoch.copy(), "cursor": self._cursor}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]
        self._epoch = np.asarray(state["epoch"], dtype=np.int64)
        self._cursor = int(state["cursor"])

    # --- anchors --------------------------------------------------------------------------------------------
    def anchor_list(self) -> np.ndarray:
        """One epoch of anchors: every image once, plus (class balancing) extra draws from small classes."""
        parts = [np.arange(len(self.labels))]
        if self.class_balance:
            largest = self.counts.max()
            parts += [self.rng.choice(m, size=largest - len(m), replace=True) for m in self.members if len(m) < largest]
        return np.concatenate(parts)

    def next_anchors(self, n: int) -> np.ndarray:
        out = []
        while n > 0:
            if self._cursor >= len(self._epoch):
                self._epoch, self._cursor = self.rng.permutation(self.anchor_list()), 0
            take = self._epoch[self._cursor:self._cursor + n]
            self._cursor += len(take)
            n -= len(take)
            out.append(take)
        return np.concatenate(out)

    # --- sampling -------------------------------------------------------------------------------------------
    def sample(self, num_anchors: int) -> PairBatch:
        if num_anchors < 1:
            raise ValueError("num_anchors must be >= 1")
        return self._per_pair(num_anchors) if self.mode == "per_pair" else self._in_batch(num_anchors)

    def _other_in_class(self, idx: int) -> int:
        members = self.members[self.class_pos[int(self.labels[idx])]]
        j = self.rng.integers(len(members) - 1)
        j += j >= np.searchsorted(members, idx)  # skip the anchor itself: uniform over the other images
        return int(members[j])

    def _per_pair(self, num_anchors: int) -> PairBatch:
        anchors = self.next_anchors(num_anchors)
        n_cls = len(self.classes)
        others, labels = [], []
        for anchor in anchors:
            own = self.class_pos[int(self.labels[anchor])]
            others.append(self._other_in_class(anchor))
            shifts = self.rng.integers(1, n_cls, size=self.k)  # uniform over the other classes
            neg_classes = (own + shifts) % n_cls
            picks = self.rng.random(self.k)
            others += [int(self.members[c][int(u * len(self.members[c]))]) for c, u in zip(neg_classes, picks)]
            labels += [SAME] + [DIFFERENT] * self.k
        firsts = np.repeat(anchors, 1 + self.k)
        n = len(firsts)
        return PairBatch(images=np.concatenate([firsts, np.asarray(others, dtype=np.int64)]), a=np.arange(n),
                         b=np.arange(n, 2 * n), label=np.asarray(labels, dtype=np.int64), anchors=anchors)

    def _in_batch(self, num_anchors: int) -> PairBatch:
        n_cls = len(self.classes)
        n_batch_classes = min(n_cls, max(2, -(-num_anchors // self.images_per_class)))
        per_class = max(self.images_per_class, -(-num_anchors // n_batch_classes))
        weights = None if self.class_balance else self.counts / self.counts.sum()
        batch_classes = self.rng.choice(n_cls, size=n_batch_classes, replace=False, p=weights)
        images, image_class = [], []
        for slot, c in enumerate(batch_classes):
            m = self.members[c]
            if len(m) >= per_class:
                chosen = self.rng.choice(m, size=per_class, replace=False)
            else:  # small class: all of its images, then repeats (each repeat is augmented independently)
                chosen = np.concatenate([self.rng.permutation(m), self.rng.choice(m, per_class - len(m))])
            images.append(chosen)
            image_class += [slot] * per_class
        images = np.concatenate(images)
        image_class = np.asarray(image_class)
        slots = np.arange(n_batch_classes)
        positions_of = [np.flatnonzero(image_class == s) for s in slots]
        anchor_pos = self.rng.choice(len(images), size=num_anchors, replace=False)
        a, b, labels = [], [], []
        for pos in anchor_pos:
            own = image_class[pos]
            same = positions_of[own][images[positions_of[own]] != images[pos]]  # another image, not a repeat
            a += [pos] * (1 + self.k)
            b.append(int(same[self.rng.integers(len(same))]))
            neg_slots = (own + self.rng.integers(1, n_batch_classes, size=self.k)) % n_batch_classes
            b += [int(positions_of[s][self.rng.integers(per_class)]) for s in neg_slots]
            labels += [SAME] + [DIFFERENT] * self.k
        return PairBatch(images=images, a=np.asarray(a), b=np.asarray(b), label=np.asarray(labels, dtype=np.int64),
                         anchors=images[anchor_pos])


def anchors_per_step(batch_pairs: int, neg_to_pos_ratio: int) -> int:
    """Anchors per step so that a step holds at most `batch_pairs` pairs (1 + k per anchor)."""
    return max(1, batch_pairs // (1 + neg_to_pos_ratio))


def from_settings(settings, labels, rank: int = 0) -> PairSampler:
    """The sampler of `settings`, seeded from ``settings.seed`` (offset per DDP rank)."""
    return PairSampler(labels, neg_to_pos_ratio=settings.neg_to_pos_ratio, class_balance=settings.class_balance,
                       mode=settings.pairing, images_per_class=settings.images_per_class,
                       seed=settings.seed * 1000 + 17 + rank * 7919)

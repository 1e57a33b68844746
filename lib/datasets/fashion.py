"""Fashion-MNIST from the Debian package `dataset-fashion-mnist` (idx files under /usr/share/datasets): one
benchmark (`FAMILY`), 5 known and 5 unknown classes, no source (all 10 classes are the benchmark's)."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch

from lib.datasets.family import Family
from lib.datasets.imagesets import Benchmark, TensorImageSet

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
CLASS_NAMES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle_boot"]
SETUP_HINT = "run `make setup` (scripts/install_data.sh) to install the Debian package dataset-fashion-mnist"


def read_idx(path: Path) -> np.ndarray:
    """Decode a gzipped idx file (magic: 0 0 dtype ndim, big-endian dims) into a uint8 array."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    dims = np.frombuffer(raw[4:4 + 4 * ndim], dtype=">u4").astype(int)
    return np.frombuffer(raw[4 + 4 * ndim:], dtype=np.uint8).reshape(dims)


def load_split(split: str, root: Path = FASHION_DIR) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (N,28,28), labels int64 (N,)) of split `train` or `t10k`."""
    images, labels = Path(root) / f"{split}-images-idx3-ubyte.gz", Path(root) / f"{split}-labels-idx1-ubyte.gz"
    if not images.exists() or not labels.exists():
        raise FileNotFoundError(f"Fashion-MNIST file {images} missing: {SETUP_HINT}")
    return read_idx(images), read_idx(labels).astype(np.int64)


# ---------------------------------------------------------------- the fashion family: one benchmark
NUM_KNOWN = 5
SUPPORT_PER_CLASS = 200
TEST_PER_CLASS = 100
SPLIT_SEED = 20223


def resize_gray(images: np.ndarray, image_size: int) -> torch.Tensor:
    """uint8 (N,h,w) -> uint8 (N,3,S,S), bilinear with antialias, channels replicated (expanded view)."""
    x = torch.from_numpy(images).unsqueeze(1)
    if x.shape[-1] != image_size:
        x = torch.nn.functional.interpolate(x.float(), size=(image_size, image_size), mode="bilinear",
                                            antialias=True, align_corners=False).round().clamp(0, 255).to(torch.uint8)
    return x.expand(-1, 3, -1, -1)


def benchmark(name: str, settings) -> Benchmark:
    """The fashion benchmark: a fixed-seed half of the classes known; SUPPORT_PER_CLASS train images of each known
    class, TEST_PER_CLASS t10k images of every class."""
    rng = np.random.default_rng(SPLIT_SEED)
    order = rng.permutation(10)  # order[:5] known, order[5:] unknown
    relabel = np.empty(10, dtype=np.int64)
    relabel[order] = np.arange(10)
    names = [CLASS_NAMES[i] for i in order]
    sets = []
    for split, per_class, classes in (("train", SUPPORT_PER_CLASS, order[:NUM_KNOWN]), ("t10k", TEST_PER_CLASS, order)):
        images, labels = load_split(split)
        rows = np.sort(np.concatenate([rng.choice(np.flatnonzero(labels == c), per_class, replace=False)
                                       for c in classes]))
        ids = np.array([f"{split}:{r}" for r in rows])
        sets.append(TensorImageSet(resize_gray(images[rows], settings.image_size), relabel[labels[rows]],
                                   np.full(len(rows), "fashion"), names, ids=ids))
    return Benchmark(name, "intra", sets[0], sets[1], NUM_KNOWN, "fashion", "fashion")


FAMILY = Family("fashion", {"fashion": dict(kind="intra", domain_support="fashion", domain_test="fashion")}, benchmark,
                outlier_family="glyph", datasets=("fashion",),
                no_source="dataset 'fashion' has only 10 classes, all used by the fashion benchmark: "
                          "train on dataset glyph or emoji and evaluate on fashion")

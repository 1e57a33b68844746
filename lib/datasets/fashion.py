"""Fashion-MNIST from the Debian package `dataset-fashion-mnist` (idx files under /usr/share/datasets)."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

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

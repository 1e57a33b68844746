"""Image sets: uint8 (3,H,W) images with int64 labels, string domains and string identities, and the `Benchmark`
that pairs two of them.

`TensorImageSet` holds embedded data in memory; `FileImageSet` decodes real datasets from disk with PIL.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch


def _as_index(idx) -> np.ndarray:
    idx = np.asarray(idx)
    if idx.dtype == bool:
        idx = np.flatnonzero(idx)
    return idx.astype(np.int64).reshape(-1)


class ImageSet(torch.utils.data.Dataset):
    """Base class. `labels` int64 (N,), `domains` str (N,), `ids` str (N,) = image identity (e.g. font:char),
    `class_names[label]` names a class. `__getitem__` returns (transform(get_uint8(i)) or uint8 image, label)."""

    labels: np.ndarray
    domains: np.ndarray
    ids: np.ndarray
    class_names: list[str]
    transform: Callable | None = None
    # False where a mirror image is another class (characters): training augmentation then never flips
    mirror_invariant: bool = True

    def __len__(self) -> int:
        return len(self.labels)

    def get_uint8(self, i: int) -> torch.Tensor:
        return self.batch_uint8([i])[0]

    def batch_uint8(self, idx) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def subset(self, idx) -> "ImageSet":  # pragma: no cover - abstract
        raise NotImplementedError

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        image = self.get_uint8(int(i))
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.labels[i])

    def _meta_subset(self, idx: np.ndarray) -> dict:
        return dict(labels=self.labels[idx], domains=self.domains[idx], ids=self.ids[idx],
                    class_names=list(self.class_names), transform=self.transform)

    def _same_kind(self, other: "ImageSet") -> "ImageSet":
        other.mirror_invariant = self.mirror_invariant
        return other

    def class_counts(self) -> np.ndarray:
        """Images per label, length = number of class names."""
        return np.bincount(self.labels, minlength=len(self.class_names))


def _default_meta(n: int, labels, domains, ids, class_names, prefix: str):
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    if len(labels) != n:
        raise ValueError(f"{n} images but {len(labels)} labels: pass one label per image")
    domains = np.asarray(domains if domains is not None else [""] * n, dtype=str)
    ids = np.asarray(ids if ids is not None else [f"{prefix}{i}" for i in range(n)], dtype=str)
    if class_names is None:
        class_names = [str(c) for c in range(int(labels.max()) + 1 if n else 0)]
    return labels, domains, ids, list(class_names)


class TensorImageSet(ImageSet):
    """In-memory images: uint8 tensor (N,3,H,W) (an expanded (N,1,H,W) view is fine: no copy of the 3 channels)."""

    def __init__(self, images: torch.Tensor, labels, domains=None, class_names=None, transform=None, ids=None):
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"images must be uint8 (N,3,H,W), got {images.dtype} {tuple(images.shape)}")
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        self.images = images
        self.labels, self.domains, self.ids, self.class_names = _default_meta(
            len(images), labels, domains, ids, class_names, "img")
        self.transform = transform

    def get_uint8(self, i: int) -> torch.Tensor:
        return self.images[int(i)].contiguous()

    def batch_uint8(self, idx) -> torch.Tensor:
        return self.images[torch.from_numpy(_as_index(idx))].contiguous()

    def subset(self, idx) -> "TensorImageSet":
        idx = _as_index(idx)
        return self._same_kind(TensorImageSet(self.images[torch.from_numpy(idx)], **self._meta_subset(idx)))


def _verify_image(path: Path) -> bool:
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.verify()
        return True
    except Exception:  # noqa: BLE001 - any decoder error means "undecodable"
        return False


def crops_itself(transform) -> bool:
    """True when `transform` crops itself (``crops`` True: the training augmentation, `lib.augment.BatchAugment`) or
    is a v2 pipeline that starts with a RandomResizedCrop: it then gets a file's decoded original, the crop of the
    full-resolution image of the reference ReSeND code, not the image resized to a square first."""
    from torchvision.transforms import v2

    if getattr(transform, "crops", False):
        return True
    steps = getattr(transform, "transforms", None)
    return bool(steps) and isinstance(steps[0], v2.RandomResizedCrop)


class FileImageSet(ImageSet):
    """Images on disk, decoded with PIL as RGB and resized to a square of `image_size` pixels (`get_uint8`).

    With `verify=True` (default) missing and undecodable files are dropped at construction (`skipped` lists them,
    one warning gives both counts and the first of each). A file that still fails later decodes to a black image and
    increments `decode_failures` (of the process that decoded it: a DataLoader worker counts its own).
    `load(idx, transform, num_workers, pin_memory)` decodes a batch in persistent DataLoader workers.
    """

    def __init__(self, paths: Sequence, labels, image_size: int, domains=None, class_names=None, transform=None,
                 ids=None, verify: bool = True, _skipped=None):
        paths = np.asarray([str(p) for p in paths], dtype=str)
        labels, domains, ids, class_names = _default_meta(len(paths), labels, domains,
                                                          ids if ids is not None else paths, class_names, "")
        self.skipped: list[str] = list(_skipped or [])
        if verify and len(paths):
            present = np.array([Path(p).is_file() for p in paths], dtype=bool)
            ok = present & np.array([present[i] and _verify_image(Path(p)) for i, p in enumerate(paths)], dtype=bool)
            if not ok.all():
                missing, broken = paths[~present].tolist(), paths[present & ~ok].tolist()
                self.skipped += missing + broken
                parts = [f"{len(missing)} missing (first: {missing[0]})"] if missing else []
                parts += [f"{len(broken)} undecodable (first: {broken[0]})"] if broken else []
                warnings.warn(f"skipped {' and '.join(parts)} of {len(paths)} image(s): fix the paths or data_root, "
                              "re-download or delete the broken files", stacklevel=2)
                paths, labels, domains, ids = paths[ok], labels[ok], domains[ok], ids[ok]
        self.paths, self.labels, self.domains, self.ids, self.class_names = paths, labels, domains, ids, class_names
        self.image_size = int(image_size)
        self.transform = transform
        self.decode_failures = 0
        self._loaders: dict[tuple, tuple] = {}  # (transform id, workers, pin) -> (transform, DataLoader, feed)

    def __getstate__(self) -> dict:  # what a DataLoader worker receives: never the loaders (and their workers)
        return {k: v for k, v in self.__dict__.items() if k != "_loaders"} | {"_loaders": {}}

    def decode(self, i: int, full_resolution: bool = False) -> torch.Tensor:
        """uint8 (3,H,W) of image `i`: resized to a square of image_size, or as stored with `full_resolution`."""
        from PIL import Image

        try:
            with Image.open(self.paths[int(i)]) as im:
                im = im.convert("RGB")
                if not full_resolution:
                    im = im.resize((self.image_size, self.image_size), Image.BILINEAR)
                array = np.asarray(im, dtype=np.uint8)
        except Exception:  # noqa: BLE001
            self.decode_failures += 1
            warnings.warn(f"could not decode {self.paths[int(i)]} ({self.decode_failures} so far): returning a black image")
            array = np.zeros((self.image_size, self.image_size, 3), dtype=np.uint8)
        return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()

    def get_uint8(self, i: int) -> torch.Tensor:
        return self.decode(i)

    def batch_uint8(self, idx) -> torch.Tensor:
        idx = _as_index(idx)
        if len(idx) == 0:
            return torch.zeros((0, 3, self.image_size, self.image_size), dtype=torch.uint8)
        return torch.stack([self.get_uint8(i) for i in idx])

    def transformed(self, i: int, seed: int, transform) -> torch.Tensor:
        """Image `i` through `transform` with the global torch RNG seeded from `seed` (what a worker computes): the
        decoded original when the transform crops itself (`crops_itself`), else the square of image_size."""
        image = self.decode(i, full_resolution=crops_itself(transform))
        torch.manual_seed(int(seed))
        return transform(image)

    def load(self, idx, transform=None, num_workers: int = 0, pin_memory: bool = False) -> torch.Tensor:
        """Images `idx` through `transform` (None: uint8 squares, `batch_uint8`), stacked, decoded in `num_workers`
        persistent DataLoader workers (0: here). Each image's transform draws from its own seed, taken from the
        global torch RNG in index order, so the result is the same for any number of workers and follows the run's
        seed; `pin_memory` pins the batch for an asynchronous copy to CUDA."""
        idx = _as_index(idx)
        if transform is None and num_workers == 0:
            return self.batch_uint8(idx)
        return self.decode_items(self.draw(idx, transform), transform, num_workers, pin_memory)

    def draw(self, idx, transform) -> list[tuple[int, int]]:
        """The (index, seed) items `load` decodes: each image's seed taken from the global torch RNG in index order
        (0 without a transform). Drawn apart from the decoding so a prefetch (`lib.train.Prefetch`) draws them in
        the stream's order and decodes them elsewhere."""
        idx = _as_index(idx)
        seeds = torch.randint(0, 2 ** 62, (len(idx),)).tolist() if transform is not None else [0] * len(idx)
        return list(zip(idx.tolist(), seeds))

    def decode_items(self, items: list[tuple[int, int]], transform, num_workers: int = 0,
                     pin_memory: bool = False) -> torch.Tensor:
        """`draw`'s items through `transform`, stacked, in `num_workers` persistent DataLoader workers (0: here, under
        a forked RNG). With workers it touches no RNG of this process, so it may run in another thread."""
        if num_workers == 0:
            with torch.random.fork_rng(devices=[]):  # the caller's RNG stream moves by the seeds only
                return torch.stack([self.transformed(i, seed, transform) for i, seed in items])
        key = (id(transform), int(num_workers), bool(pin_memory))
        if key not in self._loaders:
            feed = _Feed()
            loader = torch.utils.data.DataLoader(
                _Decoded(self, transform), batch_sampler=feed, num_workers=num_workers, collate_fn=torch.stack,
                pin_memory=pin_memory, persistent_workers=True, generator=torch.Generator().manual_seed(0))
            self._loaders[key] = (transform, loader, feed)  # the transform is held so its id stays its own
        _, loader, feed = self._loaders[key]
        parts = np.array_split(np.arange(len(items)), max(1, min(len(items), 2 * num_workers)))
        feed.chunks = [[items[k] for k in part] for part in parts if len(part)]
        return torch.cat(list(loader))

    def subset(self, idx) -> "FileImageSet":
        idx = _as_index(idx)
        meta = self._meta_subset(idx)
        return self._same_kind(FileImageSet(self.paths[idx], image_size=self.image_size, verify=False,
                                            _skipped=self.skipped, **meta))


class _Decoded(torch.utils.data.Dataset):
    """Item (index, seed) -> `FileImageSet.transformed` (uint8 square without a transform): a worker's work."""

    def __init__(self, imageset: FileImageSet, transform):
        self.imageset, self.transform = imageset, transform

    def __getitem__(self, item: tuple[int, int]) -> torch.Tensor:
        i, seed = item
        if self.transform is None:
            return self.imageset.decode(i)
        return self.imageset.transformed(i, seed, self.transform)


class _Feed(torch.utils.data.Sampler):
    """The batches of the next pass, set by `FileImageSet.load` before it iterates its persistent DataLoader (the
    DataLoader reads its batch sampler in the main process at each pass, then hands the items to its workers)."""

    def __init__(self):
        self.chunks: list[list[tuple[int, int]]] = []

    def __iter__(self):
        return iter(self.chunks)

    def __len__(self) -> int:
        return len(self.chunks)


def concat(sets: Sequence[TensorImageSet], class_names=None) -> TensorImageSet:
    """Concatenate in-memory sets that share a label space."""
    out = TensorImageSet(torch.cat([s.images for s in sets]), np.concatenate([s.labels for s in sets]),
                         np.concatenate([s.domains for s in sets]), class_names or sets[0].class_names,
                         ids=np.concatenate([s.ids for s in sets]))
    out.mirror_invariant = all(s.mirror_invariant for s in sets)
    return out


@dataclass
class Benchmark:
    """A novelty-detection task. support: known classes only (labels 0..K-1); test: labels 0..K-1 known,
    >= K unknown (labels used for metrics only)."""

    name: str
    kind: str  # "intra" | "cross"
    support: ImageSet
    test: ImageSet
    num_known: int
    domain_support: str
    domain_test: str
    split: str = "embedded"  # real benchmarks: paper | own | derived (lib.datasets.real.list_origin of its lists)

    def is_known(self, labels=None) -> np.ndarray:
        """Boolean mask over the test set (or over `labels`): True = known class."""
        labels = self.test.labels if labels is None else np.asarray(labels)
        return labels < self.num_known

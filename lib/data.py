"""Images and benchmarks: the public face of the data layer.

Embedded data (no download at run time): CJK glyphs rendered from Debian fonts (`glyph_*`), emoji in four
vendor styles from npm packages (`emoji_*`), Fashion-MNIST from Debian (`fashion`). Real datasets (DTD,
DomainNet, PACS, OfficeHome, ImageNet) are read from `Settings.data_root` through split lists
(`relpath label`, known = 0..K-1, unknown >= K). Every split uses a fixed seed, never the run seed.

Each family (glyph, emoji, fashion, real) builds its own sets behind one interface, `lib.datasets.family.Family`;
this module looks a family up by name (`FAMILIES`, `DATASETS`, `family_of`), memoises what it builds and keeps the
transforms.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from lib.augment import IMAGENET_MEAN, IMAGENET_STD, BatchAugment
from lib.augment import VERSION as AUGMENTATION
from lib.device import to_device
from lib.datasets import emoji as _emoji
from lib.datasets import fashion as _fashion
from lib.datasets import glyphs as _glyphs
from lib.datasets import real as _real
from lib.datasets.emoji import emoji_cache, emoji_classes
from lib.datasets.family import Family
from lib.datasets.glyphs import glyph_cache
from lib.datasets.imagesets import Benchmark, FileImageSet, ImageSet, TensorImageSet, concat
from lib.datasets.real import load_split_list
from lib.paths import CACHE_DIR

__all__ = ["ImageSet", "TensorImageSet", "FileImageSet", "train_transform", "eval_transform", "load_source",
           "Benchmark", "BENCHMARKS", "GROUPS", "benchmark_names", "available_benchmarks", "load_benchmark",
           "outlier_pool", "outlier_family", "load_split_list", "check_source", "benchmark_summary", "glyph_cache",
           "emoji_cache", "emoji_classes", "augment_batch", "uint8_batch", "Family", "FAMILIES", "DATASETS",
           "family_of", "MIRROR_VARIANT", "OUTLIER_FAMILY", "AUGMENTATION"]

log = logging.getLogger(__name__)

# ---------------------------------------------------------------- transforms
def train_transform(image_size: int, hflip: bool = True) -> BatchAugment:
    """The training augmentation (docs/METHOD.md §3): uint8 (B,3,H,W) or (3,H,W) -> float32 normalised (B,3,S,S),
    RandomResizedCrop(0.8-1), flip, ColorJitter p=.5, gray .1, each image with its own parameters, applied to the
    whole batch on its device (`lib.augment.BatchAugment`; the same distributions as torchvision's per-image
    pipeline, `augment.reference_transform`). ``hflip=False`` leaves the flip out, for images whose mirror image
    is another class (`augmentation`). It crops first: a file-backed set hands it the decoded original."""
    return BatchAugment(image_size, hflip=hflip)


def augmentation(imageset, image_size: int, transform=train_transform):
    """`transform` (train_transform or one with its ``hflip`` argument) fit for `imageset`: no horizontal flip for
    sets whose mirror images are other classes (``mirror_invariant`` False: the glyphs). docs/METHOD.md §3 flips natural
    images; a flipped character is another character or none, and a glyph backbone pretrained with flips detects
    worse (printed -> handwritten AUROC of its features .715-.735 with flips, .838 without; docs/backbone_search.md)."""
    return transform(image_size, hflip=getattr(imageset, "mirror_invariant", True))


def eval_transform(image_size: int):
    """uint8 (3,H,W) -> float32 normalised: Resize to a square of image_size, ImageNet normalisation."""
    from torchvision.transforms import v2

    return v2.Compose([
        v2.Resize((image_size, image_size), antialias=True),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])



def augment_batch(imageset, idx, transform, num_workers: int = 0, pin_memory: bool = False,
                  device: torch.device | str | None = None) -> torch.Tensor:
    """uint8 images `idx` of `imageset` -> float32 (B,3,S,S), `transform` applied to each image independently.

    An in-memory set with the training augmentation (`train_transform`, a `BatchAugment`) travels to `device` (None:
    stays on the CPU) as uint8 and is augmented there as one batch, each image's parameters drawn from the global
    torch RNG on the CPU. Any other transform (a v2 pipeline: evaluation, CIDER's) runs here image by image (a v2
    pipeline on a batched tensor would draw one crop / jitter for the whole batch). File-backed sets
    (`FileImageSet.load`) decode in `num_workers` persistent DataLoader workers (pinned with `pin_memory`), each
    image with its own seed drawn from that RNG; a transform that crops (`train_transform`) gets the decoded
    original, as the reference does, instead of the square of image_size. The result of these two lies on the CPU."""
    if isinstance(imageset, FileImageSet):
        return imageset.load(idx, transform, num_workers, pin_memory)
    if isinstance(transform, BatchAugment):
        on_device = resident_images(imageset, device) if device is not None else None
        if on_device is not None:  # the set lives on the device: the batch is gathered there
            images = on_device[to_device(torch.from_numpy(np.asarray(idx, dtype=np.int64)), on_device.device)]
            images = images.expand(-1, 3, -1, -1)
        else:
            images = imageset.batch_uint8(idx)
            if device is not None and torch.device(device).type != "cpu":
                images = (images.pin_memory() if pin_memory else images).to(device, non_blocking=True)
        params = transform.sample(len(images), images.shape[-2], images.shape[-1])
        return transform.apply(images, params)
    return torch.stack([transform(img) for img in imageset.batch_uint8(idx)])


RESIDENT_FRACTION = 0.25  # an in-memory training set moves to the GPU when it takes at most this share of its memory


def resident_images(imageset, device) -> torch.Tensor | None:
    """uint8 (N,C,H,W) images of an in-memory set kept on CUDA `device` (C = 1 for a grey set stored as an expanded
    view: glyphs), copied there once and kept on the set; None on the CPU, for other sets, or when they would take
    more than RESIDENT_FRACTION of the device's memory (26k glyph images at 224 px: 1.3 GB)."""
    device = torch.device(device)
    images = getattr(imageset, "images", None)
    if device.type != "cuda" or not isinstance(imageset, TensorImageSet) or not isinstance(images, torch.Tensor):
        return None
    kept = imageset.__dict__.setdefault("_resident", {})
    if device not in kept:
        grey = images.shape[1] == 3 and images.stride(1) == 0  # an expanded (N,1,H,W) view: move one channel
        base = images[:, :1] if grey else images
        total = torch.cuda.get_device_properties(device).total_memory
        kept[device] = base.contiguous().to(device) if base.numel() <= RESIDENT_FRACTION * total else None
    return kept[device]


def uint8_batch(imageset, idx, num_workers: int = 0, pin_memory: bool = False) -> torch.Tensor:
    """uint8 (B,3,S,S) images `idx` of `imageset` (`batch_uint8`), a file-backed set decoded in `num_workers`
    persistent DataLoader workers."""
    if isinstance(imageset, FileImageSet):
        return imageset.load(idx, None, num_workers, pin_memory)
    return imageset.batch_uint8(idx)


# ---------------------------------------------------------------- the family registry
# one entry per dataset family (lib/datasets/family.py): what is embedded first, in table order
FAMILIES: dict[str, Family] = {f.name: f for f in (_glyphs.FAMILY, _emoji.FAMILY, _fashion.FAMILY, _real.FAMILY)}
DATASETS: dict[str, Family] = {d: f for f in FAMILIES.values() for d in f.datasets}  # settings.dataset -> family
MIRROR_VARIANT = tuple(n for n, f in FAMILIES.items() if not f.mirror_invariant)  # never flipped in training
OUTLIER_FAMILY = {n: f.outlier_family for n, f in FAMILIES.items()}  # MixOE's outliers: another family (§10)
BENCHMARKS: dict[str, dict] = {name: dict(group=f.name, **spec) for f in FAMILIES.values()
                               for name, spec in f.benchmarks.items()}  # name -> {group, kind, domain_*[, real]}
_EMBEDDED = [n for n, f in FAMILIES.items() if not f.file_backed]
GROUPS = {
    **{n: list(FAMILIES[n].benchmarks) for n in _EMBEDDED},
    "embedded": [n for n, s in BENCHMARKS.items() if s["group"] in _EMBEDDED],
    **{n: list(f.benchmarks) for n, f in FAMILIES.items() if f.file_backed},
    "all": list(BENCHMARKS),
}


def family_of(name: str) -> Family:
    """The family of benchmark `name` (the one-line "unknown benchmark" error for a name no family has)."""
    if name not in BENCHMARKS:
        benchmark_names(name)  # raises
    return FAMILIES[BENCHMARKS[name]["group"]]


def benchmark_names(spec: str) -> list[str]:
    """Resolve a comma list of benchmark names and/or groups (glyph, emoji, fashion, embedded, real, all)."""
    names: list[str] = []
    for item in (s.strip() for s in str(spec).split(",")):
        if not item:
            continue
        found = GROUPS.get(item, [item] if item in BENCHMARKS else None)
        if found is None:
            raise ValueError(f"unknown benchmark {item!r}: choose a group ({', '.join(GROUPS)}) or one of "
                             f"{', '.join(BENCHMARKS)}")
        names += [n for n in found if n not in names]
    return names


def available_benchmarks(spec: str, settings) -> list[str]:
    """`benchmark_names(spec)` without the file-backed (real) benchmarks when settings.data_root is empty (logged
    once)."""
    names = benchmark_names(spec)
    if settings.data_root:
        return names
    real = [n for n in names if family_of(n).file_backed]
    if real:
        log.warning("skipping %d real benchmark(s) (%s...): data_root is empty; set data_root to run them",
                    len(real), real[0])
    return [n for n in names if n not in real]


# ---------------------------------------------------------------- public loaders
_MEMO: dict[tuple, object] = {}


def check_source(source: ImageSet) -> ImageSet:
    """Raise if a class of a relational training set has fewer than two images (no positive pair)."""
    counts = np.bincount(source.labels, minlength=len(source.class_names))
    small = np.flatnonzero(counts < 2)
    if len(small):
        raise ValueError(f"source class {source.class_names[small[0]]!r} has {counts[small[0]]} image(s) "
                         f"({len(small)} such classes): pairs need >= 2 per class; add images or drop the class")
    return source


def load_source(settings) -> ImageSet:
    """The relational training set (uint8 images, labels 0..C-1) of settings.dataset, its family's `source`
    (glyph: printed fonts x source characters, never a benchmark character; emoji: google+twitter images of the
    source subcategories, never an emoji benchmark class; imagenet: data_root/imagenet). source_classes > 0 keeps
    the first N classes."""
    key = ("source", settings.dataset, settings.image_size, settings.source_classes, settings.data_root)
    if key in _MEMO:
        return _MEMO[key]
    if settings.dataset not in DATASETS:
        raise ValueError(f"unknown dataset {settings.dataset!r}: choose {', '.join(list(DATASETS)[:-1])} or "
                         f"{list(DATASETS)[-1]}")
    source = DATASETS[settings.dataset].load_source(settings.dataset, settings)
    _MEMO[key] = check_source(source)
    return source


def load_benchmark(name: str, settings) -> Benchmark:
    """The benchmark `name` at settings.image_size, built by its family (memoised; embedded ones also write their
    split lists `id label` to .cache/splits/embedded/)."""
    family = family_of(name)
    key = ("benchmark", name, settings.image_size, settings.data_root if family.file_backed else "")
    if key in _MEMO:
        return _MEMO[key]
    bench = family.benchmark(name, settings)
    if not family.file_backed:
        out = CACHE_DIR / "splits" / "embedded"
        for part, s in (("support", bench.support), ("test", bench.test)):
            _real.write_list(out / f"{name}_{settings.image_size}px_{part}.txt", zip(s.ids, s.labels))
    _MEMO[key] = bench
    return bench


def outlier_family(name: str) -> str:
    """The dataset family of benchmark `name`'s auxiliary outliers (its family's `outlier_family`)."""
    return family_of(name).outlier_family


def outlier_pool(name: str, settings, max_images: int = 4000) -> ImageSet:
    """Auxiliary outliers for MixOE on benchmark `name`, from another family (`outlier_family`, docs/METHOD.md §10: a
    distant set, never the test unknowns' distribution): glyph benchmarks get emoji of the emoji source
    subcategories (all vendors; never an emoji benchmark class); emoji, fashion and real benchmarks get printed
    glyphs of 200 source characters (never a glyph benchmark character). At most `max_images` (fixed-seed
    subsample)."""
    return FAMILIES[outlier_family(name)].outliers(settings, max_images)


def benchmark_summary(bench: Benchmark) -> dict[str, int]:
    """Split sizes as in docs/METHOD.md §7: support images, test known / unknown images, known / unknown classes."""
    known = bench.is_known()
    return {"support_images": len(bench.support), "test_known_images": int(known.sum()),
            "test_unknown_images": int((~known).sum()), "classes_known": bench.num_known,
            "classes_unknown": int(len(np.unique(bench.test.labels[~known])))}

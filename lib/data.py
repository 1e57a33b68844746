"""Images and benchmarks: the public face of the data layer.

Embedded data (no download at run time): CJK glyphs rendered from Debian fonts (`glyph_*`), emoji in four
vendor styles from npm packages (`emoji_*`), Fashion-MNIST from Debian (`fashion`). Real datasets (DTD,
DomainNet, PACS, OfficeHome, ImageNet) are read from `Settings.data_root` through split lists
(`relpath label`, known = 0..K-1, unknown >= K). Every split uses a fixed seed, never the run seed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lib.datasets import emoji as _emoji
from lib.datasets import fashion as _fashion
from lib.datasets import glyphs as _glyphs
from lib.datasets import real as _real
from lib.datasets.imagesets import FileImageSet, ImageSet, TensorImageSet, concat
from lib.paths import CACHE_DIR

__all__ = ["ImageSet", "TensorImageSet", "FileImageSet", "train_transform", "eval_transform", "load_source",
           "Benchmark", "BENCHMARKS", "GROUPS", "benchmark_names", "available_benchmarks", "load_benchmark",
           "outlier_pool", "outlier_family", "load_split_list", "check_source", "benchmark_summary", "glyph_cache", "emoji_cache"]

log = logging.getLogger(__name__)

MIRROR_VARIANT = ("glyph",)  # dataset families whose mirror images are other classes: trained without flips
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# ---------------------------------------------------------------- transforms
def train_transform(image_size: int, hflip: bool = True):
    """uint8 (3,H,W) -> float32 normalised (docs/METHOD.md §3): RandomResizedCrop(0.8-1), flip, ColorJitter p=.5, gray .1.

    ``hflip=False`` leaves the flip out, for images whose mirror image is another class (`augmentation`)."""
    from torchvision.transforms import v2

    return v2.Compose([
        v2.RandomResizedCrop(image_size, scale=(0.8, 1.0), antialias=True),
        *([v2.RandomHorizontalFlip(0.5)] if hflip else []),
        v2.RandomApply([v2.ColorJitter(0.8, 0.8, 0.8, 0.1)], p=0.5),
        v2.RandomGrayscale(0.1),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


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



def augment_batch(imageset, idx, transform) -> torch.Tensor:
    """uint8 images `idx` of `imageset` -> float32 (B,3,S,S), `transform` applied to each image independently
    (a v2 pipeline on a batched tensor would draw one crop / jitter for the whole batch)."""
    return torch.stack([transform(img) for img in imageset.batch_uint8(idx)])


# ---------------------------------------------------------------- registry
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


GLYPH_CROSS = {"glyph_printed_to_handwritten": ("printed", "handwritten"),
               "glyph_handwritten_to_printed": ("handwritten", "printed")}
EMOJI_CROSS = [("google", "openmoji_line"), ("google", "twitter"), ("twitter", "google"),
               ("twitter", "openmoji"), ("openmoji", "openmoji_line"), ("openmoji_line", "google")]


def _registry() -> dict[str, dict]:
    reg: dict[str, dict] = {}
    for d in _glyphs.DOMAINS:
        reg[f"glyph_{d}"] = dict(group="glyph", kind="intra", domain_support=d, domain_test=d)
    for name, (a, b) in GLYPH_CROSS.items():
        reg[name] = dict(group="glyph", kind="cross", domain_support=a, domain_test=b)
    for v in _emoji.VENDORS:
        reg[f"emoji_{v}"] = dict(group="emoji", kind="intra", domain_support=v, domain_test=v)
    for a, b in EMOJI_CROSS:
        reg[f"emoji_{a}_to_{b}"] = dict(group="emoji", kind="cross", domain_support=a, domain_test=b)
    reg["fashion"] = dict(group="fashion", kind="intra", domain_support="fashion", domain_test="fashion")
    for name, spec in _real.BENCHMARKS.items():
        sup = spec["support"] if isinstance(spec["support"], list) else [spec["support"]]
        reg[name] = dict(group="real", kind=spec["kind"], domain_support="+".join(s[1] for s in sup),
                         domain_test=spec["test"][1], real=spec)
    return reg


BENCHMARKS: dict[str, dict] = _registry()  # name -> {group, kind, domain_support, domain_test[, real]}
GROUPS = {
    "glyph": [n for n, s in BENCHMARKS.items() if s["group"] == "glyph"],
    "emoji": [n for n, s in BENCHMARKS.items() if s["group"] == "emoji"],
    "fashion": ["fashion"],
    "embedded": [n for n, s in BENCHMARKS.items() if s["group"] != "real"],
    "real": [n for n, s in BENCHMARKS.items() if s["group"] == "real"],
    "all": list(BENCHMARKS),
}


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
    """`benchmark_names(spec)` without the real benchmarks when settings.data_root is empty (logged once)."""
    names = benchmark_names(spec)
    if settings.data_root:
        return names
    real = [n for n in names if BENCHMARKS[n]["group"] == "real"]
    if real:
        log.warning("skipping %d real benchmark(s) (%s...): data_root is empty; set data_root to run them",
                    len(real), real[0])
    return [n for n in names if n not in real]


# ---------------------------------------------------------------- glyphs
_MEMO: dict[tuple, object] = {}


def glyph_cache(image_size: int) -> tuple[dict, _glyphs.GlyphPlan]:
    """(arrays of the rendered glyph cache, the character plan), memoised per image size."""
    key = ("glyph_cache", image_size)
    if key not in _MEMO:
        plan = _glyphs.make_plan()
        _MEMO[key] = (_glyphs.build_cache(image_size, plan=plan), plan)
    return _MEMO[key]


def _glyph_set(data: dict, chars: list[str], fonts: list[str], label_offset: int = 0) -> TensorImageSet:
    """Images of `chars` (label = position in chars) in `fonts`, from the cache arrays."""
    index = {c: i for i, c in enumerate(chars)}
    rows = np.flatnonzero(np.isin(data["char"], chars) & np.isin(data["font"], fonts))
    images = torch.from_numpy(data["images"][rows]).unsqueeze(1)
    labels = np.array([index[c] + label_offset for c in data["char"][rows]], dtype=np.int64)
    ids = np.char.add(np.char.add(data["font"][rows].astype(str), ":"), data["char"][rows].astype(str))
    out = TensorImageSet(images, labels, data["domain"][rows], class_names=list(chars), ids=ids)
    out.mirror_invariant = "glyph" not in MIRROR_VARIANT  # one list says which families are never flipped
    return out


def _present(data: dict, chars: list[str]) -> list[str]:
    present = set(data["char"].tolist())
    return [c for c in chars if c in present]


def _glyph_font_split(domain: str) -> tuple[list[str], list[str]]:
    """Disjoint (support fonts, test fonts) of a domain: a fixed-seed half each (support gets the extra one)."""
    fonts = _glyphs.fonts_of(domain)
    order = np.random.default_rng(_glyphs.SPLIT_SEED + len(domain)).permutation(len(fonts))
    cut = (len(fonts) + 1) // 2
    return [fonts[i] for i in sorted(order[:cut])], [fonts[i] for i in sorted(order[cut:])]


def _glyph_benchmark(name: str, image_size: int) -> Benchmark:
    data, plan = glyph_cache(image_size)
    spec = BENCHMARKS[name]
    known = _present(data, plan.bench[name][:_glyphs.NUM_KNOWN])
    chars = known + _present(data, plan.bench[name][_glyphs.NUM_KNOWN:])
    if spec["kind"] == "intra":
        support_fonts, test_fonts = _glyph_font_split(spec["domain_support"])
    else:
        support_fonts, test_fonts = _glyphs.fonts_of(spec["domain_support"]), _glyphs.fonts_of(spec["domain_test"])
    support = _glyph_set(data, known, support_fonts)
    support.class_names = chars
    return Benchmark(name, spec["kind"], support, _glyph_set(data, chars, test_fonts), len(known),
                     spec["domain_support"], spec["domain_test"])


# ---------------------------------------------------------------- emoji
def emoji_cache(image_size: int) -> dict:
    key = ("emoji_cache", image_size)
    if key not in _MEMO:
        _MEMO[key] = _emoji.build_cache(image_size)
    return _MEMO[key]


NUM_EMOJI_KNOWN = 15  # known and unknown subcategories per emoji benchmark; the rest form the emoji source


def emoji_classes(data: dict) -> dict[str, list[str]]:
    """Fixed split of the subcategories: `known` (15), `unknown` (15), `source` (the rest, for training/outliers)."""
    subs = sorted(set(data["subcategory"].tolist()))
    order = [subs[i] for i in np.random.default_rng(_emoji.SPLIT_SEED).permutation(len(subs))]
    k = NUM_EMOJI_KNOWN
    return {"known": order[:k], "unknown": order[k:2 * k], "source": order[2 * k:]}


def _emoji_support_hex(data: dict, known: list[str]) -> set[str]:
    """Half of each known subcategory's emoji (fixed seed) go to the support; the other half to the test."""
    rng = np.random.default_rng(_emoji.SPLIT_SEED + 1)
    chosen = set()
    for sub in known:
        hexes = sorted(set(data["hex"][data["subcategory"] == sub].tolist()))
        chosen.update(hexes[i] for i in rng.permutation(len(hexes))[: len(hexes) // 2])
    return chosen


def _emoji_set(data: dict, rows: np.ndarray, classes: list[str]) -> TensorImageSet:
    index = {c: i for i, c in enumerate(classes)}
    labels = np.array([index[s] for s in data["subcategory"][rows]], dtype=np.int64)
    ids = np.char.add(np.char.add(data["vendor"][rows].astype(str), ":"), data["hex"][rows].astype(str))
    return TensorImageSet(torch.from_numpy(data["images"][rows]), labels, data["vendor"][rows], list(classes), ids=ids)


def _emoji_benchmark(name: str, image_size: int) -> Benchmark:
    data = emoji_cache(image_size)
    spec = BENCHMARKS[name]
    split = emoji_classes(data)
    classes = split["known"] + split["unknown"]
    in_support = np.isin(data["hex"], list(_emoji_support_hex(data, split["known"])))
    known_rows = np.isin(data["subcategory"], split["known"])
    unknown_rows = np.isin(data["subcategory"], split["unknown"])
    sup = np.flatnonzero((data["vendor"] == spec["domain_support"]) & known_rows & in_support)
    test = np.flatnonzero((data["vendor"] == spec["domain_test"]) & ((known_rows & ~in_support) | unknown_rows))
    return Benchmark(name, spec["kind"], _emoji_set(data, sup, classes), _emoji_set(data, test, classes),
                     len(split["known"]), spec["domain_support"], spec["domain_test"])


# ---------------------------------------------------------------- fashion
FASHION_KNOWN = 5
FASHION_SUPPORT_PER_CLASS = 200
FASHION_TEST_PER_CLASS = 100
FASHION_SEED = 20223


def _resize_gray(images: np.ndarray, image_size: int) -> torch.Tensor:
    """uint8 (N,h,w) -> uint8 (N,3,S,S), bilinear with antialias, channels replicated (expanded view)."""
    x = torch.from_numpy(images).unsqueeze(1)
    if x.shape[-1] != image_size:
        x = torch.nn.functional.interpolate(x.float(), size=(image_size, image_size), mode="bilinear",
                                            antialias=True, align_corners=False).round().clamp(0, 255).to(torch.uint8)
    return x.expand(-1, 3, -1, -1)


def _fashion_benchmark(image_size: int) -> Benchmark:
    rng = np.random.default_rng(FASHION_SEED)
    order = rng.permutation(10)  # order[:5] known, order[5:] unknown
    relabel = np.empty(10, dtype=np.int64)
    relabel[order] = np.arange(10)
    names = [_fashion.CLASS_NAMES[i] for i in order]
    sets = []
    for split, per_class, classes in (("train", FASHION_SUPPORT_PER_CLASS, order[:FASHION_KNOWN]),
                                      ("t10k", FASHION_TEST_PER_CLASS, order)):
        images, labels = _fashion.load_split(split)
        rows = np.sort(np.concatenate([rng.choice(np.flatnonzero(labels == c), per_class, replace=False)
                                       for c in classes]))
        ids = np.array([f"{split}:{r}" for r in rows])
        sets.append(TensorImageSet(_resize_gray(images[rows], image_size), relabel[labels[rows]],
                                   np.full(len(rows), "fashion"), names, ids=ids))
    return Benchmark("fashion", "intra", sets[0], sets[1], FASHION_KNOWN, "fashion", "fashion")


# ---------------------------------------------------------------- real datasets
def _require_root(settings, what: str) -> Path:
    if not settings.data_root:
        raise ValueError(f"{what} needs real data but data_root is empty: set data_root to the folder holding it "
                         f"(layout in lib/splits/README.md) or pick an embedded benchmark")
    root = Path(settings.data_root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"data_root {root} does not exist: fix the data_root setting")
    return root


def load_split_list(list_path, data_root, image_size: int, domain: str = "", class_names=None,
                    verify: bool = True) -> FileImageSet:
    """A FileImageSet from a split list (`relpath label` per line, relpath relative to data_root)."""
    rows = _real.read_list(Path(list_path))
    paths = [Path(data_root) / rel for rel, _ in rows]
    if verify and rows and not any(p.is_file() for p in paths):
        raise FileNotFoundError(f"split list {list_path}: none of its {len(rows)} images exists under data_root "
                                f"{data_root} (first: {rows[0][0]} -> {paths[0]}): fix data_root or the list's path "
                                "prefix (layout in lib/splits/README.md)")
    labels = np.array([label for _, label in rows], dtype=np.int64)
    if class_names is None:
        class_names = [str(i) for i in range(int(labels.max()) + 1 if len(labels) else 0)]
    return FileImageSet(paths, labels, image_size, domains=[domain] * len(rows), class_names=class_names,
                        ids=[rel for rel, _ in rows], verify=verify)


def _real_set(root: Path, parts, image_size: int, known_only: bool) -> tuple[FileImageSet, int, list[str]]:
    """(images of the lists `parts`, num_known, the origin of every list read: paper | own | derived)."""
    sets, num_known, origins = [], None, []
    for dataset, domain, part in parts:
        classes_list = _real.split_list(root, dataset, domain, "classes")
        names = [n for n, _ in sorted(_real.read_list(classes_list), key=lambda r: r[1])]
        num_known = {"dtd": len(_real.DTD_KNOWN), "domainnet": 25, "pacs": 6, "officehome": 25}[dataset]
        listing = _real.split_list(root, dataset, domain, part)
        origins += [_real.list_origin(classes_list), _real.list_origin(listing)]
        s = load_split_list(listing, root, image_size, domain, names)
        if part == "mssupport":  # PACS multi-source support: three domains in one list, each row's from its path
            s.domains = np.array([rel.split("/")[1] for rel in s.ids])
        sets.append(s.subset(np.flatnonzero(s.labels < num_known)) if known_only else s)
    if len(sets) == 1:
        return sets[0], num_known, origins
    merged = FileImageSet(np.concatenate([s.paths for s in sets]), np.concatenate([s.labels for s in sets]),
                          image_size, np.concatenate([s.domains for s in sets]), sets[0].class_names,
                          ids=np.concatenate([s.ids for s in sets]), verify=False)
    return merged, num_known, origins


def _real_benchmark(name: str, settings) -> Benchmark:
    """A real benchmark from its split lists; the paper's own support / test list (`paper_support`, `paper_test`
    of lib.datasets.real.BENCHMARKS) replaces the default ones when it was converted or supplied."""
    root = _require_root(settings, f"benchmark {name!r}")
    spec = BENCHMARKS[name]
    real = spec["real"]
    sup_parts = real["support"] if isinstance(real["support"], list) else [real["support"]]
    test_part = real["test"]
    if real.get("paper_support") and _real.find_list(root, *real["paper_support"]):
        sup_parts = [real["paper_support"]]
    if real.get("paper_test") and _real.find_list(root, *real["paper_test"]):
        test_part = real["paper_test"]
    support, num_known, sup_origins = _real_set(root, sup_parts, settings.image_size, known_only=True)
    test, _, test_origins = _real_set(root, [test_part], settings.image_size, known_only=False)
    return Benchmark(name, spec["kind"], support, test, num_known, spec["domain_support"], spec["domain_test"],
                     split=_real.weakest_origin(sup_origins + test_origins))


def _imagenet_source(settings) -> FileImageSet:
    root = _require_root(settings, "dataset 'imagenet'")
    listing = root / "imagenet" / "train_list.txt"
    if listing.exists():
        rows = _real.read_list(listing)
        paths, labels = [root / r for r, _ in rows], np.array([l for _, l in rows], dtype=np.int64)
        names = [str(i) for i in range(int(labels.max()) + 1)]
    else:
        train = root / "imagenet" / "train"
        if not train.is_dir():
            raise FileNotFoundError(f"{train} does not exist: put ImageNet as imagenet/train/<wnid>/*.JPEG under "
                                    f"data_root (or a list imagenet/train_list.txt)")
        names = sorted(p.name for p in train.iterdir() if p.is_dir())
        paths, labels = [], []
        for i, wnid in enumerate(names):
            files = _real.list_images(train / wnid)
            paths += files
            labels += [i] * len(files)
        labels = np.array(labels, dtype=np.int64)
    s = FileImageSet(paths, labels, settings.image_size, domains=["imagenet"] * len(paths), class_names=names,
                     verify=False)  # 1.28M files: decode failures are counted lazily instead
    if settings.source_classes:
        s = s.subset(np.flatnonzero(s.labels < settings.source_classes))
        s.class_names = names[: settings.source_classes]
    return s


# ---------------------------------------------------------------- public loaders
def check_source(source: ImageSet) -> ImageSet:
    """Raise if a class of a relational training set has fewer than two images (no positive pair)."""
    counts = np.bincount(source.labels, minlength=len(source.class_names))
    small = np.flatnonzero(counts < 2)
    if len(small):
        raise ValueError(f"source class {source.class_names[small[0]]!r} has {counts[small[0]]} image(s) "
                         f"({len(small)} such classes): pairs need >= 2 per class; add images or drop the class")
    return source


def load_source(settings) -> ImageSet:
    """The relational training set (uint8 images, labels 0..C-1). glyph: printed fonts x source characters
    (never a benchmark character); emoji: google+twitter images of the source subcategories (never an emoji
    benchmark class); imagenet: data_root/imagenet. source_classes > 0 keeps the first N classes."""
    key = ("source", settings.dataset, settings.image_size, settings.source_classes, settings.data_root)
    if key in _MEMO:
        return _MEMO[key]
    n = settings.source_classes
    if settings.dataset == "glyph":
        data, plan = glyph_cache(settings.image_size)
        chars = _present(data, plan.source)
        source = _glyph_set(data, chars[:n] if n else chars, _glyphs.fonts_of("printed"))
    elif settings.dataset == "emoji":
        data = emoji_cache(settings.image_size)
        classes = emoji_classes(data)["source"]
        classes = classes[:n] if n else classes
        rows = np.flatnonzero(np.isin(data["subcategory"], classes) & np.isin(data["vendor"], ["google", "twitter"]))
        source = _emoji_set(data, rows, classes)
    elif settings.dataset == "fashion":
        raise ValueError("dataset 'fashion' has only 10 classes, all used by the fashion benchmark: "
                         "train on dataset glyph or emoji and evaluate on fashion")
    elif settings.dataset == "imagenet":
        source = _imagenet_source(settings)
    else:
        raise ValueError(f"unknown dataset {settings.dataset!r}: choose glyph, emoji, fashion or imagenet")
    _MEMO[key] = check_source(source)
    return source


def load_benchmark(name: str, settings) -> Benchmark:
    """The benchmark `name` at settings.image_size (memoised; embedded ones also write their split lists
    `id label` to .cache/splits/embedded/)."""
    if name not in BENCHMARKS:
        benchmark_names(name)  # raises the one-line "unknown benchmark" error
    key = ("benchmark", name, settings.image_size, settings.data_root if BENCHMARKS[name]["group"] == "real" else "")
    if key in _MEMO:
        return _MEMO[key]
    group = BENCHMARKS[name]["group"]
    if group == "glyph":
        bench = _glyph_benchmark(name, settings.image_size)
    elif group == "emoji":
        bench = _emoji_benchmark(name, settings.image_size)
    elif group == "fashion":
        bench = _fashion_benchmark(settings.image_size)
    else:
        bench = _real_benchmark(name, settings)
    if group != "real":
        out = CACHE_DIR / "splits" / "embedded"
        for part, s in (("support", bench.support), ("test", bench.test)):
            _real.write_list(out / f"{name}_{settings.image_size}px_{part}.txt", zip(s.ids, s.labels))
    _MEMO[key] = bench
    return bench


# MixOE's auxiliary outliers come from another dataset family than the benchmark's (docs/METHOD.md §10: a distant set, never the
# test unknowns' distribution; the paper uses WebVision for fine-grained benchmarks)
OUTLIER_FAMILY = {"glyph": "emoji", "emoji": "glyph", "fashion": "glyph", "real": "glyph"}


def outlier_family(name: str) -> str:
    """The dataset family of benchmark `name`'s auxiliary outliers (OUTLIER_FAMILY)."""
    if name not in BENCHMARKS:
        benchmark_names(name)  # raises the one-line "unknown benchmark" error
    return OUTLIER_FAMILY[BENCHMARKS[name]["group"]]


def outlier_pool(name: str, settings, max_images: int = 4000) -> ImageSet:
    """Auxiliary outliers for MixOE on benchmark `name`, from another family (`outlier_family`): glyph benchmarks get
    emoji of the emoji source subcategories (all vendors; never an emoji benchmark class); emoji, fashion and real
    benchmarks get printed glyphs of 200 source characters (never a glyph benchmark character). At most
    `max_images` (fixed-seed subsample)."""
    if outlier_family(name) == "emoji":
        data = emoji_cache(settings.image_size)
        classes = emoji_classes(data)["source"]
        pool = _emoji_set(data, np.flatnonzero(np.isin(data["subcategory"], classes)), classes)
    else:
        data, plan = glyph_cache(settings.image_size)
        pool = _glyph_set(data, _present(data, plan.source)[:200], _glyphs.fonts_of("printed"))
    if len(pool) > max_images:
        pool = pool.subset(np.sort(np.random.default_rng(0).choice(len(pool), max_images, replace=False)))
    return pool


def benchmark_summary(bench: Benchmark) -> dict[str, int]:
    """Split sizes as in docs/METHOD.md §7: support images, test known / unknown images, known / unknown classes."""
    known = bench.is_known()
    return {"support_images": len(bench.support), "test_known_images": int(known.sum()),
            "test_unknown_images": int((~known).sum()), "classes_known": bench.num_known,
            "classes_unknown": int(len(np.unique(bench.test.labels[~known])))}

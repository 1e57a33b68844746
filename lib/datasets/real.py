"""Real benchmarks (docs/METHOD.md §7) read from `data_root` through split lists `relpath label` (ReSeND format:
known = 0..K-1, unknown >= K; relpath relative to data_root). Lists are looked up in lib/splits/ (shipped, or
converted there from the ReSeND repository by ``python -m lib.splits.resend``), then data_root/splits/, else
derived deterministically from the standard folder layouts (lib/splits/README.md) into
.cache/splits/<hash of data_root>/. `list_origin` says which of the three a list is: ``paper`` (written by the
converter, unchanged since: its sha256 is in the folder's `PROVENANCE` file), ``own`` or ``derived``.
`FAMILY`: the real benchmarks and the ImageNet source, file-backed."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from lib.datasets.family import Family
from lib.datasets.imagesets import Benchmark, FileImageSet
from lib.paths import CACHE_DIR, SPLITS_DIR
from lib.runs import atomic_write_text

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
SPLIT_SEED = 20222
SUPPORT_FRACTION = 0.7  # known images going to the support set when no official train/test split exists

DOMAINNET_KNOWN = ["circle", "hexagon", "smiley_face", "squiggle", "calendar", "pond", "animal_migration", "golf_club",
                   "hurricane", "tornado", "elbow", "knee", "ocean", "rake", "yoga", "zigzag", "cloud", "bracelet",
                   "postcard", "stop_sign", "birthday_cake", "cookie", "arm", "chandelier", "camouflage"]
DOMAINNET_UNKNOWN = ["square", "octagon", "passport", "triangle", "toothpaste", "roller_coaster", "snowflake", "skull",
                     "tooth", "saw", "snowman", "ladder", "line", "stitches", "string_bean", "donut", "calculator",
                     "campfire", "moon", "sun", "map", "book", "steak", "foot", "leg"]
DTD_KNOWN = ["crystalline", "fibrous", "spiralled", "stratified", "matted", "porous", "scaly", "stained", "pleated",
             "flecked", "pitted", "meshed", "freckled", "waffled", "cracked", "potholed", "cobwebbed", "swirly",
             "polka-dotted", "striped", "studded", "grooved", "woven"]
PACS_KNOWN = ["dog", "elephant", "giraffe", "guitar", "horse", "house"]
PACS_UNKNOWN = ["person"]
OFFICEHOME_KNOWN_COUNT = 25  # the first 25 classes in alphabetical order are known (Saito et al. 2018 convention)

DOMAINNET_DOMAINS = ("real", "sketch", "painting")
PACS_DOMAINS = ("photo", "art_painting", "cartoon", "sketch")
OFFICEHOME_DOMAINS = ("Art", "Clipart", "Product", "Real_World")
DATA_HINT = "see lib/splits/README.md for the expected folder layout"


def _benchmarks() -> dict[str, dict]:
    out = {"dtd": dict(dataset="dtd", kind="intra", support=("dtd", "images", "support"), test=("dtd", "images", "test"))}
    for d in DOMAINNET_DOMAINS:
        out[f"domainnet_{d}"] = dict(dataset="domainnet", kind="intra", support=("domainnet", d, "support"),
                                     test=("domainnet", d, "test"))
    # paper_support / paper_test: a list of the paper's protocol that replaces support / test when present
    # (shipped or data_root/splits only, never derived): DomainNet_DG's cross-domain lists, PACS's source lists
    for a in DOMAINNET_DOMAINS:
        for b in DOMAINNET_DOMAINS:
            if a != b:
                out[f"domainnet_{a}_to_{b}"] = dict(dataset="domainnet", kind="cross", support=("domainnet", a, "support"),
                                                    test=("domainnet", b, "test"),
                                                    paper_support=("domainnet", a, "crosssupport"),
                                                    paper_test=("domainnet", b, "crosstest"))
    for t in PACS_DOMAINS[1:]:
        out[f"pacs_ss_photo_to_{t}"] = dict(dataset="pacs", kind="cross", support=[("pacs", "photo", "all")],
                                            test=("pacs", t, "all"), paper_support=("pacs", "photo", "sssupport"))
    for t in PACS_DOMAINS:
        out[f"pacs_ms_{t}"] = dict(dataset="pacs", kind="cross", support=[("pacs", s, "all") for s in PACS_DOMAINS if s != t],
                                   test=("pacs", t, "all"), paper_support=("pacs", t, "mssupport"))
    for d in OFFICEHOME_DOMAINS:
        out[f"officehome_{d.lower()}"] = dict(dataset="officehome", kind="intra", support=("officehome", d, "support"),
                                              test=("officehome", d, "test"))
    return out


BENCHMARKS = _benchmarks()
FOLDERS = {"dtd": "dtd", "domainnet": "domainnet", "pacs": "pacs", "officehome": "officehome", "imagenet": "imagenet"}


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_EXTS and p.is_file())


def class_order(dataset: str, present: list[str]) -> tuple[list[str], int]:
    """(class names in label order, number of known): known classes first in the order of docs/METHOD.md §7, then the rest sorted."""
    known = {"dtd": DTD_KNOWN, "domainnet": DOMAINNET_KNOWN, "pacs": PACS_KNOWN,
             "officehome": sorted(present)[:OFFICEHOME_KNOWN_COUNT]}[dataset]
    if dataset == "domainnet":
        rest = DOMAINNET_UNKNOWN
    elif dataset == "pacs":
        rest = PACS_UNKNOWN
    else:
        rest = sorted(c for c in present if c not in known)
    missing = [c for c in list(known) + list(rest) if c not in present]
    if missing:
        raise FileNotFoundError(f"{dataset}: class folder(s) {missing[:5]} missing ({len(missing)} in all): {DATA_HINT}")
    return list(known) + list(rest), len(known)


def domain_dir(data_root: Path, dataset: str, domain: str) -> Path:
    return Path(data_root) / FOLDERS[dataset] / domain


def _official_split(data_root: Path, dataset: str, domain: str, part: str) -> dict[str, str] | None:
    """DomainNet's official `<domain>_train.txt` / `<domain>_test.txt` (paths relative to domainnet/), if present."""
    if dataset != "domainnet":
        return None
    path = Path(data_root) / "domainnet" / f"{domain}_{part}.txt"
    if not path.exists():
        return None
    return {line.split()[0] for line in path.read_text().splitlines() if line.strip()}


def derive_lists(data_root: Path, dataset: str, domain: str) -> dict[str, list[tuple[str, int]]]:
    """Split rows (relpath, label) of one dataset domain: `support` (70% of each known class, seeded, or the
    official train split), `test` (the other known images + every unknown image, or the official test split),
    `all` (every image)."""
    data_root = Path(data_root)
    folder = domain_dir(data_root, dataset, domain)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} does not exist: put {dataset} under data_root ({DATA_HINT})")
    present = sorted(p.name for p in folder.iterdir() if p.is_dir())
    names, num_known = class_order(dataset, present)
    rng = np.random.default_rng(SPLIT_SEED)
    train, test = _official_split(data_root, dataset, domain, "train"), _official_split(data_root, dataset, domain, "test")
    rows = {"support": [], "test": [], "all": []}
    for label, name in enumerate(names):
        files = [p.relative_to(data_root).as_posix() for p in list_images(folder / name)]
        rows["all"] += [(f, label) for f in files]
        if train is not None and test is not None:
            rel = lambda f: f.split("/", 1)[1]  # noqa: E731 - official lists are relative to domainnet/
            if label < num_known:
                rows["support"] += [(f, label) for f in files if rel(f) in train]
            rows["test"] += [(f, label) for f in files if rel(f) in test]
        elif label < num_known:
            order = rng.permutation(len(files))
            cut = int(round(SUPPORT_FRACTION * len(files)))
            rows["support"] += [(files[i], label) for i in sorted(order[:cut])]
            rows["test"] += [(files[i], label) for i in sorted(order[cut:])]
        else:
            rows["test"] += [(f, label) for f in files]
    rows["classes"] = [(n, i) for i, n in enumerate(names)]
    rows["num_known"] = num_known
    return rows


def write_list(path: Path, rows) -> None:
    atomic_write_text(Path(path), "".join(f"{rel} {label}\n" for rel, label in rows))


def read_list(path: Path) -> list[tuple[str, int]]:
    """Rows of a split list; a path may contain spaces (the label is the last field)."""
    rows = []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.rsplit(maxsplit=1)
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            raise ValueError(f"{path}:{n}: expected `relpath label`, got {line!r}: fix the split list")
        rows.append((parts[0], int(parts[1])))
    return rows


def content_key(folder: Path) -> str:
    """12 hex digits naming what `folder` holds: every image's relative path and size (a walk of names, no
    decoding), so a derived split is derived again when images are added, removed or replaced."""
    entries = sorted(f"{p.relative_to(folder).as_posix()}:{p.stat().st_size}"
                     for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_EXTS)
    return hashlib.sha256("\n".join(entries).encode()).hexdigest()[:12]


def split_dir(data_root: Path, dataset: str = "", domain: str = "") -> Path:
    """Cache folder of the lists derived from one dataset domain, keyed on the root and on the domain's content."""
    root = CACHE_DIR / "splits" / hashlib.sha256(str(Path(data_root).resolve()).encode()).hexdigest()[:12]
    if not dataset:
        return root
    folder = domain_dir(data_root, dataset, domain)
    return root / f"{dataset}_{domain}_{content_key(folder) if folder.is_dir() else 'absent'}"


PROVENANCE = "resend_lists.json"  # written by lib.splits.resend next to the lists it converted: {file: sha256}
ORIGINS = ("paper", "own", "derived")  # from the paper's lists to the least comparable: a benchmark takes the last
ORIGIN_LABELS = {"paper": "the paper's split", "own": "own split lists, not checked against the paper's",
                 "derived": "derived split, not the paper's"}  # what a table says of a benchmark's lists


def list_name(dataset: str, domain: str, part: str) -> str:
    return f"{dataset}_{domain}_{part}.txt"


def find_list(data_root: Path, dataset: str, domain: str, part: str) -> Path | None:
    """The given (not derived) list `<dataset>_<domain>_<part>.txt`: lib/splits/, else data_root/splits/, else None."""
    name = list_name(dataset, domain, part)
    return next((f / name for f in (SPLITS_DIR, Path(data_root) / "splits") if (f / name).exists()), None)


def list_origin(path: Path) -> str:
    """``paper``: converted from the ReSeND lists by lib.splits.resend and unchanged (its sha256 is in the folder's
    PROVENANCE file); ``derived``: made from the folders (the cache); ``own``: any other list."""
    path = Path(path)
    if path.resolve().is_relative_to((CACHE_DIR / "splits").resolve()):
        return "derived"
    record = path.parent / PROVENANCE
    if record.exists():
        files = json.loads(record.read_text()).get("files", {})
        if files.get(path.name) == hashlib.sha256(path.read_bytes()).hexdigest():
            return "paper"
    return "own"


def weakest_origin(origins) -> str:
    """The least comparable of several lists' origins (paper < own < derived)."""
    return max(origins, key=ORIGINS.index)


def split_list(data_root: Path, dataset: str, domain: str, part: str) -> Path:
    """Path of the list `<dataset>_<domain>_<part>.txt` (part: support | test | all | classes): shipped one,
    else data_root/splits/, else derived from the folder's current content into the cache."""
    found = find_list(data_root, dataset, domain, part)
    if found is not None:
        return found
    name = list_name(dataset, domain, part)
    derived = split_dir(data_root, dataset, domain)
    if (derived / name).exists():
        return derived / name
    rows = derive_lists(data_root, dataset, domain)
    out = derived
    for key in ("support", "test", "all", "classes"):
        write_list(out / f"{dataset}_{domain}_{key}.txt", rows[key])
    return out / name


def write_all_lists(data_root: Path) -> list[Path]:
    """Derive the lists of every real dataset found under data_root; return the files written."""
    written = []
    for dataset, domains in (("dtd", ("images",)), ("domainnet", DOMAINNET_DOMAINS), ("pacs", PACS_DOMAINS),
                             ("officehome", OFFICEHOME_DOMAINS)):
        for domain in domains:
            if domain_dir(data_root, dataset, domain).is_dir():
                written += [split_list(data_root, dataset, domain, p) for p in ("support", "test", "all", "classes")]
    return written


# ---------------------------------------------------------------- the real family: benchmarks, ImageNet source
NUM_KNOWN = {"dtd": len(DTD_KNOWN), "domainnet": len(DOMAINNET_KNOWN), "pacs": len(PACS_KNOWN),
             "officehome": OFFICEHOME_KNOWN_COUNT}


def require_root(settings, what: str) -> Path:
    """settings.data_root as a Path; a one-line error when it is empty or not a folder."""
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
    rows = read_list(Path(list_path))
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


def real_set(root: Path, parts, image_size: int, known_only: bool) -> tuple[FileImageSet, int, list[str]]:
    """The images of split lists `parts` [(dataset, domain, part)] as one set (known classes only with
    `known_only`), the number of known classes, and the origin of every list read (paper | own | derived)."""
    sets, num_known, origins = [], None, []
    for dataset, domain, part in parts:
        classes_list = split_list(root, dataset, domain, "classes")
        names = [n for n, _ in sorted(read_list(classes_list), key=lambda r: r[1])]
        num_known = NUM_KNOWN[dataset]
        listing = split_list(root, dataset, domain, part)
        origins += [list_origin(classes_list), list_origin(listing)]
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


def _support_parts(spec: dict) -> list:
    return spec["support"] if isinstance(spec["support"], list) else [spec["support"]]


def benchmark(name: str, settings) -> Benchmark:
    """Real benchmark `name` from settings.data_root: support = the known images of its support list(s), test = its
    test list; the paper's own support / test list (`paper_support`, `paper_test` of BENCHMARKS) replaces the
    default one when it was converted or supplied."""
    root = require_root(settings, f"benchmark {name!r}")
    spec = FAMILY.benchmarks[name]
    real = spec["real"]
    sup_parts, test_part = _support_parts(real), real["test"]
    if real.get("paper_support") and find_list(root, *real["paper_support"]):
        sup_parts = [real["paper_support"]]
    if real.get("paper_test") and find_list(root, *real["paper_test"]):
        test_part = real["paper_test"]
    support, num_known, sup_origins = real_set(root, sup_parts, settings.image_size, known_only=True)
    test, _, test_origins = real_set(root, [test_part], settings.image_size, known_only=False)
    return Benchmark(name, spec["kind"], support, test, num_known, spec["domain_support"], spec["domain_test"],
                     split=weakest_origin(sup_origins + test_origins))


def imagenet_source(settings) -> FileImageSet:
    """data_root/imagenet: the list imagenet/train_list.txt, else the folders imagenet/train/<wnid>/ (class = wnid,
    sorted); the first source_classes classes (all with 0)."""
    root = require_root(settings, "dataset 'imagenet'")
    listing = root / "imagenet" / "train_list.txt"
    if listing.exists():
        rows = read_list(listing)
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
            files = list_images(train / wnid)
            paths += files
            labels += [i] * len(files)
        labels = np.array(labels, dtype=np.int64)
    s = FileImageSet(paths, labels, settings.image_size, domains=["imagenet"] * len(paths), class_names=names,
                     verify=False)  # 1.28M files: decode failures are counted lazily instead
    if settings.source_classes:
        s = s.subset(np.flatnonzero(s.labels < settings.source_classes))
        s.class_names = names[: settings.source_classes]
    return s


FAMILY = Family("real", {name: dict(kind=spec["kind"], domain_support="+".join(p[1] for p in _support_parts(spec)),
                                    domain_test=spec["test"][1], real=spec) for name, spec in BENCHMARKS.items()},
                benchmark, outlier_family="glyph", file_backed=True, datasets=("imagenet",), source=imagenet_source)

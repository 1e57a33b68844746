"""Emoji in four vendor styles (the DomainNet stand-in): google, twitter (PNG, emoji-datasource-*),
openmoji (colour SVG) and openmoji_line (black line-art SVG, the 'sketch' domain). Classes = emoji
subcategories with >= 10 emoji present in every vendor. Images are RGBA composited on white. `FAMILY`: its
benchmarks (one per vendor, six vendor pairs), its source and its outlier images."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from pathlib import Path

import numpy as np
import torch

from lib.datasets.family import Family
from lib.datasets.imagesets import Benchmark, TensorImageSet
from lib.paths import CACHE_DIR
from lib.progress import bar as progress_bar

log = logging.getLogger(__name__)

NPM_DIR = CACHE_DIR / "npm" / "node_modules"
# pinned in scripts/install_data.sh too
PACKAGES = {"emoji-datasource-google": "16.0.0", "emoji-datasource-twitter": "16.0.0", "openmoji": "17.0.0"}
VENDORS = ("google", "twitter", "openmoji", "openmoji_line")
MIN_PER_CLASS = 10
MAX_PER_CLASS = 40  # country-flag has ~260 emoji: keep the first 40 (by sort order) so classes stay balanced
SPLIT_SEED = 20221
SETUP_HINT = "run `make setup` (scripts/install_data.sh) to install the emoji npm packages into .cache/npm"


def check_packages(npm_dir: Path | None = None) -> None:
    npm_dir = npm_dir or NPM_DIR
    missing = [p for p in PACKAGES if not (Path(npm_dir) / p / "package.json").exists()]
    if missing:
        raise FileNotFoundError(f"npm package(s) {', '.join(missing)} missing under {npm_dir}: {SETUP_HINT}, or copy "
                                ".cache/emoji_*.json and .cache/emoji_*.npz from a machine that rendered them")


def catalogue(npm_dir: Path | None = None) -> list[dict]:
    """Emoji present in every vendor, as dicts (hex, image, openmoji hex, subcategory, name), sorted by
    subcategory then sort order; only subcategories with >= MIN_PER_CLASS emoji, capped at MAX_PER_CLASS."""
    npm_dir = Path(npm_dir or NPM_DIR)
    check_packages(npm_dir)
    google = json.loads((npm_dir / "emoji-datasource-google" / "emoji.json").read_text())
    openmoji = {e["hexcode"]: e for e in json.loads((npm_dir / "openmoji" / "data" / "openmoji.json").read_text())}
    rows = []
    for e in sorted(google, key=lambda e: e["sort_order"]):
        om = openmoji.get(e["unified"]) or openmoji.get(e["unified"].replace("-FE0F", ""))
        if not (e.get("has_img_google") and e.get("has_img_twitter") and om):
            continue
        files = [npm_dir / "emoji-datasource-google/img/google/64" / e["image"],
                 npm_dir / "emoji-datasource-twitter/img/twitter/64" / e["image"],
                 npm_dir / f"openmoji/color/svg/{om['hexcode']}.svg", npm_dir / f"openmoji/black/svg/{om['hexcode']}.svg"]
        if all(f.exists() for f in files):
            rows.append({"hex": e["unified"], "image": e["image"], "om_hex": om["hexcode"],
                         "subcategory": e["subcategory"], "name": e.get("short_name", "")})
    by_class: dict[str, list[dict]] = {}
    for r in rows:
        by_class.setdefault(r["subcategory"], []).append(r)
    keep = []
    for sub in sorted(by_class):
        if len(by_class[sub]) >= MIN_PER_CLASS:
            keep += by_class[sub][:MAX_PER_CLASS]
    return keep


def _on_white(rgba, size: int) -> np.ndarray:
    from PIL import Image

    rgba = rgba.convert("RGBA")
    if rgba.size != (size, size):
        rgba = rgba.resize((size, size), Image.LANCZOS)
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"), dtype=np.uint8)


def render_emoji(row: dict, vendor: str, size: int, npm_dir: Path | None = None) -> np.ndarray:
    """One emoji in one vendor style: uint8 (size, size, 3) on white."""
    from PIL import Image

    npm_dir = Path(npm_dir or NPM_DIR)
    if vendor in ("google", "twitter"):
        with Image.open(npm_dir / f"emoji-datasource-{vendor}/img/{vendor}/64" / row["image"]) as im:
            return _on_white(im, size)
    import cairosvg

    folder = "color" if vendor == "openmoji" else "black"
    png = cairosvg.svg2png(url=str(npm_dir / f"openmoji/{folder}/svg/{row['om_hex']}.svg"),
                           output_width=size * 2, output_height=size * 2)
    with Image.open(io.BytesIO(png)) as im:
        return _on_white(im, size)


def index_path(size: int) -> Path:
    """``.cache/emoji_<size>px_<hash>.json``: which rendered cache (``emoji_<key>.npz``) the pinned packages give at
    `size`, written whenever the key is computed from the npm packages, so a machine with the cache but without
    `.cache/npm` (a GPU node) finds it (`build_cache`)."""
    recipe = {"packages": PACKAGES, "vendors": VENDORS, "min": MIN_PER_CLASS, "max": MAX_PER_CLASS, "size": int(size)}
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]
    return CACHE_DIR / f"emoji_{size}px_{digest}.json"


def build_cache(size: int, cache_dir: Path | None = None, npm_dir: Path | None = None, progress: bool = True) -> dict:
    """Render (or load) every catalogue emoji in every vendor. Returns images (N,3,H,W) uint8, hex (N,),
    vendor (N,), subcategory (N,). Without the npm packages, the cache named by `index_path` is loaded."""
    npm_dir, cache_dir = Path(npm_dir or NPM_DIR), Path(cache_dir or CACHE_DIR)
    index = index_path(size)
    if not all((npm_dir / p / "package.json").exists() for p in PACKAGES) and index.exists():
        path = cache_dir / json.loads(index.read_text())["file"]
        if path.exists():
            with np.load(path) as z:
                return {k: z[k] for k in z.files}
    rows = catalogue(npm_dir)  # raises FileNotFoundError naming the missing packages
    versions = {p: json.loads((npm_dir / p / "package.json").read_text())["version"] for p in PACKAGES}
    recipe = {"v": 1, "versions": versions, "hex": [r["hex"] for r in rows], "size": int(size)}
    key = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]
    path = cache_dir / f"emoji_{key}.npz"
    if versions == PACKAGES:  # the pinned packages: record which file they give, for machines without them
        text = json.dumps({"file": path.name})
        if not index.exists() or index.read_text() != text:
            index.parent.mkdir(parents=True, exist_ok=True)
            tmp = index.with_name(f".{index.stem}.{os.getpid()}.tmp")
            tmp.write_text(text)
            tmp.replace(index)
    if path.exists():
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    images = np.empty((len(rows) * len(VENDORS), size, size, 3), dtype=np.uint8)
    meta = []
    with progress_bar(total=len(images), desc=f"rendering emoji {size}px", disable=not progress, unit="img") as bar:
        for vendor in VENDORS:
            for r in rows:
                images[len(meta)] = render_emoji(r, vendor, size, npm_dir)
                meta.append((r["hex"], vendor, r["subcategory"]))
                bar.update(1)
    data = {"images": images.transpose(0, 3, 1, 2).copy(), "hex": np.asarray([m[0] for m in meta]),
            "vendor": np.asarray([m[1] for m in meta]), "subcategory": np.asarray([m[2] for m in meta])}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")  # unique: parallel workers may render at once
    np.savez(tmp, **data)
    tmp.replace(path)
    return data


# ---------------------------------------------------------------- the emoji family: sets, benchmarks, source
CROSS = [("google", "openmoji_line"), ("google", "twitter"), ("twitter", "google"),
         ("twitter", "openmoji"), ("openmoji", "openmoji_line"), ("openmoji_line", "google")]
NUM_KNOWN = 15  # known and unknown subcategories per emoji benchmark; the rest form the emoji source
SOURCE_VENDORS = ["google", "twitter"]
_MEMO: dict[int, dict] = {}


def emoji_cache(image_size: int) -> dict:
    """The arrays of the rendered emoji cache, memoised per image size."""
    if image_size not in _MEMO:
        _MEMO[image_size] = build_cache(image_size)
    return _MEMO[image_size]


def emoji_classes(data: dict) -> dict[str, list[str]]:
    """Fixed split of the subcategories: `known` (15), `unknown` (15), `source` (the rest, for training/outliers)."""
    subs = sorted(set(data["subcategory"].tolist()))
    order = [subs[i] for i in np.random.default_rng(SPLIT_SEED).permutation(len(subs))]
    k = NUM_KNOWN
    return {"known": order[:k], "unknown": order[k:2 * k], "source": order[2 * k:]}


def support_hex(data: dict, known: list[str]) -> set[str]:
    """Half of each known subcategory's emoji (fixed seed) go to the support; the other half to the test."""
    rng = np.random.default_rng(SPLIT_SEED + 1)
    chosen = set()
    for sub in known:
        hexes = sorted(set(data["hex"][data["subcategory"] == sub].tolist()))
        chosen.update(hexes[i] for i in rng.permutation(len(hexes))[: len(hexes) // 2])
    return chosen


def emoji_set(data: dict, rows: np.ndarray, classes: list[str]) -> TensorImageSet:
    """Cache rows `rows` as an image set, label = position of the subcategory in `classes`, id = vendor:hex."""
    index = {c: i for i, c in enumerate(classes)}
    labels = np.array([index[s] for s in data["subcategory"][rows]], dtype=np.int64)
    ids = np.char.add(np.char.add(data["vendor"][rows].astype(str), ":"), data["hex"][rows].astype(str))
    return TensorImageSet(torch.from_numpy(data["images"][rows]), labels, data["vendor"][rows], list(classes), ids=ids)


def _benchmarks() -> dict[str, dict]:
    reg = {f"emoji_{v}": dict(kind="intra", domain_support=v, domain_test=v) for v in VENDORS}
    reg.update({f"emoji_{a}_to_{b}": dict(kind="cross", domain_support=a, domain_test=b) for a, b in CROSS})
    return reg


def benchmark(name: str, settings) -> Benchmark:
    """Emoji benchmark `name`: support = half the emoji of the known subcategories in the support vendor; test = the
    other half + every emoji of the unknown subcategories in the test vendor."""
    data = emoji_cache(settings.image_size)
    spec = FAMILY.benchmarks[name]
    split = emoji_classes(data)
    classes = split["known"] + split["unknown"]
    in_support = np.isin(data["hex"], list(support_hex(data, split["known"])))
    known_rows = np.isin(data["subcategory"], split["known"])
    unknown_rows = np.isin(data["subcategory"], split["unknown"])
    sup = np.flatnonzero((data["vendor"] == spec["domain_support"]) & known_rows & in_support)
    test = np.flatnonzero((data["vendor"] == spec["domain_test"]) & ((known_rows & ~in_support) | unknown_rows))
    return Benchmark(name, spec["kind"], emoji_set(data, sup, classes), emoji_set(data, test, classes),
                     len(split["known"]), spec["domain_support"], spec["domain_test"])


def source(settings) -> TensorImageSet:
    """google + twitter images of the first source_classes source subcategories (never an emoji benchmark class)."""
    data = emoji_cache(settings.image_size)
    classes = emoji_classes(data)["source"]
    n = settings.source_classes
    classes = classes[:n] if n else classes
    rows = np.flatnonzero(np.isin(data["subcategory"], classes) & np.isin(data["vendor"], SOURCE_VENDORS))
    return emoji_set(data, rows, classes)


def outlier_images(settings) -> TensorImageSet:
    """Every vendor's images of the source subcategories (never an emoji benchmark class)."""
    data = emoji_cache(settings.image_size)
    classes = emoji_classes(data)["source"]
    return emoji_set(data, np.flatnonzero(np.isin(data["subcategory"], classes)), classes)


FAMILY = Family("emoji", _benchmarks(), benchmark, outlier_family="glyph", datasets=("emoji",), source=source,
                outlier_images=outlier_images)

"""Emoji in four vendor styles (the DomainNet stand-in): google, twitter (PNG, emoji-datasource-*),
openmoji (colour SVG) and openmoji_line (black line-art SVG, the 'sketch' domain). Classes = emoji
subcategories with >= 10 emoji present in every vendor. Images are RGBA composited on white."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from pathlib import Path

import numpy as np

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


def check_packages(npm_dir: Path = NPM_DIR) -> None:
    missing = [p for p in PACKAGES if not (Path(npm_dir) / p / "package.json").exists()]
    if missing:
        raise FileNotFoundError(f"npm package(s) {', '.join(missing)} missing under {npm_dir}: {SETUP_HINT}")


def catalogue(npm_dir: Path = NPM_DIR) -> list[dict]:
    """Emoji present in every vendor, as dicts (hex, image, openmoji hex, subcategory, name), sorted by
    subcategory then sort order; only subcategories with >= MIN_PER_CLASS emoji, capped at MAX_PER_CLASS."""
    check_packages(npm_dir)
    npm_dir = Path(npm_dir)
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


def render_emoji(row: dict, vendor: str, size: int, npm_dir: Path = NPM_DIR) -> np.ndarray:
    """One emoji in one vendor style: uint8 (size, size, 3) on white."""
    from PIL import Image

    npm_dir = Path(npm_dir)
    if vendor in ("google", "twitter"):
        with Image.open(npm_dir / f"emoji-datasource-{vendor}/img/{vendor}/64" / row["image"]) as im:
            return _on_white(im, size)
    import cairosvg

    folder = "color" if vendor == "openmoji" else "black"
    png = cairosvg.svg2png(url=str(npm_dir / f"openmoji/{folder}/svg/{row['om_hex']}.svg"),
                           output_width=size * 2, output_height=size * 2)
    with Image.open(io.BytesIO(png)) as im:
        return _on_white(im, size)


def build_cache(size: int, cache_dir: Path = CACHE_DIR, npm_dir: Path = NPM_DIR, progress: bool = True) -> dict:
    """Render (or load) every catalogue emoji in every vendor. Returns images (N,3,H,W) uint8, hex (N,),
    vendor (N,), subcategory (N,)."""
    rows = catalogue(npm_dir)
    versions = {p: json.loads((Path(npm_dir) / p / "package.json").read_text())["version"] for p in PACKAGES}
    recipe = {"v": 1, "versions": versions, "hex": [r["hex"] for r in rows], "size": int(size)}
    key = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]
    path = Path(cache_dir) / f"emoji_{key}.npz"
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

"""CJK glyphs rendered from Debian font packages: the embedded ImageNet stand-in and four benchmarks (`FAMILY`).

Classes are CJK Unified Ideographs covered by every chosen font; domains are font groups (`printed`,
`handwritten`). Images are black ink on white, centred on the ink's bounding box, cached as uint8 npz.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lib.datasets.family import Family
from lib.datasets.imagesets import Benchmark, TensorImageSet
from lib.paths import CACHE_DIR
from lib.progress import bar as progress_bar

log = logging.getLogger(__name__)

FONT_ROOT = Path("/usr/share/fonts")
SETUP_HINT = "run `make setup` (scripts/install_data.sh) to install the font packages"

# name -> (path under /usr/share/fonts, face index in a .ttc, domain, Debian package). Domains were decided
# by looking at rendered sheets: kai, brush (gyosho/sousho), pen and marker styles are `handwritten`.
FONTS: dict[str, tuple[str, int, str, str]] = {
    "ipa_mincho": ("opentype/ipafont-mincho/ipam.ttf", 0, "printed", "fonts-ipafont-mincho"),
    "ipa_gothic": ("opentype/ipafont-gothic/ipag.ttf", 0, "printed", "fonts-ipafont-gothic"),
    "bizud_mincho": ("truetype/bizud-mincho/BIZUDMincho-Regular.ttf", 0, "printed", "fonts-morisawa-bizud-mincho"),
    "bizud_gothic": ("truetype/bizud-gothic/BIZUDGothic-Regular.ttf", 0, "printed", "fonts-morisawa-bizud-gothic"),
    "vl_gothic": ("truetype/vlgothic/VL-Gothic-Regular.ttf", 0, "printed", "fonts-vlgothic"),
    "wqy_zenhei": ("truetype/wqy/wqy-zenhei.ttc", 0, "printed", "fonts-wqy-zenhei"),
    "ar_uming": ("truetype/arphic/uming.ttc", 2, "printed", "fonts-arphic-uming"),  # face 2 = TW
    "cwtex_ming": ("truetype/cwtex/cwming.ttf", 0, "printed", "fonts-cwtex-ming"),
    "cwtex_fangsong": ("truetype/cwtex/cwfs.ttf", 0, "printed", "fonts-cwtex-fs"),  # fangsong is a print face
    "dejima_mincho": ("truetype/dejima-mincho/dejima-mincho-r227.ttf", 0, "printed", "fonts-dejima-mincho"),
    "mplus1": ("opentype/mplus/Mplus1-Regular.otf", 0, "printed", "fonts-mplus"),
    "motoya_maru": ("truetype/motoya-l-maruberi/MTLmr3m.ttf", 0, "printed", "fonts-motoya-l-maruberi"),
    "motoya_cedar": ("truetype/motoya-l-cedar/MTLc3m.ttf", 0, "printed", "fonts-motoya-l-cedar"),
    "ar_ukai": ("truetype/arphic/ukai.ttc", 2, "handwritten", "fonts-arphic-ukai"),
    "cwtex_kai": ("truetype/cwtex/cwkai.ttf", 0, "handwritten", "fonts-cwtex-kai"),
    "kouzan_kaisho": ("truetype/kouzan-mouhitsu/kouzan-mouhitsu.ttf", 0, "handwritten", "fonts-kouzan-mouhitsu"),
    "kouzan_gyosho": ("truetype/kouzan-mouhitsu/kouzan-mouhitsu-gyosho.ttf", 0, "handwritten", "fonts-kouzan-mouhitsu"),
    "kouzan_sousho": ("truetype/kouzan-mouhitsu/KouzanBrushFontSousyo.ttf", 0, "handwritten", "fonts-kouzan-mouhitsu"),
    "aoyagi_soseki": ("truetype/aoyagi-soseki/aoyagi-soseki.ttf", 0, "handwritten", "fonts-aoyagi-soseki"),
    "yusei_magic": ("truetype/yusei-magic/YuseiMagic-Regular.ttf", 0, "handwritten", "fonts-yusei-magic"),
    "klee": ("truetype/klee/KleeOne-Regular.ttf", 0, "handwritten", "fonts-klee"),
    "kiloji": ("truetype/kiloji/kiloji.ttf", 0, "handwritten", "fonts-kiloji"),
    "seto": ("truetype/seto/setofont.ttf", 0, "handwritten", "fonts-seto"),
}
DOMAINS = ("printed", "handwritten")
CJK_RANGE = (0x4E00, 0x9FFF)  # CJK Unified Ideographs block
MIN_FONT_COVERAGE = 3000  # a font covering fewer CJK characters than this is dropped from the intersection
SPLIT_SEED = 20220  # fixed: splits never depend on the run seed
MAX_SOURCE_CHARS = 2000  # cap of the source character pool (keeps the cache ~31k images)
# Per glyph benchmark: 50 known + 50 unknown characters (was 25 + 25). The bootstrap SE of the AUROC over test
# images (frozen-backbone reference row) at 25/50/75/100/125/150 known: glyph_handwritten .028/.022/.018/.015/.014/.014,
# printed_to_handwritten .022/.017/.012/.012/.011/.011, handwritten_to_printed .011/.011/.009/.008/.008/.007,
# printed .005/.004/.004/.004/.004/.004. Past 100 known the SE barely falls (the AUROC drops as classes are added;
# glyph_handwritten tests on 5 fonts only) while the relational eval cost grows as (test images x known classes):
# 170k relational pairs per run at 50 known, 680k at 100 known. 50 known is what the mini study's 20-minute demo
# (33 runs) affords; SE <= 0.01 holds on printed and about on handwritten_to_printed, not on the handwritten tests
# (that needs more test fonts than the 10 handwritten ones).
BENCH_CHARS = 100
NUM_KNOWN = BENCH_CHARS // 2
BENCHMARKS = ("glyph_printed", "glyph_handwritten", "glyph_printed_to_handwritten", "glyph_handwritten_to_printed")


def font_path(name: str) -> Path:
    return FONT_ROOT / FONTS[name][0]


def fonts_of(domain: str) -> list[str]:
    return [n for n, spec in FONTS.items() if spec[2] == domain]


def check_fonts(names) -> None:
    missing = [n for n in names if not font_path(n).exists()]
    if missing:
        pkgs = sorted({FONTS[n][3] for n in missing})
        raise FileNotFoundError(f"font file(s) missing for {missing} (packages {' '.join(pkgs)}): {SETUP_HINT}, or "
                                "copy .cache/glyph_plan_*.json and .cache/glyph_*.npz from a machine that rendered them")


def font_coverage(name: str) -> set[int]:
    """CJK Unified Ideograph code points in the font's cmap (fontTools)."""
    from fontTools.ttLib import TTFont

    path, index = font_path(name), FONTS[name][1]
    font = TTFont(str(path), fontNumber=index, lazy=True)
    try:
        return {c for c in font.getBestCmap() if CJK_RANGE[0] <= c <= CJK_RANGE[1]}
    finally:
        font.close()


def common_characters(names) -> tuple[list[str], dict[str, str]]:
    """Characters covered by every font (sorted by code point), and the fonts dropped with their reason."""
    check_fonts(names)
    cover = {n: font_coverage(n) for n in names}
    dropped = {n: f"covers only {len(c)} CJK characters (< {MIN_FONT_COVERAGE})"
               for n, c in cover.items() if len(c) < MIN_FONT_COVERAGE}
    for n, why in dropped.items():
        log.warning("glyph font %s dropped from the intersection: %s", n, why)
    kept = [cover[n] for n in names if n not in dropped]
    return [chr(c) for c in sorted(set.intersection(*kept))], dropped


def render_glyphs(font_name: str, chars, size: int) -> np.ndarray:
    """Render `chars` with one font: uint8 (len(chars), size, size), black ink (0) on white (255), centred on
    the ink bounding box, scaled to fit 90% of the square. Deterministic (PIL, no randomness)."""
    from PIL import Image, ImageDraw, ImageFont

    scale = 2  # render at 2x then downsample: smoother strokes at 32 px
    big = size * scale
    font = ImageFont.truetype(str(font_path(font_name)), int(big * 0.85), index=FONTS[font_name][1])
    out = np.full((len(chars), size, size), 255, dtype=np.uint8)
    canvas_side = int(big * 1.6)
    target = int(round(big * 0.9))
    for k, ch in enumerate(chars):
        canvas = Image.new("L", (canvas_side, canvas_side), 0)
        ImageDraw.Draw(canvas).text((canvas_side // 2, canvas_side // 2), ch, font=font, fill=255, anchor="mm")
        box = canvas.getbbox()
        if box is None:
            continue  # blank glyph: stays white, rejected by the caller
        ink = canvas.crop(box)
        w, h = ink.size
        factor = min(1.0, target / max(w, h))
        if factor < 1.0:
            ink = ink.resize((max(1, round(w * factor)), max(1, round(h * factor))), Image.LANCZOS)
        square = Image.new("L", (big, big), 0)
        square.paste(ink, ((big - ink.size[0]) // 2, (big - ink.size[1]) // 2))
        square = square.resize((size, size), Image.LANCZOS)
        out[k] = 255 - np.asarray(square, dtype=np.uint8)
    return out


def notdef_image(font_name: str, size: int) -> np.ndarray:
    """The font's rendering of a code point it lacks (.notdef box): a glyph identical to it is rejected."""
    return render_glyphs(font_name, ["\U000F0000"], size)[0]  # plane-15 private use: absent from these fonts


def blank_mask(font_name: str, images: np.ndarray, size: int) -> np.ndarray:
    """True where a rendered glyph is blank (almost no ink) or identical to the font's .notdef glyph."""
    ink = (255 - images.astype(np.int32)).sum(axis=(1, 2)) / 255.0
    notdef = notdef_image(font_name, size)
    same_as_notdef = (np.abs(images.astype(np.int16) - notdef.astype(np.int16)).max(axis=(1, 2)) <= 2)
    return (ink < 0.5) | same_as_notdef


@dataclass
class GlyphPlan:
    """The fixed character split: source pool and the BENCH_CHARS characters of each benchmark."""

    chars: list[str]  # every character rendered (source pool + benchmark characters)
    source: list[str]  # source pool, in its fixed random order (source_classes takes a prefix)
    bench: dict[str, list[str]]  # benchmark -> BENCH_CHARS characters, first NUM_KNOWN known
    dropped_fonts: dict[str, str]


def make_plan(fonts=None) -> GlyphPlan:
    fonts = list(fonts or FONTS)
    common, dropped = common_characters(fonts)
    rng = np.random.default_rng(SPLIT_SEED)
    order = [common[i] for i in rng.permutation(len(common))]
    need = BENCH_CHARS * len(BENCHMARKS)
    if len(order) < need + 500:
        raise RuntimeError(f"only {len(order)} characters are common to the glyph fonts (need >= {need + 500}): {SETUP_HINT}")
    bench = {name: order[i * BENCH_CHARS:(i + 1) * BENCH_CHARS] for i, name in enumerate(BENCHMARKS)}
    source = order[need:need + MAX_SOURCE_CHARS]
    return GlyphPlan(chars=order[:need + MAX_SOURCE_CHARS], source=source, bench=bench, dropped_fonts=dropped)


def plan_path(fonts=None) -> Path:
    """``.cache/glyph_plan_<hash>.json``: the character plan of `fonts`, written beside the rendered caches whenever
    it is computed from the font files, so a machine with the cache but without the fonts (a GPU node) reads it
    instead (`load_plan`). The hash covers everything the plan is computed from besides the fonts' cmaps."""
    fonts = list(fonts or FONTS)
    recipe = {"fonts": [(n, FONTS[n][0], FONTS[n][1]) for n in fonts], "bench_chars": BENCH_CHARS,
              "num_known": NUM_KNOWN, "max_source": MAX_SOURCE_CHARS, "seed": SPLIT_SEED, "benchmarks": BENCHMARKS,
              "min_coverage": MIN_FONT_COVERAGE, "range": CJK_RANGE}
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]
    return CACHE_DIR / f"glyph_plan_{digest}.json"


def load_plan(fonts=None) -> GlyphPlan:
    """The character plan: computed from the font files when they are installed (`make_plan`; its file `plan_path`
    is (re)written when it differs), else read from `plan_path`. Without both: the missing-fonts error."""
    fonts = list(fonts or FONTS)
    path = plan_path(fonts)
    if all(font_path(n).exists() for n in fonts) or not path.exists():
        plan = make_plan(fonts)  # raises FileNotFoundError naming the font packages when a font is missing
        text = json.dumps(dataclasses.asdict(plan), ensure_ascii=False, sort_keys=True)
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp")
            tmp.write_text(text, encoding="utf-8")
            tmp.replace(path)
        return plan
    return GlyphPlan(**json.loads(path.read_text(encoding="utf-8")))


def plan_fingerprint(fonts=None) -> str:
    """Short digest of the character plan (source pool in order + every benchmark's characters): anything cached
    from the source set (the source-pretrained backbone, lib.pretrain) must key on it, so a plan change (e.g. a
    new BENCH_CHARS) never reuses weights that saw characters which are now benchmark characters."""
    return _plan_fingerprint(tuple(fonts or FONTS), BENCH_CHARS, NUM_KNOWN, MAX_SOURCE_CHARS, SPLIT_SEED, BENCHMARKS)


@functools.lru_cache(maxsize=8)
def _plan_fingerprint(fonts: tuple, *constants) -> str:  # the constants key the cache; make_plan reads them
    plan = load_plan(list(fonts))
    recipe = {"source": "".join(plan.source), "bench": {n: "".join(plan.bench[n]) for n in BENCHMARKS},
              "num_known": NUM_KNOWN}
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]


def cache_key(fonts, chars, size: int, bench_chars) -> str:
    recipe = {"v": 1, "fonts": [(n, FONTS[n][0], FONTS[n][1]) for n in fonts], "chars": "".join(chars),
              "bench_chars": "".join(bench_chars), "size": int(size)}
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


def build_cache(size: int, fonts=None, plan: GlyphPlan | None = None, cache_dir: Path | None = None,
                progress: bool = True) -> dict[str, np.ndarray]:
    """Render (or load) the glyph cache: printed fonts x every planned character, handwritten fonts x the
    benchmark characters only. Loading needs no font file (the plan comes from `load_plan`); rendering does. Returns arrays images (N,H,W) uint8, font (N,) str, char (N,) str, domain (N,) str.
    Glyphs that render blank or as .notdef in any font are removed for every font (classes stay complete)."""
    fonts = [f for f in (fonts or FONTS)]
    plan = plan or load_plan(fonts)
    fonts = [f for f in fonts if f not in plan.dropped_fonts]
    bench_chars = list(dict.fromkeys(c for name in BENCHMARKS for c in plan.bench[name]))
    key = cache_key(fonts, plan.chars, size, bench_chars)
    path = Path(cache_dir or CACHE_DIR) / f"glyph_{key}.npz"
    if path.exists():
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    check_fonts(fonts)  # rendering needs them: the one-line error names the packages
    bench_set = set(bench_chars)
    jobs = [(f, plan.chars if FONTS[f][2] == "printed" else bench_chars) for f in fonts]
    images, font_col, char_col, bad = [], [], [], set()
    with progress_bar(total=sum(len(c) for _, c in jobs), desc=f"rendering glyphs {size}px", disable=not progress,
              unit="img") as bar:
        for f, chars in jobs:
            img = np.empty((len(chars), size, size), dtype=np.uint8)
            for start in range(0, len(chars), 500):
                img[start:start + 500] = render_glyphs(f, chars[start:start + 500], size)
                bar.update(len(chars[start:start + 500]))
            blank = blank_mask(f, img, size)
            bad.update(np.asarray(chars)[blank].tolist())
            images.append(img)
            font_col += [f] * len(chars)
            char_col += list(chars)
    if bad:
        log.warning("glyph cache: %d character(s) render blank/.notdef in some font and are removed: %s",
                    len(bad), "".join(sorted(bad))[:40])
    images = np.concatenate(images)
    font_col, char_col = np.asarray(font_col), np.asarray(char_col)
    keep = ~np.isin(char_col, list(bad)) if bad else np.ones(len(char_col), bool)
    data = {"images": images[keep], "font": font_col[keep], "char": char_col[keep],
            "domain": np.asarray([FONTS[f][2] for f in font_col[keep]]),
            "bench_chars": np.asarray([c for c in bench_chars if c not in bad] if bench_set else [])}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")  # unique: parallel workers may render at once
    np.savez(tmp, **data)
    tmp.replace(path)
    return data


# ---------------------------------------------------------------- the glyph family: sets, benchmarks, source
MIRROR_INVARIANT = False  # a mirrored character is another character or none: glyph sets are never flipped
CROSS = {"glyph_printed_to_handwritten": ("printed", "handwritten"),
         "glyph_handwritten_to_printed": ("handwritten", "printed")}
OUTLIER_CHARS = 200  # the printed source characters lent to other families' benchmarks as outliers
_MEMO: dict[int, tuple[dict, GlyphPlan]] = {}


def glyph_cache(image_size: int) -> tuple[dict, GlyphPlan]:
    """(arrays of the rendered glyph cache, the character plan), memoised per image size."""
    if image_size not in _MEMO:
        plan = load_plan()
        _MEMO[image_size] = (build_cache(image_size, plan=plan), plan)
    return _MEMO[image_size]


def glyph_set(data: dict, chars: list[str], fonts: list[str], label_offset: int = 0) -> TensorImageSet:
    """Images of `chars` (label = position in chars) in `fonts`, from the cache arrays."""
    index = {c: i for i, c in enumerate(chars)}
    rows = np.flatnonzero(np.isin(data["char"], chars) & np.isin(data["font"], fonts))
    images = torch.from_numpy(data["images"][rows]).unsqueeze(1)
    labels = np.array([index[c] + label_offset for c in data["char"][rows]], dtype=np.int64)
    ids = np.char.add(np.char.add(data["font"][rows].astype(str), ":"), data["char"][rows].astype(str))
    out = TensorImageSet(images, labels, data["domain"][rows], class_names=list(chars), ids=ids)
    out.mirror_invariant = MIRROR_INVARIANT
    return out


def present(data: dict, chars: list[str]) -> list[str]:
    """`chars` the cache holds (a character blank in some font was removed), in order."""
    held = set(data["char"].tolist())
    return [c for c in chars if c in held]


def font_split(domain: str) -> tuple[list[str], list[str]]:
    """Disjoint (support fonts, test fonts) of a domain: a fixed-seed half each (support gets the extra one)."""
    fonts = fonts_of(domain)
    order = np.random.default_rng(SPLIT_SEED + len(domain)).permutation(len(fonts))
    cut = (len(fonts) + 1) // 2
    return [fonts[i] for i in sorted(order[:cut])], [fonts[i] for i in sorted(order[cut:])]


def _benchmarks() -> dict[str, dict]:
    reg = {f"glyph_{d}": dict(kind="intra", domain_support=d, domain_test=d) for d in DOMAINS}
    reg.update({name: dict(kind="cross", domain_support=a, domain_test=b) for name, (a, b) in CROSS.items()})
    return reg


def benchmark(name: str, settings) -> Benchmark:
    """Glyph benchmark `name`: NUM_KNOWN known + the rest unknown of its planned characters; intra = disjoint font
    halves of one domain, cross = all fonts of one domain -> all of the other."""
    data, plan = glyph_cache(settings.image_size)
    spec = FAMILY.benchmarks[name]
    known = present(data, plan.bench[name][:NUM_KNOWN])
    chars = known + present(data, plan.bench[name][NUM_KNOWN:])
    if spec["kind"] == "intra":
        support_fonts, test_fonts = font_split(spec["domain_support"])
    else:
        support_fonts, test_fonts = fonts_of(spec["domain_support"]), fonts_of(spec["domain_test"])
    support = glyph_set(data, known, support_fonts)
    support.class_names = chars
    return Benchmark(name, spec["kind"], support, glyph_set(data, chars, test_fonts), len(known),
                     spec["domain_support"], spec["domain_test"])


def source(settings) -> TensorImageSet:
    """Printed fonts x the first source_classes source characters (all with 0; never a benchmark character)."""
    data, plan = glyph_cache(settings.image_size)
    chars = present(data, plan.source)
    n = settings.source_classes
    return glyph_set(data, chars[:n] if n else chars, fonts_of("printed"))


def outlier_images(settings) -> TensorImageSet:
    """Printed glyphs of the first OUTLIER_CHARS source characters (never a glyph benchmark character)."""
    data, plan = glyph_cache(settings.image_size)
    return glyph_set(data, present(data, plan.source)[:OUTLIER_CHARS], fonts_of("printed"))


FAMILY = Family("glyph", _benchmarks(), benchmark, outlier_family="emoji", mirror_invariant=MIRROR_INVARIANT,
                datasets=("glyph",), source=source, outlier_images=outlier_images)

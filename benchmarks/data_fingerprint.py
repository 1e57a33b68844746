"""Fingerprint of every data set lib.data builds: one sha256 per benchmark (support and test: images, labels, ids,
domains, class names, known count), source set and outlier pool, for the smoke and mini presets, embedded data and
a generated real-data tree (PACS, OfficeHome, DTD, DomainNet, ImageNet; tiny random PNGs, fixed seed).

The regression check of a data-layer refactor: run it before and after, the two outputs must be equal line by line.

Command (repo root; PYTHONPATH names the tree whose lib is fingerprinted, e.g. a `git archive` of the old commit
with a link to .cache):
    PYTHONPATH=. .venv/bin/python benchmarks/data_fingerprint.py > /tmp/before.txt   # ... refactor ...
    PYTHONPATH=. .venv/bin/python benchmarks/data_fingerprint.py > /tmp/after.txt && diff /tmp/before.txt /tmp/after.txt

Result of issue 12's refactor: the 150 lines of 2d3c2a6 (before) and of the family interface are identical.
"""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
import tempfile
from pathlib import Path

import numpy as np

from lib import config, data
from lib.datasets import real


def digest(imageset, root: Path | None = None) -> str:
    h = hashlib.sha256()
    h.update(imageset.batch_uint8(np.arange(len(imageset))).numpy().tobytes())
    ids = [i.replace(str(root), "<root>") for i in imageset.ids] if root is not None else imageset.ids
    for array in (imageset.labels, imageset.domains, ids):  # ids of an image folder are its paths: made relative
        h.update(np.asarray(array).tobytes())
    h.update("\n".join(imageset.class_names).encode())
    h.update(str(imageset.mirror_invariant).encode())
    if root is not None:  # file-backed: the paths, relative to the (temporary) data root
        h.update("\n".join(str(Path(p).relative_to(root)) for p in imageset.paths).encode())
    return f"{type(imageset).__name__} n={len(imageset)} {h.hexdigest()[:16]}"


def real_tree(root: Path) -> None:
    """2 images per class (PACS: 3, OfficeHome 30 classes) of every real dataset, and 3 ImageNet classes."""
    from PIL import Image

    rng = np.random.default_rng(0)

    def fill(folder: Path, n: int) -> None:
        folder.mkdir(parents=True)
        for k in range(n):
            size = tuple(int(v) for v in rng.integers(5, 12, 2))
            Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(folder / f"img{k}.png")

    for domain in real.PACS_DOMAINS:
        for name in real.PACS_KNOWN + real.PACS_UNKNOWN:
            fill(root / "pacs" / domain / name, 3)
    for domain in real.OFFICEHOME_DOMAINS:
        for c in range(30):
            fill(root / "officehome" / domain / f"class{c:02d}", 2)
    for name in real.DTD_KNOWN + ["banded", "zigzagged"]:
        fill(root / "dtd" / "images" / name, 3)
    for domain in real.DOMAINNET_DOMAINS:
        for name in real.DOMAINNET_KNOWN + real.DOMAINNET_UNKNOWN:
            fill(root / "domainnet" / domain / name, 2)
    for wnid in ("n01", "n02", "n03"):
        fill(root / "imagenet" / "train" / wnid, 3)


def lines(settings, root: Path | None) -> list[str]:
    out = []
    tag = f"{settings.preset} size={settings.image_size} classes={settings.source_classes}"
    for dataset in (("imagenet",) if root else ("glyph", "emoji")):
        source = data.load_source(dataclasses.replace(settings, dataset=dataset))
        out.append(f"{tag} source {dataset}: {digest(source, root)}")
    for name in data.available_benchmarks("all", settings):
        if (root is not None) != (data.BENCHMARKS[name]["group"] == "real"):
            continue
        b = data.load_benchmark(name, settings)
        head = f"{b.kind} known={b.num_known} {b.domain_support}->{b.domain_test}"
        out.append(f"{tag} {name}: {head} support {digest(b.support, root)} test {digest(b.test, root)}")
        out.append(f"{tag} {name}: outliers ({data.outlier_family(name)}) {digest(data.outlier_pool(name, settings))}")
    return out


def main() -> None:
    for preset in ("smoke", "mini"):
        settings = config.resolve(preset)
        print("\n".join(lines(settings, None)), flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="fingerprint_"))
    try:
        real_tree(tmp / "root")
        real.CACHE_DIR = tmp / "cache"  # derived split lists go to the temporary folder, not .cache/
        for preset in ("smoke", "mini"):
            settings = config.resolve(preset, data_root=str(tmp / "root"), source_classes=2)
            print("\n".join(lines(settings, tmp / "root")), flush=True)
    finally:
        shutil.rmtree(tmp)


if __name__ == "__main__":
    main()

"""Convert the ReSeND repository's split lists (its ``data/txt_lists/``) into this project's (lib/splits/README.md).

    python -m lib.splits.resend path/to/ReSeND/data/txt_lists [--out lib/splits]

The ReSeND repository has no licence, so its lists are not shipped: this reads a checkout the user points at,
rewrites file names and path prefixes (ReSeND's paths are relative to ``~/data`` with ``PACS/kfold/<domain>``,
DomainNet's relative to ``~/data/DomainNet``; ours are relative to ``data_root``, lower case: ``pacs/<domain>``,
``domainnet/<domain>``), checks every line (prefix, domain, known classes in docs/METHOD.md §7 order, support =
known classes only) and the split sizes of docs/METHOD.md §7 (`PAPER_COUNTS`), then writes the lists and
`lib.datasets.real.PROVENANCE` (their sha256: `real.list_origin` calls an unchanged one ``paper``). Nothing is
written unless every list passes. Lists of ReSeND protocols this project has no benchmark for (OfficeHome_DG,
OfficeHome_SS_DG, MultiDatasets_DG) are not read.

Checked against ReSeND commit f01d4fc (`RESEND_COMMIT`): its lists are the current ones since 1341735, DomainNet_DG
since 755910f (`RESEND_MIN_COMMIT`, the oldest checkout that converts); every size of docs/METHOD.md §7 matches them.
The lists of the 2022 release (892ffbc, replaced) number their known classes in another order: the converter
refuses them with one line naming the commit to check out.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

from lib import cli
from lib.datasets import real
from lib.paths import SPLITS_DIR, shown
from lib.runs import atomic_write_text

RESEND_COMMIT = "f01d4fc"  # the ReSeND commit whose data/txt_lists this converter was checked against
RESEND_MIN_COMMIT = "755910f"  # the oldest ReSeND commit with every list of LISTS (DomainNet_DG)
# ReSeND list (relative to data/txt_lists) -> our (dataset, domain, part); parts: lib/datasets/real.py BENCHMARKS
LISTS = {
    "DTD/in_distribution.txt": ("dtd", "images", "support"),
    "DTD/out_distribution.txt": ("dtd", "images", "test"),
    "DomainNet_IN_OUT/in_distribution.txt": ("domainnet", "real", "support"),
    "DomainNet_IN_OUT/out_distribution.txt": ("domainnet", "real", "test"),
    "DomainNet_Sketch/in_distribution.txt": ("domainnet", "sketch", "support"),
    "DomainNet_Sketch/out_distribution.txt": ("domainnet", "sketch", "test"),
    "DomainNet_Painting/in_distribution.txt": ("domainnet", "painting", "support"),
    "DomainNet_Painting/out_distribution.txt": ("domainnet", "painting", "test"),
    "DomainNet_DG/Source_Real.txt": ("domainnet", "real", "crosssupport"),
    "DomainNet_DG/Source_Sketch.txt": ("domainnet", "sketch", "crosssupport"),
    "DomainNet_DG/Source_Painting.txt": ("domainnet", "painting", "crosssupport"),  # = DomainNet_Painting/in_distribution
    "DomainNet_DG/Target_Real.txt": ("domainnet", "real", "crosstest"),
    "DomainNet_DG/Target_Sketch.txt": ("domainnet", "sketch", "crosstest"),
    "DomainNet_DG/Target_Painting.txt": ("domainnet", "painting", "crosstest"),
    "PACS_DG/ArtPainting.txt": ("pacs", "art_painting", "all"),
    "PACS_DG/Cartoon.txt": ("pacs", "cartoon", "all"),
    "PACS_DG/Photo.txt": ("pacs", "photo", "all"),
    "PACS_DG/Sketch.txt": ("pacs", "sketch", "all"),
    "PACS_DG/no_ArtPainting.txt": ("pacs", "art_painting", "mssupport"),
    "PACS_DG/no_Cartoon.txt": ("pacs", "cartoon", "mssupport"),
    "PACS_DG/no_Photo.txt": ("pacs", "photo", "mssupport"),
    "PACS_DG/no_Sketch.txt": ("pacs", "sketch", "mssupport"),
    "PACS_SS_DG/Source.txt": ("pacs", "photo", "sssupport"),
}
# (prefix of ReSeND's paths, ours): ReSeND reads DomainNet from ~/data/DomainNet, everything else from ~/data
PREFIXES = {"dtd": ("dtd/images/", "dtd/images/"), "domainnet": ("", "domainnet/"), "pacs": ("PACS/kfold/", "pacs/")}
KNOWN = {"dtd": real.DTD_KNOWN, "domainnet": real.DOMAINNET_KNOWN, "pacs": real.PACS_KNOWN}
KNOWN_ONLY = ("support", "crosssupport", "mssupport", "sssupport")  # parts holding known classes only

# docs/METHOD.md §7: (support images, test known images, test unknown images) of the paper's intra-domain splits.
# PACS has no sizes there: its lists are checked line by line only.
PAPER_COUNTS = {
    ("dtd", "images"): (1952, 808, 2880),
    ("domainnet", "real"): (7230, 3134, 3027),
    ("domainnet", "sketch"): (3206, 1387, 1659),
    ("domainnet", "painting"): (3954, 1722, 1473),
}


def convert_list(path: Path, dataset: str, domain: str, part: str) -> list[tuple[str, int]]:
    """Rows (our relpath, label) of one ReSeND list, every line checked (prefix, domain, known / unknown labels,
    class order of docs/METHOD.md §7); ValueError naming the file, the line and the fix."""
    theirs, ours = PREFIXES[dataset]
    known = KNOWN[dataset]
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.rsplit(maxsplit=1)
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            raise ValueError(f"{path}:{n}: expected `relpath label`, got {line!r}: not a ReSeND split list")
        rel, label = parts[0], int(parts[1])
        if not rel.startswith(theirs) or (ours + rel[len(theirs):]).count("/") < 3:
            raise ValueError(f"{path}:{n}: path {rel!r} is not `{theirs}{'' if dataset == 'dtd' else '<domain>/'}"
                             f"<class>/<file>`: not ReSeND's {dataset} list (point the converter at ReSeND's "
                             "data/txt_lists)")
        rel = ours + rel[len(theirs):]
        where, cls = rel.split("/")[1], rel.split("/")[-2]
        allowed = [d for d in real.PACS_DOMAINS if d != domain] if part == "mssupport" else [domain]
        if where not in allowed:
            raise ValueError(f"{path}:{n}: image of domain {where!r} in the {dataset} {part} list of {domain!r} "
                             f"(expected {' or '.join(allowed)})")
        if label < 0 or (part in KNOWN_ONLY and label >= len(known)):
            raise ValueError(f"{path}:{n}: label {label} in a {'support' if part in KNOWN_ONLY else 'test'} list: "
                             f"{'known classes are' if part in KNOWN_ONLY else 'labels are'} 0..{len(known) - 1}"
                             f"{'' if part in KNOWN_ONLY else ', unknown ones >= ' + str(len(known))}")
        if label < len(known) and cls != known[label]:
            raise ValueError(f"{path}:{n}: label {label} is class {cls!r}, docs/METHOD.md §7 has {known[label]!r}: "
                             f"another class order (ReSeND's 2022 lists?): check out ReSeND {RESEND_COMMIT} (at least "
                             f"{RESEND_MIN_COMMIT}) and convert its data/txt_lists")
        rows.append((rel, label))
    if not rows:
        raise ValueError(f"{path} is empty: point the converter at an unmodified ReSeND data/txt_lists")
    return rows


def check_counts(converted: dict[str, list[tuple[str, int]]], counts=None) -> None:
    """The split sizes of `counts` (default PAPER_COUNTS) against the converted lists; ValueError naming the list,
    the expected and the found count at the first difference."""
    counts = PAPER_COUNTS if counts is None else counts
    by_part = {LISTS[name]: (name, rows) for name, rows in converted.items()}
    for (dataset, domain), (n_support, n_known, n_unknown) in counts.items():
        k = len(KNOWN[dataset])
        checks = []
        if (dataset, domain, "support") in by_part:
            name, rows = by_part[(dataset, domain, "support")]
            checks.append((name, "support images", n_support, len(rows)))
        if (dataset, domain, "test") in by_part:
            name, rows = by_part[(dataset, domain, "test")]
            checks.append((name, "known test images", n_known, sum(label < k for _, label in rows)))
            checks.append((name, "unknown test images", n_unknown, sum(label >= k for _, label in rows)))
        for name, what, expected, found in checks:
            if expected != found:
                raise ValueError(f"{name}: expected {expected} {what} (docs/METHOD.md §7), found {found}: not the "
                                 "paper's list; point the converter at an unmodified ReSeND data/txt_lists")


def class_lists(converted: dict[str, list[tuple[str, int]]]) -> dict[tuple[str, str], list[tuple[str, int]]]:
    """(dataset, domain) -> rows (class name, label), from the class folders of every converted list's paths; a
    label named by two classes, a class with two labels or a label with no class is a ValueError."""
    names: dict[tuple[str, str], dict[int, str]] = {}
    for name, rows in converted.items():
        dataset, domain, _ = LISTS[name]
        for rel, label in rows:
            key = (dataset, rel.split("/")[1])  # a multi-source PACS list names its images' own domains
            seen = names.setdefault(key, {}).setdefault(label, rel.split("/")[-2])
            if seen != rel.split("/")[-2]:
                raise ValueError(f"{name}: label {label} names both {seen!r} and {rel.split('/')[-2]!r} in "
                                 f"{key[0]} {key[1]}: not a ReSeND list")
    out = {}
    for key, by_label in names.items():
        gaps = sorted(set(range(max(by_label) + 1)) - set(by_label))
        if gaps or len(set(by_label.values())) != len(by_label):
            raise ValueError(f"{key[0]} {key[1]}: labels {gaps} have no image and each class needs one label: "
                             "the lists do not cover every class; convert the whole ReSeND data/txt_lists")
        out[key] = [(by_label[label], label) for label in sorted(by_label)]
    return out


def convert(source: Path, out: Path = SPLITS_DIR, counts=None) -> list[Path]:
    """Read every ReSeND list of `LISTS` under `source` (data/txt_lists), check them, write ours and the
    provenance record into `out`; returns the files written. Raises before writing anything."""
    source, out = Path(source), Path(out)
    if not source.is_dir():
        raise FileNotFoundError(f"{source} is not a folder: give the path of ReSeND's data/txt_lists")
    missing = [name for name in LISTS if not (source / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{source / missing[0]} is missing ({len(missing)} of ReSeND's {len(LISTS)} lists "
                                "missing): give the path of an unmodified ReSeND data/txt_lists")
    converted = {name: convert_list(source / name, *LISTS[name]) for name in LISTS}
    check_counts(converted, counts)
    classes = class_lists(converted)
    texts = {real.list_name(*LISTS[name]): "".join(f"{r} {y}\n" for r, y in rows) for name, rows in converted.items()}
    texts.update({real.list_name(d, m, "classes"): "".join(f"{c} {y}\n" for c, y in rows)
                  for (d, m), rows in classes.items()})
    record_path = out / real.PROVENANCE
    record = json.loads(record_path.read_text()) if record_path.exists() else {}
    record["source"] = str(source.resolve())
    record.setdefault("files", {}).update({n: hashlib.sha256(t.encode()).hexdigest() for n, t in texts.items()})
    written = []
    for name, text in sorted(texts.items()):
        atomic_write_text(out / name, text)
        written.append(out / name)
    atomic_write_text(record_path, json.dumps(record, indent=2, sort_keys=True) + "\n")
    return written + [record_path]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Convert ReSeND's split lists (data/txt_lists) into lib/splits/.")
    parser.add_argument("source", type=Path, help="path/to/ReSeND/data/txt_lists")
    parser.add_argument("--out", type=Path, default=SPLITS_DIR,
                        help="folder of the converted lists: lib/splits (default) or data_root/splits")
    args = parser.parse_args(argv)
    written = convert(args.source, args.out)  # a refusal: one line on stderr, exit 1 (lib.cli)
    print(f"{len(written) - 1} lists of the paper's splits written to {shown(args.out)} (+ {real.PROVENANCE})")
    return 0


if __name__ == "__main__":
    raise SystemExit(cli.run(main, prog="lib.splits.resend"))

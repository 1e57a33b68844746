"""The ReSeND split lists converter (lib.splits.resend), on small lists written in the original format; which lists
a benchmark read (paper / own / derived) and the tables that say so."""

import json

import pytest
from PIL import Image

from lib import cli, config, data, evaluate, runs, summary
from lib.datasets import real
from lib.splits import resend

DOMAINNET_FOLDERS = {"real": "DomainNet_IN_OUT", "sketch": "DomainNet_Sketch", "painting": "DomainNet_Painting"}
PACS_FILES = {"art_painting": "ArtPainting", "cartoon": "Cartoon", "photo": "Photo", "sketch": "Sketch"}
DTD_UNKNOWN = [f"texture{i:02d}" for i in range(24)]
# the fixture's sizes: (support, test known, test unknown) per intra-domain split
SMALL_COUNTS = {("dtd", "images"): (46, 23, 24), **{("domainnet", d): (50, 25, 25) for d in DOMAINNET_FOLDERS}}


def _write(path, rows, newline_at_end=True):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(f"{rel} {label}" for rel, label in rows) + ("\n" if newline_at_end else ""))


@pytest.fixture
def txt_lists(tmp_path):
    """A miniature ReSeND data/txt_lists: every list of resend.LISTS, original names, prefixes and line format
    (DTD: 2 support images per known class, 1 test image per class; DomainNet likewise; PACS 1 image per class
    and domain). Its DomainNet paths are relative to DomainNet/, its PACS paths start with PACS/kfold/."""
    root = tmp_path / "ReSeND" / "data" / "txt_lists"
    dtd = real.DTD_KNOWN + DTD_UNKNOWN
    _write(root / "DTD/in_distribution.txt",
           [(f"dtd/images/{c}/{c}_{k}.jpg", i) for i, c in enumerate(real.DTD_KNOWN) for k in (1, 2)])
    _write(root / "DTD/out_distribution.txt", [(f"dtd/images/{c}/{c}_3.jpg", i) for i, c in enumerate(dtd)])
    domainnet = real.DOMAINNET_KNOWN + real.DOMAINNET_UNKNOWN
    for d, folder in DOMAINNET_FOLDERS.items():
        _write(root / folder / "in_distribution.txt",
               [(f"{d}/{c}/{d}_{i:03d}_00000{k}.jpg", i) for i, c in enumerate(real.DOMAINNET_KNOWN) for k in (1, 2)])
        _write(root / folder / "out_distribution.txt",
               [(f"{d}/{c}/{d}_{i:03d}_000003.jpg", i) for i, c in enumerate(domainnet)])
        _write(root / "DomainNet_DG" / f"Target_{d.title()}.txt",
               [(f"{d}/{c}/{d}_{i:03d}_000004.jpg", i) for i, c in enumerate(domainnet)])
        source = [(f"{d}/{c}/{d}_{i:03d}_000005.jpg", i) for i, c in enumerate(real.DOMAINNET_KNOWN)]
        if d == "painting":  # ReSeND's Source_Painting.txt is identical to DomainNet_Painting/in_distribution.txt
            source = [(f"{d}/{c}/{d}_{i:03d}_00000{k}.jpg", i) for i, c in enumerate(real.DOMAINNET_KNOWN) for k in (1, 2)]
        _write(root / "DomainNet_DG" / f"Source_{d.title()}.txt", source)
    pacs = real.PACS_KNOWN + real.PACS_UNKNOWN
    for d, name in PACS_FILES.items():
        _write(root / "PACS_DG" / f"{name}.txt", [(f"PACS/kfold/{d}/{c}/{k}.jpg", i) for i, c in enumerate(pacs)
                                                  for k in (1, 2)], newline_at_end=False)  # as ReSeND's: no final \n
        # as the real multi-source lists: each source domain gives 3 of the 6 known classes (here the k-th other
        # domain classes 3k..3k+2 mod 6, so the three cover all six)
        others = [o for o in PACS_FILES if o != d]
        _write(root / "PACS_DG" / f"no_{name}.txt",
               [(f"PACS/kfold/{o}/{real.PACS_KNOWN[i]}/1.jpg", i) for k, o in enumerate(others)
                for i in sorted((3 * k + j) % 6 for j in range(3))])
    _write(root / "PACS_SS_DG/Source.txt", [(f"PACS/kfold/photo/{c}/2.jpg", i) for i, c in enumerate(real.PACS_KNOWN)])
    return root


def _images_for(data_root, listing):
    for rel, _ in real.read_list(listing):
        (data_root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (4, 4), (len(rel) % 255, 0, 0)).save(data_root / rel, format="PNG")


def test_converter_rewrites_names_and_prefixes(txt_lists, tmp_path):
    out = tmp_path / "out"
    written = resend.convert(txt_lists, out, counts=SMALL_COUNTS)
    names = {p.name for p in written}
    assert {"dtd_images_support.txt", "dtd_images_test.txt", "dtd_images_classes.txt", "domainnet_real_support.txt",
            "domainnet_sketch_crosssupport.txt", "domainnet_painting_crosstest.txt", "pacs_photo_all.txt",
            "pacs_cartoon_mssupport.txt", "pacs_photo_sssupport.txt", "pacs_sketch_classes.txt",
            real.PROVENANCE} <= names
    # Source_Painting.txt exists in ReSeND (identical to DomainNet_Painting/in_distribution.txt)
    assert (out / "domainnet_painting_crosssupport.txt").read_text() == (out / "domainnet_painting_support.txt").read_text()
    assert real.read_list(out / "domainnet_real_support.txt")[:2] == [("domainnet/real/circle/real_000_000001.jpg", 0),
                                                                      ("domainnet/real/circle/real_000_000002.jpg", 0)]
    assert real.read_list(out / "pacs_photo_all.txt")[-1] == ("pacs/photo/person/2.jpg", 6)
    assert real.read_list(out / "dtd_images_test.txt")[0] == ("dtd/images/crystalline/crystalline_3.jpg", 0)
    ms = real.read_list(out / "pacs_photo_mssupport.txt")
    assert len(ms) == 9 and {rel.split("/")[1] for rel, _ in ms} == {"art_painting", "cartoon", "sketch"}
    assert all(len({y for rel, y in ms if rel.split("/")[1] == d}) == 3 for d in ("art_painting", "cartoon", "sketch"))
    classes = real.read_list(out / "domainnet_painting_classes.txt")
    assert len(classes) == 50 and classes[24] == ("camouflage", 24) and classes[25] == ("square", 25)
    assert real.read_list(out / "dtd_images_classes.txt")[46] == ("texture23", 46)
    record = json.loads((out / real.PROVENANCE).read_text())
    assert record["source"] == str(txt_lists.resolve()) and len(record["files"]) == len(names) - 1
    assert all(real.list_origin(p) == "paper" for p in written if p.suffix == ".txt")


def test_converter_checks_the_paper_sizes_and_writes_nothing_when_they_differ(txt_lists, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(ValueError) as err:
        resend.convert(txt_lists, out)  # the default table: docs/METHOD.md §7's sizes, not the fixture's
    assert str(err.value) == ("DTD/in_distribution.txt: expected 1952 support images (docs/METHOD.md §7), found 46: "
                              "not the paper's list; point the converter at an unmodified ReSeND data/txt_lists")
    assert not out.exists()
    wrong = {**SMALL_COUNTS, ("domainnet", "sketch"): (50, 25, 26)}
    with pytest.raises(ValueError, match=r"^DomainNet_Sketch/out_distribution.txt: expected 26 unknown test images "
                                         r"\(docs/METHOD.md §7\), found 25: not the paper's list"):
        resend.convert(txt_lists, out, counts=wrong)
    assert resend.PAPER_COUNTS[("domainnet", "painting")] == (3954, 1722, 1473)


def test_converter_command_line_says_one_line(txt_lists, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(resend, "PAPER_COUNTS", SMALL_COUNTS)
    assert resend.main([str(txt_lists), "--out", str(tmp_path / "out")]) == 0
    assert f"lists of the paper's splits written to {tmp_path / 'out'}" in capsys.readouterr().out
    monkeypatch.setattr(resend, "PAPER_COUNTS", {("dtd", "images"): (46, 23, 25)})
    assert cli.run(resend.main, [str(txt_lists), "--out", str(tmp_path / "out2")], prog="lib.splits.resend") == 1
    err = capsys.readouterr().err
    assert err == ("lib.splits.resend: error: DTD/out_distribution.txt: expected 25 unknown test images (docs/METHOD.md §7), found 24: "
                   "not the paper's list; point the converter at an unmodified ReSeND data/txt_lists\n")


def test_converter_rejects_lists_that_are_not_resends(txt_lists, tmp_path):
    out = tmp_path / "out"
    (txt_lists / "PACS_SS_DG/Source.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"PACS_SS_DG/Source.txt is missing \(1 of ReSeND's 23 lists missing\)"):
        resend.convert(txt_lists, out, counts=SMALL_COUNTS)
    _write(txt_lists / "PACS_SS_DG/Source.txt", [("pacs/photo/dog/1.jpg", 0)])  # our prefix, not ReSeND's
    with pytest.raises(ValueError, match=r"Source.txt:1: path 'pacs/photo/dog/1.jpg' is not `PACS/kfold/<domain>/"):
        resend.convert(txt_lists, out, counts=SMALL_COUNTS)
    _write(txt_lists / "PACS_SS_DG/Source.txt", [("PACS/kfold/photo/person/1.jpg", 6)])
    with pytest.raises(ValueError, match=r"Source.txt:1: label 6 in a support list: known classes are 0..5"):
        resend.convert(txt_lists, out, counts=SMALL_COUNTS)
    _write(txt_lists / "PACS_SS_DG/Source.txt", [("PACS/kfold/cartoon/dog/1.jpg", 0)])
    with pytest.raises(ValueError, match=r"image of domain 'cartoon' in the pacs sssupport list of 'photo'"):
        resend.convert(txt_lists, out, counts=SMALL_COUNTS)
    _write(txt_lists / "PACS_SS_DG/Source.txt", [("PACS/kfold/photo/horse/1.jpg", 0)])
    # another class order (the 2022 release): one line naming the ReSeND commit to convert
    with pytest.raises(ValueError, match=r"label 0 is class 'horse', docs/METHOD.md §7 has 'dog': another class order "
                                         r"\(ReSeND's 2022 lists\?\): check out ReSeND f01d4fc \(at least 755910f\)"):
        resend.convert(txt_lists, out, counts=SMALL_COUNTS)
    assert not out.exists()


def test_benchmarks_read_the_converted_lists_and_say_so(txt_lists, tmp_path):
    """Converted into data_root/splits, DTD and PACS multi-source load the paper's lists (split = paper); an edited
    list is "own"; lists derived from the folders are "derived"; evaluate records it in env.json."""
    root = tmp_path / "data"
    resend.convert(txt_lists, root / "splits", counts=SMALL_COUNTS)
    for name in ("dtd_images_support", "dtd_images_test", "pacs_photo_all", "pacs_photo_mssupport"):
        _images_for(root, root / "splits" / f"{name}.txt")
    settings = config.resolve("smoke", image_size=16, data_root=str(root))
    dtd = data.load_benchmark("dtd", settings)
    assert dtd.split == "paper" and data.benchmark_summary(dtd) == {
        "support_images": 46, "test_known_images": 23, "test_unknown_images": 24, "classes_known": 23,
        "classes_unknown": 24}
    ms = data.load_benchmark("pacs_ms_photo", settings)
    assert ms.split == "paper" and len(ms.support) == 9 and len(ms.test) == 14
    assert sorted(set(ms.support.domains)) == ["art_painting", "cartoon", "sketch"]
    edited = root / "splits" / "dtd_images_test.txt"
    edited.write_text(edited.read_text() + "dtd/images/woven/woven_3.jpg 22\n")
    assert real.list_origin(edited) == "own"
    assert real.weakest_origin(["paper", "own", "paper"]) == "own"
    assert real.weakest_origin(["own", "derived"]) == "derived"


def test_evaluation_records_the_split_and_the_tables_say_derived(tiny_image_tree, tmp_path):
    """A PACS benchmark from the folders alone reads derived lists: env.json records it, and the summary says
    "derived split, not the paper's" above the tables and under the table holding it."""
    from tests.test_evaluate import tiny_model

    run = tmp_path / "study" / "mse_c10__seed0"
    settings = config.resolve("smoke", image_size=16, data_root=str(tiny_image_tree), run_dir=str(run), device="cpu")
    run.mkdir(parents=True)
    flat, _ = evaluate.evaluate_benchmarks(tiny_model(), settings, names=["pacs_ss_photo_to_sketch"], memo=False)
    assert runs.read_env(run)["splits"] == {"pacs_ss_photo_to_sketch": "derived"}
    runs.write_metrics(run, flat)
    summary.write_summary(run.parent)
    tables = (run.parent / "tables.md").read_text()
    note = ("pacs_ss_photo_to_sketch: derived split, not the paper's (made from the folders, lib/splits/README.md; "
            "`python -m lib.splits.resend` converts the paper's lists).")
    assert f"Split lists (env.json of the runs): {note}" in tables
    assert tables.count(note) == 2  # the header and the cross-domain table's note

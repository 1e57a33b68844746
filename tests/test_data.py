"""Data layer: renderer determinism, split invariants of every embedded benchmark, real split-list loaders,
and every one-line error message."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torchvision.transforms import v2

from lib import config, data
from lib.augment import BatchAugment
from lib.datasets import emoji as emoji_ds
from lib.datasets import fashion as fashion_ds
from lib.datasets import glyphs, real
from lib.datasets.imagesets import FileImageSet, TensorImageSet, concat


@pytest.fixture(scope="session")
def settings():
    return config.resolve("smoke", image_size=32, source_classes=60)


# ---------------------------------------------------------------- glyph renderer
TWO_FONTS = ["ipa_mincho", "kouzan_kaisho"]
CHARS = list("一二山川森林")


def test_render_is_deterministic_and_font_dependent():
    a = [glyphs.render_glyphs(f, CHARS, 24) for f in TWO_FONTS]
    b = [glyphs.render_glyphs(f, CHARS, 24) for f in TWO_FONTS]
    for x, y in zip(a, b):
        assert x.dtype == np.uint8 and x.shape == (len(CHARS), 24, 24)
        assert x.tobytes() == y.tobytes()
    assert not np.array_equal(a[0], a[1])  # two fonts draw differently
    assert (a[0] < 128).any(axis=(1, 2)).all()  # every glyph has ink
    assert a[0][:, 0, :].min() >= 240 and a[0][:, :, 0].min() >= 240  # white background, ink centred inside


def test_small_cache_is_byte_identical(tmp_path):
    plan = glyphs.GlyphPlan(chars=CHARS, source=CHARS[2:], bench={n: CHARS[:2] for n in glyphs.BENCHMARKS},
                            dropped_fonts={})
    one = glyphs.build_cache(16, fonts=TWO_FONTS, plan=plan, cache_dir=tmp_path / "a", progress=False)
    two = glyphs.build_cache(16, fonts=TWO_FONTS, plan=plan, cache_dir=tmp_path / "b", progress=False)
    assert one["images"].tobytes() == two["images"].tobytes()
    assert (one["font"] == two["font"]).all() and (one["char"] == two["char"]).all()
    # handwritten fonts only render the benchmark characters
    assert set(one["char"][one["font"] == "kouzan_kaisho"]) == set(CHARS[:2])


def test_cache_key_follows_the_recipe():
    base = glyphs.cache_key(TWO_FONTS, CHARS, 32, CHARS[:2])
    assert base == glyphs.cache_key(TWO_FONTS, CHARS, 32, CHARS[:2])
    assert base != glyphs.cache_key(TWO_FONTS[:1], CHARS, 32, CHARS[:2])
    assert base != glyphs.cache_key(TWO_FONTS, CHARS, 64, CHARS[:2])
    assert base != glyphs.cache_key(TWO_FONTS, CHARS[:-1], 32, CHARS[:2])


def test_blank_and_notdef_glyphs_are_rejected():
    blank = np.full((1, 24, 24), 255, np.uint8)
    notdef = glyphs.notdef_image("ipa_mincho", 24)[None]
    real_glyph = glyphs.render_glyphs("ipa_mincho", ["山"], 24)
    assert glyphs.blank_mask("ipa_mincho", np.concatenate([blank, notdef, real_glyph]), 24).tolist() == [True, True, False]


def test_plan_holds_benchmark_characters_out_of_the_source():
    plan = glyphs.make_plan()
    bench = [c for n in glyphs.BENCHMARKS for c in plan.bench[n]]
    assert len(bench) == len(set(bench)) == glyphs.BENCH_CHARS * len(glyphs.BENCHMARKS)
    assert not set(bench) & set(plan.source)
    assert len(plan.source) >= 500
    assert all("\u4e00" <= c <= "\u9fff" for c in plan.source)


# ---------------------------------------------------------------- sources and benchmarks
@pytest.mark.parametrize("dataset", ["glyph", "emoji"])
def test_source_sets(settings, dataset):
    s = config.resolve("smoke", image_size=32, source_classes=10, dataset=dataset)
    source = data.load_source(s)
    counts = np.bincount(source.labels)
    assert len(source.class_names) == 10 and len(counts) == 10 and counts.min() >= 2
    assert source.batch_uint8([0, 1]).shape == (2, 3, 32, 32) and source.get_uint8(0).dtype == torch.uint8


@pytest.mark.parametrize("name", data.GROUPS["embedded"])
def test_embedded_benchmark_invariants(settings, name):
    b = data.load_benchmark(name, settings)
    k = b.num_known
    assert b.kind == data.BENCHMARKS[name]["kind"]
    assert b.support.batch_uint8([0]).shape == (1, 3, 32, 32) and b.test.batch_uint8([0]).dtype == torch.uint8
    # support: known classes only, all of them; test: both known and unknown
    assert set(b.support.labels.tolist()) == set(range(k))
    assert set(b.test.labels.tolist()) == set(range(len(b.test.class_names)))
    assert b.is_known().sum() > 0 and (~b.is_known()).sum() > 0
    # no image in both support and test (identity = font:char / vendor:emoji / file:index)
    assert not set(b.support.ids.tolist()) & set(b.test.ids.tolist())
    group = data.BENCHMARKS[name]["group"]
    if group != "fashion":  # no benchmark class (known or unknown) in the relational source of its family
        source = data.load_source(config.resolve("smoke", image_size=32, source_classes=0, dataset=group))
        assert not set(source.class_names) & set(b.test.class_names)
    if group == "glyph":
        fonts = lambda s: {i.split(":")[0] for i in s.ids}  # noqa: E731
        if b.kind == "intra":
            assert not fonts(b.support) & fonts(b.test)  # support and test from disjoint fonts
        assert set(b.support.domains) == {b.domain_support} and set(b.test.domains) == {b.domain_test}
    if group == "emoji":  # the same emoji never appears on both sides, even across vendors
        emo = lambda s: {i.split(":")[1] for i in s.ids}  # noqa: E731
        assert not emo(b.support) & emo(b.test)
        assert set(b.support.domains) == {b.domain_support} and set(b.test.domains) == {b.domain_test}


@pytest.mark.parametrize(("name", "family"), [("glyph_handwritten", "emoji"), ("glyph_printed_to_handwritten", "emoji"),
                                            ("emoji_google_to_openmoji_line", "glyph"), ("fashion", "glyph")])
def test_outlier_pool_is_another_family(settings, name, family):
    # MixOE's outliers: never the test unknowns' distribution, so another dataset family (glyph <-> emoji)
    b = data.load_benchmark(name, settings)
    pool = data.outlier_pool(name, settings)
    assert data.outlier_family(name) == family and len(pool) > 0 and not set(pool.class_names) & set(b.test.class_names)
    assert set(pool.domains) <= (set(emoji_ds.VENDORS) if family == "emoji" else {"printed"})
    assert not set(pool.domains) & set(b.test.domains)
    with pytest.raises(ValueError, match="unknown benchmark"):
        data.outlier_family("glyph_nope")


def test_benchmark_names_and_groups(settings):
    assert data.benchmark_names("glyph") == data.GROUPS["glyph"] and len(data.GROUPS["glyph"]) == 4
    assert data.benchmark_names("fashion,glyph_printed,fashion") == ["fashion", "glyph_printed"]
    assert set(data.benchmark_names("all")) == set(data.GROUPS["embedded"]) | set(data.GROUPS["real"])
    for name in ["dtd", "domainnet_real", "domainnet_sketch_to_painting", "pacs_ss_photo_to_cartoon",
                 "pacs_ms_sketch", "officehome_real_world"]:
        assert name in data.GROUPS["real"]
    assert data.available_benchmarks("all", settings) == data.GROUPS["embedded"]


@pytest.mark.parametrize("name", list(data.FAMILIES))
def test_every_family_is_found_by_name(name):
    """data.py branches on no family: each benchmark, group and dataset name leads to its family's entry."""
    family = data.FAMILIES[name]
    assert family.name == name and data.GROUPS[name] == list(family.benchmarks)
    for bench in family.benchmarks:
        assert data.family_of(bench) is family and data.BENCHMARKS[bench]["group"] == name
    assert all(data.DATASETS[d] is family for d in family.datasets)
    lender = data.FAMILIES[family.outlier_family]  # outliers from another family that lends some
    assert lender is not family and lender.outlier_images is not None
    assert (name in data.MIRROR_VARIANT) == (not family.mirror_invariant)
    embedded = set(family.benchmarks) <= set(data.GROUPS["embedded"])
    assert embedded != family.file_backed and (embedded or not set(family.benchmarks) & set(data.GROUPS["embedded"]))


def test_family_registry_as_worked_out():
    assert list(data.FAMILIES) == ["glyph", "emoji", "fashion", "real"]
    assert data.MIRROR_VARIANT == ("glyph",) and list(data.DATASETS) == ["glyph", "emoji", "fashion", "imagenet"]
    assert data.OUTLIER_FAMILY == {"glyph": "emoji", "emoji": "glyph", "fashion": "glyph", "real": "glyph"}
    assert [len(data.GROUPS[g]) for g in ("glyph", "emoji", "fashion", "embedded", "real")] == [4, 10, 1, 15, 21]
    with pytest.raises(ValueError, match="unknown dataset 'mnist': choose glyph, emoji, fashion or imagenet"):
        data.load_source(config.resolve("smoke", dataset="mnist"))


def test_outliers_are_a_fixed_seed_subsample_in_index_order(settings):
    glyph = data.FAMILIES["glyph"]
    full, ten = glyph.outlier_images(settings), glyph.outliers(settings, 10)
    assert len(full) == 200 * len(glyphs.fonts_of("printed")) and len(glyph.outliers(settings, 10 ** 6)) == len(full)
    assert len(ten) == 10 and ten.ids.tolist() == glyph.outliers(settings, 10).ids.tolist()
    position = {i: k for k, i in enumerate(full.ids.tolist())}
    assert sorted(position[i] for i in ten.ids) == [position[i] for i in ten.ids]  # index order kept
    assert ten.mirror_invariant is False
    with pytest.raises(ValueError, match="dataset family 'fashion' lends no outlier images"):
        data.FAMILIES["fashion"].outliers(settings, 10)


def test_transforms_give_normalised_float():
    """Both transforms end in ImageNet normalisation: a black image is exactly -mean/std per channel whatever the
    augmentation draws (crop, flip, jitter and grey all keep black black), a flat grey v is (v/255 - mean)/std after
    the eval resize. (A random image with a fixed 'some value < 0' check failed by chance once in CI: jitter can lift
    every pixel above the mean.)"""
    mean, std = torch.tensor(data.IMAGENET_MEAN), torch.tensor(data.IMAGENET_STD)
    black = torch.zeros(3, 40, 40, dtype=torch.uint8)
    for tf in (data.train_transform(32), data.eval_transform(32)):
        for _ in range(5):
            out = tf(black).reshape(3, 32, 32)
            assert out.dtype == torch.float32
            torch.testing.assert_close(out, (-mean / std)[:, None, None].expand(3, 32, 32))
    grey = torch.full((3, 40, 40), 200, dtype=torch.uint8)
    out = data.eval_transform(32)(grey)
    assert out.shape == (3, 32, 32)
    torch.testing.assert_close(out, ((200 / 255 - mean) / std)[:, None, None].expand(3, 32, 32))


def _flips(transform) -> bool:
    if isinstance(transform, BatchAugment):
        return transform.hflip
    return any(isinstance(t, v2.RandomHorizontalFlip) for t in transform.transforms)


def test_glyphs_are_never_mirrored_in_training_other_images_are(settings):
    """A mirrored character is another character (or none): every augmentation of a glyph set leaves the flip out
    (source, its subsets and concatenations, a benchmark's support), photos and emoji keep docs/METHOD.md §3's flip; the
    pretrained backbone's and the feature bank's cache keys record the choice."""
    from lib import bank, pretrain
    from lib.baselines import reweightood

    source = data.load_source(settings)
    glyph_support = data.load_benchmark("glyph_printed", settings).support
    emoji_support = data.load_benchmark("emoji_google", settings).support
    for images in (source, source.subset([0, 1]), glyph_support, concat([glyph_support, glyph_support])):
        assert images.mirror_invariant is False
        assert not _flips(data.augmentation(images, 16)) and not _flips(data.augmentation(images, 16, reweightood.cider_transform))
    assert emoji_support.mirror_invariant and _flips(data.augmentation(emoji_support, 16))
    assert _flips(data.augmentation(emoji_support, 16, reweightood.cider_transform))
    assert pretrain.recipe(settings)["hflip"] is False
    assert pretrain.recipe(dataclasses.replace(settings, dataset="emoji_google"))["hflip"] is True
    backbone = torch.nn.Linear(2, 2)
    assert bank.recipe(backbone, source, settings)["hflip"] is False
    assert bank.recipe(backbone, emoji_support, settings)["hflip"] is True


def test_tensor_imageset_subset_and_getitem():
    images = torch.arange(4 * 1 * 2 * 2, dtype=torch.uint8).reshape(4, 1, 2, 2)
    s = TensorImageSet(images, [0, 1, 1, 0], class_names=["a", "b"], transform=lambda x: x.float())
    sub = s.subset([2, 3])
    assert sub.labels.tolist() == [1, 0] and sub.get_uint8(0).shape == (3, 2, 2)
    x, y = sub[0]
    assert x.dtype == torch.float32 and y == 1 and torch.equal(sub.get_uint8(0)[0], images[2, 0])


# ---------------------------------------------------------------- real datasets (tiny tree)
def test_split_list_loader_skips_corrupt_images(tiny_image_tree):
    root = tiny_image_tree
    (root / "pacs" / "photo" / "dog" / "broken.png").write_bytes(b"not a png")
    listing = root / "list.txt"
    listing.write_text("pacs/photo/dog/img0.png 0\npacs/photo/dog/broken.png 0\npacs/photo/person/img1.png 1\n")
    with pytest.warns(UserWarning, match=r"skipped 1 undecodable \(first: .*broken.png\) of 3 image"):
        s = data.load_split_list(listing, root, image_size=16, domain="photo")
    assert len(s) == 2 and len(s.skipped) == 1 and s.labels.tolist() == [0, 1]
    assert s.batch_uint8([0, 1]).shape == (2, 3, 16, 16)


def test_a_split_list_naming_missing_files_says_missing_not_undecodable(tiny_image_tree):
    listing = tiny_image_tree / "list.txt"
    listing.write_text("pacs/photo/dog/img0.png 0\npacs/photo/dog/gone.png 0\n")
    with pytest.warns(UserWarning, match=r"skipped 1 missing \(first: .*gone.png\) of 2 image") as caught:
        s = data.load_split_list(listing, tiny_image_tree, image_size=16)
    assert "undecodable" not in str(caught[0].message) and len(s) == 1 and s.skipped[0].endswith("gone.png")


def test_a_split_list_whose_every_path_is_wrong_names_the_list_the_root_and_the_first_path(tiny_image_tree):
    listing = tiny_image_tree / "list.txt"
    listing.write_text("PACS/kfold/photo/dog/img0.png 0\nPACS/kfold/photo/dog/img1.png 0\n")
    with pytest.raises(FileNotFoundError, match=rf"split list {listing}: none of its 2 images exists under data_root "
                                                rf"{tiny_image_tree} \(first: PACS/kfold/photo/dog/img0.png -> "):
        data.load_split_list(listing, tiny_image_tree, image_size=16)


def test_derived_split_lists_follow_the_folder_content(tiny_image_tree):
    from PIL import Image

    before = real.read_list(real.split_list(tiny_image_tree, "pacs", "photo", "all"))
    Image.new("RGB", (4, 4)).save(tiny_image_tree / "pacs" / "photo" / "dog" / "added.png")
    after = real.read_list(real.split_list(tiny_image_tree, "pacs", "photo", "all"))
    assert len(after) == len(before) + 1 and ("pacs/photo/dog/added.png", 0) in after


def test_file_decoding_failure_after_construction_is_counted(tiny_image_tree):
    path = tiny_image_tree / "pacs" / "photo" / "dog" / "img0.png"
    s = FileImageSet([path], [0], image_size=8)
    path.write_bytes(b"truncated")
    with pytest.warns(UserWarning, match="could not decode"):
        assert s.get_uint8(0).sum() == 0
    assert s.decode_failures == 1


def test_pacs_benchmarks_from_a_folder_tree(tiny_image_tree):
    s = config.resolve("smoke", image_size=16, data_root=str(tiny_image_tree))
    b = data.load_benchmark("pacs_ss_photo_to_sketch", s)
    assert b.num_known == 6 and set(b.support.labels.tolist()) == set(range(6))
    assert len(b.support) == 18 and len(b.test) == 21 and (~b.is_known()).sum() == 3
    assert b.test.class_names[6] == "person" and set(b.test.domains) == {"sketch"}
    ms = data.load_benchmark("pacs_ms_photo", s)
    assert len(ms.support) == 3 * 18 and set(ms.support.domains) == {"art_painting", "cartoon", "sketch"}
    rows = real.read_list(real.split_list(tiny_image_tree, "pacs", "photo", "all"))
    assert rows[0] == ("pacs/photo/dog/img0.png", 0)


def test_derived_intra_split_is_disjoint_and_fixed(tmp_path):
    from PIL import Image

    for name in real.PACS_KNOWN + ["person", "zebra"]:  # OfficeHome-like: known = first 25 sorted (here all 6+)
        (tmp_path / "officehome" / "Art" / name).mkdir(parents=True)
        for k in range(10):
            Image.new("RGB", (4, 4), (k, 0, 0)).save(tmp_path / "officehome" / "Art" / name / f"{k}.png")
    one = real.derive_lists(tmp_path, "officehome", "Art")
    two = real.derive_lists(tmp_path, "officehome", "Art")
    assert one["support"] == two["support"] and len(one["support"]) == 8 * 7
    assert not {r for r, _ in one["support"]} & {r for r, _ in one["test"]}


# ---------------------------------------------------------------- batches of file-backed sets (DataLoader workers)
@pytest.fixture
def photo_folder(tmp_path):
    """12 PNGs of differing non-square sizes (random pixels) as a FileImageSet at 16 px."""
    from PIL import Image

    rng = np.random.default_rng(0)
    paths = []
    for k in range(12):
        paths.append(tmp_path / f"{k}.png")
        Image.fromarray(rng.integers(0, 255, (20 + k, 40, 3), dtype=np.uint8)).save(paths[-1])
    return FileImageSet(paths, np.arange(12) % 3, image_size=16)


def test_file_batches_are_the_same_for_any_number_of_workers_and_follow_the_seed(photo_folder):
    tf, idx = data.train_transform(16), np.array([3, 0, 7, 7, 11])
    out, states = [], []
    for workers in (0, 2, 0):
        torch.manual_seed(5)
        out.append(data.augment_batch(photo_folder, idx, tf, num_workers=workers))
        states.append(torch.get_rng_state())
    assert out[0].shape == (5, 3, 16, 16) and out[0].dtype == torch.float32
    assert torch.equal(out[0], out[1]) and torch.equal(out[0], out[2])
    assert torch.equal(states[0], states[1])  # the caller's RNG moved by the same draws (resume stays bit-identical)
    assert not torch.equal(out[0][2], out[0][3])  # one image twice in a batch: two augmentations
    torch.manual_seed(6)
    assert not torch.equal(data.augment_batch(photo_folder, idx, tf, num_workers=2), out[0])


def test_file_batch_workers_persist_across_calls(photo_folder):
    tf = data.eval_transform(16)
    data.augment_batch(photo_folder, [0, 1], tf, num_workers=2)
    (_, loader, _), = photo_folder._loaders.values()
    pids = [w.pid for w in loader._iterator._workers]
    data.augment_batch(photo_folder, [2, 3, 4], tf, num_workers=2)
    assert len(photo_folder._loaders) == 1 and [w.pid for w in loader._iterator._workers] == pids and len(pids) == 2


def test_eval_batches_of_files_are_todays_squares(photo_folder):
    """Evaluation decodes every file to the square of image_size as before, in workers or not."""
    idx, tf = np.arange(12), data.eval_transform(16)
    today = torch.stack([tf(img) for img in photo_folder.batch_uint8(idx)])
    assert torch.equal(data.augment_batch(photo_folder, idx, tf, num_workers=2), today)
    assert torch.equal(data.uint8_batch(photo_folder, idx, num_workers=2), photo_folder.batch_uint8(idx))
    assert torch.equal(data.augment_batch(photo_folder, idx, tf), today)


def test_training_crops_the_full_resolution_image(tmp_path):
    """Hand-worked: a 40x10 image, top half black, bottom half white. A RandomResizedCrop of scale 1 and ratio 4 takes
    the whole original, then resizes it to 8x8: first row 0, last row 255. Resizing to a square first (the old path)
    would have left only a central 8x2 band, grey everywhere."""
    from PIL import Image

    pixels = np.zeros((10, 40, 3), np.uint8)
    pixels[5:] = 255
    Image.fromarray(pixels).save(tmp_path / "half.png")
    s = FileImageSet([tmp_path / "half.png"], [0], image_size=8)
    crop = v2.Compose([v2.RandomResizedCrop(8, scale=(1.0, 1.0), ratio=(4.0, 4.0), antialias=True)])
    for workers in (0, 1):
        out = data.augment_batch(s, [0], crop, num_workers=workers)[0]
        assert torch.equal(out, v2.functional.resize(torch.from_numpy(pixels).permute(2, 0, 1), [8, 8], antialias=True))
        assert (out[:, 0] == 0).all() and (out[:, -1] == 255).all()
    assert not (crop(s.get_uint8(0))[:, 0] == 0).all()  # the square-first path loses the black top


def test_in_memory_sets_keep_their_fast_path_whatever_num_workers():
    images = torch.randint(0, 256, (6, 3, 20, 20), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    s, tf = TensorImageSet(images, [0, 0, 1, 1, 2, 2]), data.train_transform(16)
    torch.manual_seed(1)
    today = tf(s.batch_uint8([5, 0, 2]))  # the whole batch at once, each image its own draw (lib.augment)
    torch.manual_seed(1)
    assert torch.equal(data.augment_batch(s, [5, 0, 2], tf, num_workers=2), today)
    assert torch.equal(data.uint8_batch(s, [5, 0], num_workers=2), images[[5, 0]])


# ---------------------------------------------------------------- error messages
def test_error_real_benchmark_without_data_root(settings):
    with pytest.raises(ValueError, match="needs real data but data_root is empty"):
        data.load_benchmark("dtd", settings)


def test_error_data_root_missing(tmp_path):
    s = config.resolve("smoke", data_root=str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match="data_root .* does not exist"):
        data.load_benchmark("domainnet_real", s)


def test_error_dataset_folder_missing(tmp_path):
    s = config.resolve("smoke", data_root=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="lib/splits/README.md"):
        data.load_benchmark("dtd", s)


def test_error_unknown_benchmark(settings):
    with pytest.raises(ValueError, match="unknown benchmark 'glyph_typo'.*glyph_printed"):
        data.load_benchmark("glyph_typo", settings)
    with pytest.raises(ValueError, match="unknown benchmark"):
        data.benchmark_names("glyph,nope")


def test_error_class_with_one_image():
    s = TensorImageSet(torch.zeros((3, 3, 4, 4), dtype=torch.uint8), [0, 0, 1], class_names=["a", "b"])
    with pytest.raises(ValueError, match="source class 'b' has 1 image"):
        data.check_source(s)


def test_error_missing_npm_packages(tmp_path):
    with pytest.raises(FileNotFoundError, match="make setup"):
        emoji_ds.check_packages(tmp_path)


def test_error_missing_fonts(monkeypatch, tmp_path):
    monkeypatch.setattr(glyphs, "FONT_ROOT", tmp_path)
    with pytest.raises(FileNotFoundError, match="fonts-ipafont-mincho.*make setup"):
        glyphs.check_fonts(["ipa_mincho"])


def test_error_missing_fashion(tmp_path):
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist"):
        fashion_ds.load_split("train", root=tmp_path)


def test_error_fashion_as_source():
    with pytest.raises(ValueError, match="only 10 classes"):
        data.load_source(config.resolve("smoke", dataset="fashion"))


def test_imagenet_source_from_an_image_folder(tmp_path):
    from PIL import Image

    for wnid in ["n01", "n02", "n03"]:
        (tmp_path / "imagenet" / "train" / wnid).mkdir(parents=True)
        for k in range(2):
            Image.new("RGB", (6, 5), (k * 50, 0, 0)).save(tmp_path / "imagenet" / "train" / wnid / f"{k}.JPEG")
    s = config.resolve("smoke", dataset="imagenet", data_root=str(tmp_path), source_classes=2, image_size=8)
    source = data.load_source(s)
    assert source.class_names == ["n01", "n02"] and source.labels.tolist() == [0, 0, 1, 1]
    assert source.batch_uint8([0, 3]).shape == (2, 3, 8, 8)

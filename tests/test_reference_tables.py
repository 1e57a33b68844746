"""Tables a reader can trust: bootstrap SE of the AUROC, reference rows (frozen backbone, raw pixels), the
headline split, the rho interval over seeds, and a glyph character plan whose source never holds a benchmark
character."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from lib import config, metrics, pretrain, reference, runs, summary
from lib.data import Benchmark, TensorImageSet
from lib.datasets import glyphs


# ----------------------------------------------------------------------------- bootstrap SE of the AUROC
def hanley_mcneil_se(auroc, n_known, n_unknown):
    """Hanley & McNeil (1982), exponential approximation of the AUROC's standard error."""
    q1, q2 = auroc / (2 - auroc), 2 * auroc ** 2 / (1 + auroc)
    var = (auroc * (1 - auroc) + (n_known - 1) * (q1 - auroc ** 2) + (n_unknown - 1) * (q2 - auroc ** 2))
    return np.sqrt(var / (n_known * n_unknown))


def test_auroc_se_is_zero_for_a_perfectly_separated_detector():
    scores = np.r_[np.linspace(0.6, 1.0, 30), np.linspace(0.0, 0.4, 20)]
    known = np.r_[np.ones(30, bool), np.zeros(20, bool)]
    assert metrics.auroc_bootstrap_se(scores, known) == 0.0


def test_auroc_se_matches_hanley_mcneil_on_a_large_random_case():
    rng = np.random.default_rng(1)
    n1, n0 = 1500, 1000
    scores = np.r_[rng.normal(1.0, 1.0, n1), rng.normal(0.0, 1.0, n0)]  # binormal, AUROC ~ .76
    known = np.r_[np.ones(n1, bool), np.zeros(n0, bool)]
    auroc = metrics.novelty_metrics(scores, known)["auroc"]
    se = metrics.auroc_bootstrap_se(scores, known)
    assert se == pytest.approx(hanley_mcneil_se(auroc, n1, n0), rel=0.2)  # 200 resamples: ~5 % noise on an SE
    assert se == metrics.auroc_bootstrap_se(scores, known)  # fixed seed
    # ties count 1/2, as in novelty_metrics: a constant detector has AUROC .5 in every resample
    assert metrics.auroc_bootstrap_se(np.zeros(50), np.arange(50) < 20) == 0.0


# ----------------------------------------------------------------------------- reference rows
class FlatBackbone(torch.nn.Module):
    """``features`` = the flattened normalised image: the backbone row then sees pixels too."""

    def __init__(self):
        super().__init__()
        self.unused = torch.nn.Linear(1, 1)

    def features(self, images):
        return images.flatten(1)


def copy_benchmark(seed=0, n_known=3, n_unknown=3, size=8):
    """Known test images are exact copies of support images; unknown ones are fresh random images."""
    gen = torch.Generator().manual_seed(seed)
    support = torch.randint(0, 256, (2 * n_known, 3, size, size), generator=gen, dtype=torch.uint8)
    labels_s = np.repeat(np.arange(n_known), 2)
    unknown = torch.randint(0, 256, (2 * n_unknown, 3, size, size), generator=gen, dtype=torch.uint8)
    labels_t = np.r_[labels_s, np.repeat(np.arange(n_known, n_known + n_unknown), 2)]
    return Benchmark("copy", "intra", TensorImageSet(support, labels_s),
                     TensorImageSet(torch.cat([support, unknown]), labels_t), n_known, "toy", "toy")


def test_reference_rows_on_a_copy_benchmark():
    cfg = config.resolve("smoke", image_size=8, device="cpu")
    rows = reference.benchmark_rows(FlatBackbone(), copy_benchmark(), cfg)
    assert set(rows) == set(reference.ROWS)
    pixels = rows["pixels_1nn"]
    assert pixels["auroc"] == 1.0 and pixels["accuracy"] == 1.0 and pixels["fpr95"] == 0.0 and pixels["auroc_se"] == 0.0
    for row in rows.values():
        assert 0.0 <= row["auroc"] <= 1.0 and row["auroc_se"] >= 0.0
    # a known test image is a copy of a support image: its nearest normalised support feature is at distance 0,
    # every unknown one farther, so the backbone's kNN k=1 is perfect and names the right class
    knn = rows["backbone_knn1"]
    assert knn["auroc"] == 1.0 and knn["accuracy"] == 1.0 and knn["fpr95"] == 0.0
    assert {"backbone_knn1", "backbone_mahalanobis"} <= set(reference.TABLE_ROWS)


def test_msp_temperature_and_max_cosine():
    sims = torch.tensor([[0.9, 0.1, 0.0], [0.5, 0.45, 0.4]])
    normality, predictions = reference.msp(sims, 0.1)
    expected = torch.softmax(sims.double() / 0.1, 1).max(1).values.numpy()
    assert np.allclose(normality, expected) and predictions.tolist() == [0, 0]
    best_case = torch.cat([torch.ones(1, 1), -torch.ones(1, 24)], 1)  # a perfect match among 25 classes
    assert reference.msp(best_case, 1.0)[0][0] < 0.24  # T = 1 on cosines: a nearly flat softmax
    assert reference.msp(best_case, reference.TEMPERATURE)[0][0] > 0.99  # why the rows use T = 0.1
    assert torch.allclose(reference.cosine(torch.eye(2) * 3, torch.eye(2)), torch.eye(2))


def test_write_reference_rows_skips_the_same_recipe(tmp_path, monkeypatch):
    calls = []

    def fake(settings, names):
        calls.append(list(names))
        return {f"backbone_proto__auroc__{n}": 0.9 for n in names} | {"stale__x": 1.0}, {"pretrained": "random init"}

    monkeypatch.setattr(reference, "compute_reference_rows", fake)
    cfg = config.resolve("smoke", pretrained="none", benchmarks="glyph_printed", device="cpu")
    path = reference.write_reference_rows(tmp_path, cfg)
    assert path == tmp_path / "reference" / "metrics.json" and len(calls) == 1
    reference.write_reference_rows(tmp_path, cfg)
    assert len(calls) == 1  # same recipe: nothing recomputed
    reference.write_reference_rows(tmp_path, dataclasses.replace(cfg, benchmarks="glyph_handwritten"))
    assert calls[-1] == ["glyph_handwritten"]
    assert reference.read_reference_rows(tmp_path) == {"backbone_proto": {"auroc__glyph_handwritten": 0.9}}
    assert json.loads((tmp_path / "reference" / "recipe.json").read_text())["backbone"] == "random init"
    assert (tmp_path / "reference" / "params.yaml").exists() and (tmp_path / "reference" / "env.json").exists()


# ----------------------------------------------------------------------------- summary: references, headline, rho
def _fake_run(study, name, metrics):
    (study / name).mkdir(parents=True)
    (study / name / "metrics.json").write_text(json.dumps(metrics))


@pytest.fixture
def study(tmp_path):
    """4 configs x 2 seeds on a clear benchmark (glyph_printed) and a near-chance one (emoji_google)."""
    for i, (name, r2) in enumerate([("bce", .6), ("ce", .4), ("hinge_d1", .2), ("mse_c10", .1)]):
        for seed in (0, 1):
            a, e = .6 + .05 * i + .01 * seed, .5 - .02 * i
            _fake_run(tmp_path, f"{name}__seed{seed}", {
                "auroc__glyph_printed": a, "fpr95__glyph_printed": .5, "auroc_se__glyph_printed": .01,
                "auroc__emoji_google": e, "fpr95__emoji_google": .9, "auroc_se__emoji_google": .03,
                "auroc__intra_avg": (a + e) / 2, "fpr95__intra_avg": .7, "r2": r2 + .01 * seed,
                "train_acc_same_last": .3})
    ref = {"backbone_proto__auroc__glyph_printed": .95, "backbone_proto__auroc_se__glyph_printed": .008,
           "backbone_proto__fpr95__glyph_printed": .2, "backbone_proto__auroc__emoji_google": .62,
           "backbone_proto__auroc_se__emoji_google": .03, "backbone_proto__fpr95__emoji_google": .9,
           "pixels_1nn__auroc__glyph_printed": .9, "pixels_1nn__fpr95__glyph_printed": .4,
           "pixels_1nn__auroc__emoji_google": .55, "pixels_1nn__fpr95__emoji_google": .95}
    (tmp_path / "reference").mkdir()
    (tmp_path / "reference" / "metrics.json").write_text(json.dumps(ref))
    return tmp_path


def test_headline_split_rule():
    refs = {"backbone_proto": {"auroc__a": .95, "auroc_se__a": .01, "auroc__b": .62, "auroc_se__b": .02,
                               "auroc__c": .61}}
    # b: .62 - 2 * .02 = .58 < .6; c has no SE (taken as 0); d has no reference value
    assert summary.headline_split(refs, ["a", "b", "c", "d"]) == (["a", "c"], ["b", "d"])


def test_tables_show_reference_rows_and_a_near_chance_section(study):
    summary.write_summary(study)
    tables = (study / "tables.md").read_text()
    head, near = tables.split("## Benchmarks where even the backbone is near chance")
    assert "glyph_printed AUROC" in head and "emoji_google AUROC" not in head
    assert "emoji_google AUROC" in near and "Spearman" not in near
    label = reference.TABLE_ROWS["backbone_proto"]
    assert f"| *{label}* | 0.950 / 0.200 | 0.950 / 0.200 | – | – |" in head  # benchmark, its average, no R²
    assert f"| *{reference.TABLE_ROWS['pixels_1nn']}* | 0.550 / 0.950 | 0.550 / 0.950 | – | – |" in near
    # the headline average is over glyph_printed only (the recorded intra_avg also holds emoji_google)
    assert "| bce | 0.605 ± 0.007 / 0.500 ± 0.000 | 0.605 ± 0.007 / 0.500 ± 0.000 |" in head
    assert "glyph_printed runs ±0.010, backbone ref ±0.008" in head and "emoji_google runs ±0.030" in near
    # rho over the 4 configs only (references never enter it): R² falls as the headline AUROC rises
    assert "Spearman ρ(R², avg intra AUROC) over 4 configs: -1.000 (95 % bootstrap interval over seeds: " in head


def test_old_study_without_references_keeps_todays_tables(study):
    (study / "reference" / "metrics.json").unlink()
    summary.write_summary(study)
    tables = (study / "tables.md").read_text()
    assert "No reference rows" in tables and "near chance" not in tables
    assert "glyph_printed AUROC" in tables and "emoji_google AUROC" in tables
    assert "| bce | 0.500 ± 0.000 / 0.900 ± 0.000 | 0.605 ± 0.007 / 0.500 ± 0.000 | 0.55" in tables  # recorded avg


def test_rho_interval_over_seeds(study):
    df = summary.collect(study)
    df = summary.add_average(df, ["glyph_printed"], "intra_headline")
    agg = summary.aggregate(df)
    rho, _ = summary.r2_auroc_correlation(agg, column="auroc__intra_headline")
    lo, hi = summary.r2_auroc_interval(df, "auroc__intra_headline")
    assert lo <= rho <= hi and (lo, hi) == summary.r2_auroc_interval(df, "auroc__intra_headline")  # fixed seed
    # seeds that agree exactly leave no room: the interval collapses onto rho
    same = df.assign(r2=df["config"].map(agg["r2"]), auroc__intra_headline=df["config"].map(agg["auroc__intra_headline"]))
    assert summary.r2_auroc_interval(same, "auroc__intra_headline") == (pytest.approx(rho), pytest.approx(rho))
    # a noisy config can swap ranks in some resamples: the interval widens below -1's neighbour
    noisy = df.copy()
    noisy.loc[(noisy["config"] == "ce") & (noisy["seed"] == 1), "auroc__intra_headline"] = 0.9
    lo, hi = summary.r2_auroc_interval(noisy, "auroc__intra_headline")
    assert lo < hi
    assert np.isnan(summary.r2_auroc_interval(df[df["config"].isin(["bce", "ce"])], "auroc__intra_headline")).all()


# ----------------------------------------------------------------------------- glyph character plan
@pytest.mark.parametrize("size", [50, glyphs.BENCH_CHARS, 300])
def test_source_and_benchmark_characters_are_disjoint(size, monkeypatch):
    monkeypatch.setattr(glyphs, "BENCH_CHARS", size)
    monkeypatch.setattr(glyphs, "NUM_KNOWN", size // 2)
    plan = glyphs.make_plan()
    bench = [c for n in glyphs.BENCHMARKS for c in plan.bench[n]]
    assert len(bench) == len(set(bench)) == size * len(glyphs.BENCHMARKS)
    assert not set(bench) & set(plan.source) and len(plan.source) == glyphs.MAX_SOURCE_CHARS
    assert set(plan.chars) == set(bench) | set(plan.source)


def test_pretrained_backbone_key_follows_the_character_plan(monkeypatch):
    settings = config.resolve("mini")
    now = pretrain.weight_path(settings)
    assert pretrain.recipe(settings)["char_plan"] == glyphs.plan_fingerprint()
    monkeypatch.setattr(glyphs, "BENCH_CHARS", glyphs.BENCH_CHARS + 2)
    monkeypatch.setattr(glyphs, "NUM_KNOWN", glyphs.BENCH_CHARS // 2)
    assert pretrain.weight_path(settings) != now  # a new plan never finds the old plan's weights
    assert pretrain.recipe(config.resolve("mini", dataset="emoji"))["char_plan"] == ""


def test_a_study_on_several_backbones_reads_the_mean_of_their_reference_rows(tmp_path):
    runs.write_metrics(tmp_path / reference.backbone_folder(0), {"backbone_knn1__auroc__b": 0.9, "pixels_1nn__auroc__b": 0.5})
    runs.write_metrics(tmp_path / reference.backbone_folder(1), {"backbone_knn1__auroc__b": 0.8})
    assert reference.read_reference_rows(tmp_path) == {"backbone_knn1": {"auroc__b": pytest.approx(0.85)}}
    runs.write_metrics(tmp_path / reference.REFERENCE_DIR, {"backbone_proto__auroc__b": 0.7})  # one backbone: its own
    assert reference.read_reference_rows(tmp_path) == {"backbone_proto": {"auroc__b": 0.7}}

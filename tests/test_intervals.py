"""The hierarchical bootstrap of lib.intervals against cases worked by hand."""

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

from lib import intervals, summary


def test_auroc_replicates_equal_sklearn_on_each_image_draw_and_keep_both_counts():
    rng = np.random.default_rng(3)
    is_known = np.r_[np.ones(7, bool), np.zeros(5, bool)]
    normality = np.round(rng.normal(size=12) + is_known, 1)  # rounded: ties, counted one half
    draws = intervals.image_draws(is_known, resamples=50, seed=1)
    assert draws.shape == (50, 12) and (is_known[draws].sum(1) == 7).all()
    expected = [roc_auc_score(is_known[d], normality[d]) for d in draws]
    assert intervals.auroc_replicates(normality, is_known, draws) == pytest.approx(expected, abs=1e-12)
    assert intervals.auroc_replicates([3, 1, 2, 0], [True, True, False, False], np.array([[0, 1, 2, 3]])) == [0.75]


def test_unit_draws_pick_whole_backbones_then_seeds_within_them():
    units = intervals.unit_draws(backbones=3, seeds=2, resamples=400, seed=0)
    assert units.shape == (400, 6)
    backbone_of = units // 2
    # each drawn backbone contributes exactly its 2 seed slots: positions 2k, 2k+1 share a backbone
    assert (backbone_of[:, 0::2] == backbone_of[:, 1::2]).all()
    assert set(np.unique(units)) == set(range(6))


def test_drawn_means_by_hand_and_missing_runs_left_out():
    values = np.array([[1.0, 2.0, 3.0, np.nan], [0.0, 0.0, 4.0, 8.0]])  # 2 configs x 4 units
    units = np.array([[0, 0, 1, 3], [2, 3, 2, 3]])
    means = intervals.drawn_means(values, units)
    assert means.tolist() == [[pytest.approx(4 / 3), 2.0], [3.0, 6.0]]


def test_variance_components_one_way_anova_by_hand():
    values = np.array([[1.0, 3.0], [5.0, 7.0], [9.0, 11.0]])  # backbone means 2, 6, 10; seed variance 2 each
    between, within = intervals.variance_components(values)
    assert within == pytest.approx(2.0)
    assert between == pytest.approx(16.0 - 2.0 / 2)  # var(2, 6, 10) = 16 (ddof 1), minus within / S
    assert intervals.variance_components(np.array([[1.0, 3.0], [1.0, 3.0]])) == (0.0, 2.0)


def test_spearman_rows_equal_scipy_per_row():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(5, 10)), rng.normal(size=(5, 10))
    assert intervals.spearman_rows(x, y) == pytest.approx([spearmanr(a, b).statistic for a, b in zip(x, y)])


def test_the_papers_own_rho_and_contrasts_from_its_seed_tables():
    """The ICIAP seed-000 tables (docs/METHOD.md §9): rho(R^2, avg AUROC) = -0.85 intra, -0.60 cross."""
    configs = list(summary.PAPER_AVG_AUROC)
    r2 = [summary.PAPER_R2[c] for c in configs]
    intra = [summary.PAPER_AVG_AUROC[c][0] for c in configs]
    cross = [summary.PAPER_AVG_AUROC[c][1] for c in configs]
    assert len(configs) == 10
    assert spearmanr(r2, intra).statistic == pytest.approx(-0.85, abs=0.005)
    assert spearmanr(r2, cross).statistic == pytest.approx(-0.60, abs=0.01)
    deltas = summary.paper_contrasts()
    assert deltas[("mse_c1", "mse_c10")] == pytest.approx((0.111 - 0.520, 0.702 - 0.660, 0.645 - 0.601))
    assert deltas[("hinge_d0.1", "hinge_d0.01")] == pytest.approx((0.101 - 0.251, 0.711 - 0.677, 0.641 - 0.583))


def _study(backbone_shift: float, seeds=(0, 1), backbones=(0, 1, 2)) -> pd.DataFrame:
    rows = []
    for b in backbones:
        for s in seeds:
            for i, config in enumerate(["mse_c1", "mse_c10", "mse_c50", "bce"]):
                rows.append({"config": config, "backbone": b, "seed": s, "r2": 0.8 - 0.2 * i + 0.01 * s,
                             "auroc__intra_avg": 0.7 + 0.05 * i + backbone_shift * b + 0.001 * s})
    return pd.DataFrame(rows)


def test_a_contrast_shared_by_every_backbone_has_a_tight_interval_and_its_variance_is_the_backbones():
    df = _study(backbone_shift=0.03)
    result = summary.contrast_rows(df, configs=["mse_c1", "mse_c10", "mse_c50", "bce"], kinds=["intra"])
    row = result[("mse_c1", "mse_c10")]
    # every backbone and seed moves both configs alike: the paired difference is exactly 0.05 on every draw
    assert row["intra"] == pytest.approx((0.05, 0.05, 0.05))
    assert row["r2"] == pytest.approx((-0.2, -0.2, -0.2))
    shares = summary.variance_shares(df, "auroc__intra_avg")
    assert shares["backbone"] > 0.99  # the backbone shift (0.03 per backbone) dwarfs the seed's 0.001


def test_a_grid_with_pretrain_seeds_runs_every_config_on_every_backbone(tmp_path):
    from lib import config, runs, sweep

    path = tmp_path / "grid.yaml"
    path.write_text("study: s\npreset: mini\nseeds: [0, 1]\npretrain_seeds: [0, 1, 2]\nconfigs: [bce]\n")
    jobs = [j for j in sweep.plan(sweep.load_grid(path)) if j.notebook == "02_train"]
    assert [j.run_dir.name for j in jobs] == [f"bce__bb{b}__seed{s}" for b in range(3) for s in range(2)]
    assert [config.resolve(**j.params, say=lambda _: None).pretrain_seed for j in jobs] == [0, 0, 1, 1, 2, 2]
    match = runs.RUN_NAME.match("hinge_d0.1__bb2__seed1")
    assert (match["config"], match["backbone"], match["seed"]) == ("hinge_d0.1", "2", "1")
    assert runs.RUN_NAME.match("hinge_d0.1__seed1")["backbone"] is None


def test_the_convergence_rule_by_hand():
    import importlib.util

    from lib.paths import REPO_ROOT

    spec = importlib.util.spec_from_file_location("convergence", REPO_ROOT / "benchmarks" / "convergence.py")
    convergence = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(convergence)
    keys = [{"config": c, "backbone": b, "seed": 0} for c in ("bce", "hinge_d1") for b in (0, 1)]
    base = pd.DataFrame([{**k, "pair_auroc": 0.99, "r2": 0.5, "auroc__intra_avg": 0.8, "auroc__cross_avg": 0.7}
                         for k in keys])
    longer = base.copy()
    longer.loc[longer["config"] == "hinge_d1", "r2"] = 0.53  # doubling moves hinge's R^2 by 0.03 > 0.02
    longer.loc[(longer["config"] == "bce") & (longer["backbone"] == 1), "auroc__intra_avg"] = 0.81  # mean +0.005
    table = convergence.convergence_table(base, longer).set_index("config")
    assert table.loc["bce", "converged"] and not table.loc["hinge_d1", "converged"]
    assert table.loc["bce", "delta_auroc__intra_avg"] == pytest.approx(0.005)
    assert table.loc["hinge_d1", "delta_r2"] == pytest.approx(0.03)
    # a base run with no doubled twin: outside the means (runs = 2), inside the pair-AUROC gate
    extra = pd.DataFrame([{"config": "bce", "backbone": 0, "seed": 1, "pair_auroc": 0.96, "r2": 0.0,
                           "auroc__intra_avg": 0.0, "auroc__cross_avg": 0.0}])
    table = convergence.convergence_table(pd.concat([base, extra]), longer).set_index("config")
    assert table.loc["bce", "runs"] == 2 and table.loc["bce", "delta_r2"] == pytest.approx(0.0)
    assert table.loc["bce", "worst_pair_auroc"] == 0.96 and not table.loc["bce", "converged"]
    base.loc[0, "pair_auroc"] = 0.96  # one run below the 0.97 gate: not converged whatever the deltas
    assert not convergence.convergence_table(base, longer).set_index("config").loc["bce", "converged"]
    grid = convergence.doubled(sweep_grid())
    assert grid.study == "study_2x" and grid.overrides["steps"] == 1600 and grid.overrides["warmup_steps"] == 80
    assert grid.seeds == [0, 1] and convergence.doubled(sweep_grid(), [0]).seeds == [0]
    with pytest.raises(ValueError, match=r"--seeds \[5\] are not all run seeds of the grid \[0, 1\]"):
        convergence.doubled(sweep_grid(), [5])


def test_the_convergence_ladder_applies_the_rule_to_each_doubling(tmp_path, monkeypatch):
    import importlib.util
    import sys

    from lib.paths import REPO_ROOT

    monkeypatch.syspath_prepend(str(REPO_ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location("convergence_ladder", REPO_ROOT / "benchmarks" / "convergence_ladder.py")
    ladder = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ladder)
    monkeypatch.setattr(ladder, "OUTPUTS_DIR", tmp_path)

    def rung(study, steps, r2, intra, runs=(("bce", 0), ("hinge_d1", 0))):
        rows = [{"config": c, "backbone": b, "seed": 0, "train_steps": steps, "pair_auroc": 0.99, "r2": r2.get(c, 0.5),
                 "auroc__intra_avg": intra.get(c, 0.8), "auroc__cross_avg": 0.7} for c, b in runs]
        (tmp_path / study).mkdir()
        pd.DataFrame(rows).to_csv(tmp_path / study / "summary.csv", index=False)

    # hinge: R^2 .1 -> .5 -> .51 (moves, then holds); bce: intra .80 -> .80 -> .82 (holds, then moves by .02 > .01)
    rung("a", 800, {"hinge_d1": 0.1}, {}, runs=(("bce", 0), ("hinge_d1", 0), ("bce", 1)))  # bce bb1: in a only
    rung("b", 1600, {"hinge_d1": 0.5}, {})
    rung("c", 3200, {"hinge_d1": 0.51}, {"bce": 0.82})
    table, steps = ladder.ladder([ladder.load(s) for s in "abc"])
    table = table.set_index("config")
    assert steps == [800, 1600, 3200] and list(table["runs"]) == [1, 1]  # bce bb1 left out: not in every rung
    assert table.loc["hinge_d1", ["r2_0", "r2_1", "r2_2"]].tolist() == pytest.approx([0.1, 0.5, 0.51])
    assert [table.loc["hinge_d1", "ok_0"], table.loc["hinge_d1", "ok_1"]] == [False, True]
    assert [table.loc["bce", "ok_0"], table.loc["bce", "ok_1"]] == [True, False]
    text = ladder.markdown(table.reset_index(), steps, list("abc"))
    assert "| hinge_d1 | 0.100 | 0.500 | 0.510 | 0.800 | 0.800 | 0.800 | 0.700 | 0.700 | 0.700 | ✗ | ✓ |" in text
    with pytest.raises(SystemExit, match=r"steps \[800, 3200\] are not a ladder of doublings"):
        ladder.ladder([ladder.load("a"), ladder.load("c")])
    with pytest.raises(SystemExit, match=r"no .*missing/summary.csv: run that study first"):
        ladder.load("missing")
    # the paper's contrasts at each budget: mse c=1 -> c=10 gains .10 then .05 intra (paper: .702 - .660 = +.042)
    means = pd.DataFrame({"config": ["mse_c1", "mse_c10", "bce"], "auroc__intra_avg_0": [0.70, 0.80, 0.5],
                          "auroc__intra_avg_1": [0.75, 0.80, 0.5], "auroc__cross_avg_0": [0.6, 0.6, 0.5],
                          "auroc__cross_avg_1": [0.6, 0.62, 0.5]})
    rows = [line for line in ladder.contrasts(means, [800, 1600]).splitlines() if line.startswith("| mse_c1 → ")]
    assert rows == ["| mse_c1 → mse_c10 | +0.100 | +0.050 | +0.042 | +0.000 | +0.020 | +0.044 |"]
    assert "| bce → bce_focal" not in ladder.contrasts(means, [800, 1600])  # bce_focal not in the ladder
    sys.modules.pop("convergence", None)


def test_cross_machine_bounds_the_difference_of_the_same_runs_against_the_seed_spread(capsys):
    import importlib.util

    from lib.paths import REPO_ROOT

    spec = importlib.util.spec_from_file_location("cross_machine", REPO_ROOT / "benchmarks" / "cross_machine.py")
    cross = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cross)
    keys = [{"config": c, "backbone": 0, "seed": 0} for c in ("bce", "ce", "hinge_d1")]
    a = pd.DataFrame([{**k, "r2": 0.5, "auroc__intra_avg": 0.8} for k in keys])
    b = a.copy()
    b.loc[b["config"] == "ce", "r2"] = 0.503  # one run moved by .003, the others bit-identical
    b.loc[b["config"] == "bce", "auroc__intra_avg"] = 0.79
    b.loc[b["config"] == "hinge_d1", "auroc__intra_avg"] = 0.806
    extra = pd.DataFrame([{"config": "ce_focal", "backbone": 0, "seed": 0, "r2": 0.0, "auroc__intra_avg": 0.0}])
    # the yardstick: seed 1 - seed 0 per (config, backbone) = .01, .02, .04 in R^2 -> median .02
    spread = pd.DataFrame([{"config": c, "backbone": 0, "seed": s, "r2": r, "auroc__intra_avg": 0.8}
                           for c, r in (("bce", 0.01), ("ce", 0.02), ("ce_focal", 0.04)) for s, r in ((0, 0.0), (1, r))])
    table = cross.compare(a, pd.concat([b, extra]), spread).set_index("metric")
    assert list(table.index) == ["r2", "auroc__intra_avg"]  # metrics absent from the tables are left out
    assert table.loc["r2", "runs"] == 3 and table.loc["r2", "identical"] == 2  # ce_focal: only in one study
    assert table.loc["r2", "max_abs_diff"] == pytest.approx(0.003) and table.loc["r2", "seed_spread"] == pytest.approx(0.02)
    assert table.loc["auroc__intra_avg", "identical"] == 1
    assert table.loc["auroc__intra_avg", "mean_abs_diff"] == pytest.approx((0.01 + 0.006) / 3)
    assert table.loc["auroc__intra_avg", "seed_spread"] == 0.0
    text = cross.markdown(table.reset_index(), ["x", "y"], ["AMD", "Intel"], "s")
    assert "| r2 | 3 | 2 | 0.003 | 0.001 | 0.02 | 0.15 |" in text
    assert "| auroc__intra_avg | 3 | 1 | 0.01 | 0.005333 | 0 | nan |" in text  # no spread: no ratio
    with pytest.raises(SystemExit, match="share no .config, backbone, seed. run"):
        cross.compare(a, extra)
    with pytest.raises(SystemExit):  # three labels for two pairs: two, or two per pair
        cross.main(["mini:mini_xeon", "probe_4x:probe_4x_xeon", "--labels", "a", "b", "c"])
    assert "3 labels for 2 pairs: give two, or two per pair" in capsys.readouterr().err


def test_an_unconverged_config_is_marked_and_left_out_of_rho(tmp_path):
    import json

    df = _study(backbone_shift=0.03, backbones=(0, 1))
    df.loc[(df["config"] == "mse_c10") & (df["backbone"] == 1), "auroc__intra_avg"] -= 0.08  # mse_c1 -> c10 flips on bb1
    for _, r in df.iterrows():
        run = tmp_path / f"{r['config']}__bb{r['backbone']}__seed{r['seed']}"
        run.mkdir()
        run.joinpath("metrics.json").write_text(json.dumps({"auroc__glyph_printed": r["auroc__intra_avg"],
                                                            "auroc__intra_avg": r["auroc__intra_avg"], "r2": r["r2"],
                                                            "pair_auroc": 0.99}))
    convergence = pd.DataFrame({"config": ["mse_c1", "mse_c10", "mse_c50", "bce"], "runs": 2,
                                "converged": [True, True, True, False], "r2": 0.0, "r2_2x": [0.9, 0.5, 0.2, 0.1],
                                "auroc__intra_avg": 0.0, "auroc__intra_avg_2x": [0.70, 0.72, 0.80, 0.81]})
    convergence.to_csv(tmp_path / summary.CONVERGENCE_CSV, index=False)
    summary.write_summary(tmp_path)
    tables = (tmp_path / "tables.md").read_text()
    assert "3 of 4 configs converged; † marks the others (bce)" in tables
    assert "| bce † | " in tables and "| mse_c1 | " in tables
    # R² falls and AUROC rises along mse_c1, c10, c50, bce: rho = -1 over the three counted, with the hierarchical
    # interval only (two backbones: the table points to it instead of giving a seed-only interval of its own)
    assert "Spearman ρ(R², avg intra AUROC) over 3 configs (left out: bce): -1.000" in tables
    assert "interval over seeds" not in tables and "in 'What holds across backbones' below" in tables
    # per backbone: mse_c1 -> c10 gains .05 on bb0 and loses .03 on bb1, so 1 of 2 backbones has the paper's sign (+)
    row = next(line for line in tables.splitlines() if line.startswith("| mse_c1 → mse_c10 |"))
    assert " 1/2" in row.split("|")[4] and " 2/2" in row.split("|")[2]  # ΔR² -0.2 on both: the paper's sign
    # after twice the steps (convergence.csv's means): mse_c1 -> c10 moves R² by 0.5 - 0.9, intra AUROC by +0.02
    assert row.split("|")[2].endswith("; 2×: -0.400 ") and row.split("|")[4].endswith("; 2×: +0.020 ")
    # no config converged: rho of the objectives is not defined, and the budget's rho is said to be the budget's
    convergence.assign(converged=False).to_csv(tmp_path / summary.CONVERGENCE_CSV, index=False)
    summary.write_summary(tmp_path)
    tables = (tmp_path / "tables.md").read_text()
    assert "0 of 4 configs converged" in tables and "| mse_c1 † | " in tables
    assert ("Spearman ρ(R², avg intra AUROC) over the converged configs: not defined (0 converged). Over the 4 that "
            "left the plateau, a property of this training budget, not of the objectives: -1.000") in tables
    assert "| bce → bce_focal" not in tables  # bce_focal was not run


def sweep_grid():
    from lib import sweep
    from lib.paths import PARAMS_DIR

    return sweep.load_grid(PARAMS_DIR / "grids" / "study.yaml")

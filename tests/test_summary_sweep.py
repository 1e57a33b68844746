"""Study summary from run folders, and the sweep's plan / skip / failure bookkeeping."""

import json

import pandas as pd
import pytest

from lib import config, summary, sweep, train
from lib.paths import PARAMS_DIR


def _fake_run(study, name, metrics):
    run = study / name
    run.mkdir(parents=True)
    (run / "metrics.json").write_text(json.dumps(metrics))


@pytest.fixture
def study(tmp_path):
    # Two configs x two seeds, one intra and one cross benchmark; an unfinished run and a comparison folder.
    for seed, (a, b) in enumerate([(0.70, 0.60), (0.74, 0.64)]):
        _fake_run(tmp_path, f"mse_c10__seed{seed}", {"auroc__glyph_printed": a, "fpr95__glyph_printed": 0.5,
                                                      "auroc__intra_avg": a, "fpr95__intra_avg": 0.5,
                                                      "auroc__glyph_printed_to_handwritten": b,
                                                      "auroc__cross_avg": b, "r2": 0.1})
        _fake_run(tmp_path, f"ce__seed{seed}", {"auroc__glyph_printed": 0.6, "auroc__intra_avg": 0.6, "r2": 0.6})
    (tmp_path / "bce__seed0").mkdir()  # no metrics.json: not finished, not summarised
    _fake_run(tmp_path, "comparisons_glyph_printed__seed0", {"auroc__msp": 0.9})
    return tmp_path


def test_collect_keeps_finished_resend_runs_in_table_order(study):
    df = summary.collect(study)
    assert list(df["config"]) == ["mse_c10", "mse_c10", "ce", "ce"]  # ICIAP order, comparisons excluded


def test_aggregate_mean_and_sample_std(study):
    agg = summary.aggregate(summary.collect(study))
    assert agg.at["mse_c10", "auroc__glyph_printed"] == pytest.approx(0.72)  # (0.70 + 0.74) / 2
    # sample std (ddof 1, the comparisons' convention too): sqrt((0.02^2 + 0.02^2) / (2 - 1)) = 0.028284
    assert agg.at["mse_c10", "auroc__glyph_printed_std"] == pytest.approx(0.02 * 2 ** 0.5)
    assert agg.at["ce", "n_seeds"] == 2


def test_tables_and_csv_written(study):
    paths = summary.write_summary(study)
    names = {p.name for p in paths}
    assert {"summary.csv", "tables.md", "auroc_intra.png", "fpr95_intra.png", "r2_vs_auroc_intra.png"} <= names
    tables = (study / "tables.md").read_text()
    assert "| mse_c10 | 0.720 ± 0.028 / 0.500 ± 0.000 |" in tables
    assert "## cross-domain" in tables and "glyph_printed_to_handwritten AUROC" in tables
    assert len(pd.read_csv(study / "summary.csv")) == 4


def test_paper_columns_side_by_side(study):
    agg = summary.aggregate(summary.collect(study))
    text = summary.table(agg, ["glyph_printed"], "intra", paper=True)
    assert "paper R²" in text and "| 0.702 | 0.111 |" in text  # docs/METHOD.md §9: mse c=10 avg .702, R² .111


def test_spearman_needs_three_configs(study):
    rho, n = summary.r2_auroc_correlation(summary.aggregate(summary.collect(study)))
    assert n == 2 and rho != rho  # NaN with two points


def test_plateau_configs_are_flagged_and_left_out_of_the_learned_correlation(tmp_path):
    # three configs that learned (R² falls as AUROC rises) and one still on the label-prior plateau
    for name, r2, auroc, acc in [("bce", .6, .60, .4), ("ce", .4, .65, .3), ("hinge_d1", .2, .70, .5),
                                 ("mse_c10", 0.0, .50, 0.0)]:
        _fake_run(tmp_path, f"{name}__seed0", {"auroc__glyph_printed": auroc, "auroc__intra_avg": auroc, "r2": r2,
                                                 "train_acc_same_last": acc})
    agg = summary.aggregate(summary.collect(tmp_path))
    assert list(agg.index) == ["mse_c10", "bce", "ce", "hinge_d1"]  # ICIAP table order
    assert list(summary.learned(agg)) == [False, True, True, True]
    assert summary.plateau_configs(summary.collect(tmp_path)) == ["mse_c10"]
    # all four: R² ranks 1,4,3,2 vs AUROC ranks 1,2,3,4 -> sum d² = 8 -> rho = 1 - 6*8 / (4*15) = 0.2
    assert summary.r2_auroc_correlation(agg) == (pytest.approx(0.2), 4)
    assert summary.r2_auroc_correlation(agg, learned_only=True) == (pytest.approx(-1.0), 3)
    summary.write_summary(tmp_path)
    tables = (tmp_path / "tables.md").read_text()
    assert "| bce | 0.600 / – | 0.600 / – | 0.600 | – | 0.400 |" in tables  # no pair AUROC recorded: the old gate
    assert "Spearman ρ over the 3 configs that left the prior plateau and are not found unconverged: -1.000" in tables
    assert "Convergence: not measured for this study" in tables


def test_plan_covers_configs_seeds_stages(tmp_path):
    grid = sweep.load_grid(PARAMS_DIR / "grids" / "mini.yaml")
    jobs = sweep.plan(grid)
    assert len(jobs) == 11 * 1 * 3  # configs x seeds x stages (the demo: one backbone, one seed)
    first = jobs[0]
    assert first.run_dir.name == "resend_eccv__seed0" and first.notebook == "02_train"
    assert first.params["head"] == "fc" and first.params["preset"] == "mini"


def test_grid_errors(tmp_path):
    bad = tmp_path / "g.yaml"
    bad.write_text("study: s\npreset: mini\nseeds: [0]\nconfigs: [mse_c7]\nnotebooks: []\n")
    with pytest.raises(FileNotFoundError, match="unknown config 'mse_c7': choose from"):
        sweep.load_grid(bad)
    bad.write_text("study: s\npreset: mini\nseeds: [0]\nconfigs: [bce]\nnotebooks: []\nseed: 1\n")
    with pytest.raises(KeyError, match=r"unknown grid key\(s\) \['seed'\]"):
        sweep.load_grid(bad)


def _tiny_notebooks(nb_dir):
    """ok: records the kernel's OMP_NUM_THREADS in run_dir; boom: fails."""
    import nbformat

    nb_dir.mkdir()
    sources = {"ok": "import os, pathlib\npathlib.Path(run_dir, 'threads.txt').write_text(os.environ.get('OMP_NUM_THREADS', ''))",
               "boom": "raise RuntimeError('deliberate')",
               # slow: marks that it started, then sleeps seed seconds (a stage long enough to be killed)
               "slow": "import pathlib, time\npathlib.Path(run_dir, 'started.txt').write_text('')\ntime.sleep(seed)",
               # flaky: fails while run_dir/broken exists
               "flaky": "import pathlib\nassert not pathlib.Path(run_dir, 'broken').exists(), 'still broken'",
               # env: records where its kernel runs (submitit executor, threads, GPUs), after `seed` seconds
               "env": "import os, pathlib, time\ntime.sleep(seed)\npathlib.Path(run_dir, 'env.txt').write_text(' '.join("
                      "os.environ.get(k, '-') for k in ('SUBMITIT_EXECUTOR', 'OMP_NUM_THREADS', 'CUDA_VISIBLE_DEVICES')))",
               # a comparison stage: needs every ReSeND run beside it finished (their env.txt written)
               "06_comparisons": "import pathlib\nresend = [p for p in pathlib.Path(run_dir).parent.iterdir() if p.name != "
                                 "pathlib.Path(run_dir).name]\nassert resend and all((p / 'env.txt').exists() for p in resend "
                                 "if not (p / 'FAILED.txt').exists()), 'a ReSeND run is not finished'"}
    for name, source in sources.items():
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("run_dir = ''\nseed = 0", metadata={"tags": ["parameters"]}),
                                             nbformat.v4.new_code_cell(source)])
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbformat.write(nb, nb_dir / f"{name}.ipynb")
    return nb_dir


@pytest.mark.notebook
def test_failed_stage_is_recorded_and_finished_stage_skipped(tmp_path):
    nb_dir = _tiny_notebooks(tmp_path / "nbs")
    run_dir = tmp_path / "run"
    job = lambda name: sweep.Job(run_dir, name, {"run_dir": str(run_dir)}, notebooks_dir=nb_dir)  # noqa: E731
    assert sweep.run_job(job("ok"))[0] == "done"
    assert json.loads((run_dir / "ok.done.json").read_text())["hash"] == sweep.stage_hash(job("ok"))
    assert sweep.run_job(job("ok"))[0] == "skipped"
    assert sweep.run_job(job("boom"))[0] == "failed"
    assert "deliberate" in (run_dir / "FAILED.txt").read_text()
    assert (run_dir / "boom.failed.ipynb").exists() and not (run_dir / "boom.done.json").exists()


@pytest.mark.notebook
def test_parallel_runs_keep_stage_order_stop_a_failed_run_and_share_the_cores(tmp_path, monkeypatch):
    nb_dir = _tiny_notebooks(tmp_path / "nbs")
    monkeypatch.setattr(sweep.os, "cpu_count", lambda: 4)  # the parent computes the share: 4 cores / 2 jobs

    def job(run, name):
        return sweep.Job(tmp_path / run, name, {"run_dir": str(tmp_path / run)}, run, notebooks_dir=nb_dir)

    planned = [job("a", "ok"), job("b", "boom"), job("b", "ok"), job("c", "ok")]
    outcome = sweep.run_jobs(planned, jobs=2)
    assert sorted(outcome["done"]) == ["a/ok", "c/ok"] and outcome["failed"] == ["b/boom"]
    assert not (tmp_path / "b" / "ok.ipynb").exists()  # the stage after a failure is not run
    assert (tmp_path / "a" / "threads.txt").read_text() == (tmp_path / "c" / "threads.txt").read_text() == "2"
    with pytest.raises(ValueError, match=r"jobs=0 must be >= 1"):
        sweep.run_jobs(planned, jobs=0)


def test_chains_group_stages_by_run_in_plan_order():
    jobs = sweep.plan(sweep.load_grid(PARAMS_DIR / "grids" / "study.yaml"))
    chains = sweep.chains(jobs)
    assert len(chains) == 66 and all([j.notebook for j in c] == list(sweep.STAGES) for c in chains)
    assert [c[0].run_dir.name for c in chains[:3]] == ["resend_eccv__bb0__seed0", "resend_eccv__bb0__seed1",
                                                       "resend_eccv__bb1__seed0"]


def test_comparison_grid_plans_one_06_run_per_benchmark():
    jobs = sweep.plan(sweep.load_grid(PARAMS_DIR / "grids" / "mini_comparisons.yaml"))
    assert [j.notebook for j in jobs] == ["06_comparisons"] * 2
    assert [j.params["benchmark"] for j in jobs] == ["glyph_printed", "glyph_printed_to_handwritten"]
    assert jobs[0].run_dir.name == "comparisons_glyph_printed__seed0"
    assert jobs[0].params["resend_study"] == "mini" and jobs[0].params["benchmark"] == "glyph_printed"


def test_backbones_built_once_per_recipe_before_pending_training_stages(tmp_path, monkeypatch):
    from lib import pretrain

    built = []
    monkeypatch.setattr(pretrain, "source_backbone", lambda settings: built.append(pretrain.weight_path(settings)))
    jobs = sweep.plan(sweep.load_grid(PARAMS_DIR / "grids" / "mini.yaml"))  # mini: pretrained=source
    jobs = [sweep.Job(tmp_path / j.run_dir.name, j.notebook, j.params, j.label) for j in jobs]
    training = [j for j in jobs if j.notebook == "02_train"]
    for job in training[1:]:  # finished training stages need no backbone
        job.run_dir.mkdir(parents=True)
        sweep.stage_marker(job).write_text(json.dumps({"hash": "done before"}))
    sweep.build_backbones(jobs)
    assert built == [pretrain.weight_path(config.resolve(**training[0].params))]  # one recipe, built once
    built.clear()
    sweep.build_backbones(jobs[3:])  # every pending training stage is finished
    assert built == []
    sweep.build_backbones([sweep.Job(tmp_path / "x", "02_train", {**jobs[0].params, "pretrained": "none"})])
    assert built == []


def _job(nb_dir, run_dir, name, **params):
    return sweep.Job(run_dir, name, {"run_dir": str(run_dir), **params}, run_dir.name, notebooks_dir=nb_dir)


@pytest.mark.notebook
def test_a_killed_stage_is_never_recorded_as_done_and_reruns(tmp_path):
    """Kill the sweep (by pid, with its kernel) while a stage runs: papermill has already written that stage's
    notebook, but without a marker the stage is not done, so the rerun runs it and only then the stage after it."""
    import os
    import signal
    import subprocess
    import sys
    import time

    nb_dir = _tiny_notebooks(tmp_path / "nbs")
    run_dir = tmp_path / "run"
    script = (f"from pathlib import Path\nfrom lib import sweep\nnb, run = Path({str(nb_dir)!r}), Path({str(run_dir)!r})\n"
              "sweep.run_chain([sweep.Job(run, n, {'run_dir': str(run), 'seed': 60}, 'run', notebooks_dir=nb) "
              "for n in ('slow', 'ok')])\n")
    proc = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    deadline = time.time() + 120
    while not (run_dir / "started.txt").exists():
        assert proc.poll() is None and time.time() < deadline, "the sweep never reached the slow stage"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the sweep and its kernel, as a killed terminal would
    proc.wait()
    assert (run_dir / "slow.ipynb").exists() and not (run_dir / "slow.done.json").exists()
    assert not (run_dir / "ok.ipynb").exists()
    chain = [_job(nb_dir, run_dir, "slow", seed=0), _job(nb_dir, run_dir, "ok", seed=0)]
    assert sweep.run_chain(chain) == [("run/slow", "done"), ("run/ok", "done")]
    assert sweep.run_chain(chain) == [("run/slow", "skipped"), ("run/ok", "skipped")]


@pytest.mark.notebook
def test_changed_settings_are_reported_and_the_finished_stage_kept(tmp_path):
    nb_dir = _tiny_notebooks(tmp_path / "nbs")
    run_dir = tmp_path / "run"
    assert sweep.run_job(_job(nb_dir, run_dir, "ok", seed=0))[0] == "done"
    before = (run_dir / "ok.ipynb").read_bytes()
    assert sweep.run_chain([_job(nb_dir, run_dir, "ok", seed=1)]) == [("run/ok", "changed")]
    assert (run_dir / "ok.ipynb").read_bytes() == before


@pytest.mark.notebook
def test_a_retry_reruns_only_the_failed_stage(tmp_path):
    nb_dir = _tiny_notebooks(tmp_path / "nbs")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "broken").write_text("")
    chain = [_job(nb_dir, run_dir, "ok"), _job(nb_dir, run_dir, "flaky")]
    assert sweep.run_chain(chain) == [("run/ok", "done"), ("run/flaky", "failed")]
    first = (run_dir / "ok.done.json").read_text()
    (run_dir / "broken").unlink()
    assert sweep.run_chain(chain) == [("run/ok", "skipped"), ("run/flaky", "done")]
    assert (run_dir / "ok.done.json").read_text() == first and not (run_dir / "FAILED.txt").exists()


def test_a_second_sweep_on_the_same_study_is_refused_naming_the_first(tmp_path):
    import subprocess
    import sys

    script = (f"from pathlib import Path\nimport time\nfrom lib import sweep\n"
              f"with sweep.study_lock(Path({str(tmp_path)!r})):\n    print('locked', flush=True)\n    time.sleep(60)\n")
    holder = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RuntimeError, match=rf"another sweep holds .* \(pid {holder.pid}, started .*\): wait"):
            with sweep.study_lock(tmp_path):
                pass
    finally:
        holder.kill()  # by pid; the kernel releases a dead process's flock
        holder.wait()
    with sweep.study_lock(tmp_path):
        assert "pid" in (tmp_path / ".sweep.lock").read_text()


def test_the_plateau_gate_is_held_out_pair_auroc_on_every_seed(tmp_path):
    # hinge_d1: ranks pairs well but calls every same pair "different" (acc 0) -> learned;
    # mse_c50: one seed at 0.90 -> not learned, however good the other seed and its accuracy
    for seed, (hinge, mse) in enumerate([(0.99, 0.97), (0.98, 0.90)]):
        _fake_run(tmp_path, f"hinge_d1__seed{seed}", {"pair_auroc": hinge, "train_acc_same_last": 0.0, "r2": 0.1,
                                                       "auroc__glyph_printed": 0.7, "auroc__intra_avg": 0.7})
        _fake_run(tmp_path, f"mse_c50__seed{seed}", {"pair_auroc": mse, "train_acc_same_last": 0.8, "r2": 0.2,
                                                      "auroc__glyph_printed": 0.6, "auroc__intra_avg": 0.6})
    agg = summary.aggregate(summary.collect(tmp_path))
    assert summary.learned(agg).to_dict() == {"mse_c50": False, "hinge_d1": True}
    assert agg.at["mse_c50", "pair_auroc_min"] == 0.90
    summary.write_summary(tmp_path)
    assert "| hinge_d1 | 0.700 ± 0.000 / – | 0.700 ± 0.000 / – | 0.100 ± 0.000 | 0.985 ± 0.007 | 0.000 ± 0.000 |" \
        in (tmp_path / "tables.md").read_text()


@pytest.mark.notebook
def test_a_clean_sweep_prints_nothing_alarming(tmp_path):
    """No 'KeyboardInterrupt caught in kernel' (jupyter_client interrupts every kernel before shutting it down) and no
    'Passed unknown parameter' (the sweep passes checked settings a notebook's parameters cell need not list)."""
    import subprocess
    import sys

    nb_dir = _tiny_notebooks(tmp_path / "nbs")
    run = tmp_path / "run"
    script = (f"from pathlib import Path\nfrom lib import sweep\nnb, run = Path({str(nb_dir)!r}), Path({str(run)!r})\n"
              "chain = [sweep.Job(run, 'ok', {'run_dir': str(run), 'study': 'x', 'lr': 0.01}, 'run', notebooks_dir=nb)]\n"
              "print(sweep.run_chain(chain) + sweep.run_chain(chain))\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    printed = result.stdout + result.stderr
    assert result.returncode == 0 and "[('run/ok', 'done'), ('run/ok', 'skipped')]" in printed, printed
    assert "KeyboardInterrupt" not in printed and "Passed unknown parameter" not in printed and "WARNING" not in printed


def test_tables_say_which_training_regime_made_the_runs(study):
    """docs/METHOD.md §5: a table made with a frozen backbone on a feature bank says so (from the runs' env.json)."""
    summary.write_summary(study)
    assert "Training regime" not in (study / "tables.md").read_text()  # no env.json: nothing to claim
    for run in ("mse_c10__seed0", "mse_c10__seed1", "ce__seed0", "ce__seed1"):
        (study / run / "env.json").write_text(json.dumps({"train_regime": "frozen backbone, feature bank of 4 views"}))
    summary.write_summary(study)
    line = next(l for l in (study / "tables.md").read_text().splitlines() if l.startswith("Training regime"))
    assert "frozen backbone, feature bank of 4 views" in line and "only r and c train" in line
def test_training_metrics_over_the_first_and_last_fifth_by_hand():
    history = pd.DataFrame({"loss": [10.0, 9, 8, 7, 6, 5, 4, 3, 2, 1], "acc_same": [0.0] * 8 + [0.2, 0.4],
                            "acc_diff": [0.5] * 8 + [1.0, 0.9], "pairs_per_s": [1.0, 2, 3, 4, 5, 6, 7, 8, 9, 100]})
    metrics = train.training_metrics(history)
    # 10 rows: a fifth is 2 rows; first (10 + 9) / 2, last (2 + 1) / 2; median of 1..9, 100 = (5 + 6) / 2
    assert metrics == pytest.approx({"train_loss_init": 10.0, "train_loss_first": 9.5, "train_loss_last": 1.5,
                                     "train_acc_same_last": 0.3, "train_acc_diff_last": 0.95, "train_pairs_per_s": 5.5})
    short = train.training_metrics(history.iloc[:3])  # fewer than 5 rows: one row each end
    assert (short["train_loss_first"], short["train_loss_last"], short["train_acc_same_last"]) == (10.0, 8.0, 0.0)
    assert short["train_acc_same_last"] < summary.LEARNED_ACC_SAME <= metrics["train_acc_same_last"]
    with pytest.raises(ValueError, match="empty"):
        train.training_metrics(history.iloc[:0])


def test_runs_with_keeps_the_runs_that_recorded_every_column(study):
    df = summary.collect(study)  # mse_c10 x 2 and ce x 2 have r2; only mse_c10 has auroc__cross_avg
    assert summary.runs_with(df, ["r2", "auroc__cross_avg"])["config"].tolist() == ["mse_c10", "mse_c10"]
    assert len(summary.runs_with(df, ["r2"])) == 4
    assert summary.runs_with(df, ["r2", "not_recorded"]).empty and summary.runs_with(pd.DataFrame(), ["r2"]).empty


def test_worker_i_gets_gpu_i_round_robin_and_none_without_gpus():
    assert sweep.gpu_assignment(8, [str(i) for i in range(8)]) == [str(i) for i in range(8)]
    assert sweep.gpu_assignment(3, ["3", "5"]) == ["3", "5", "3"]  # fewer GPUs than workers: shared in turn
    assert sweep.gpu_assignment(2, []) == [None, None]  # CPU machine: the kernels' environment is left alone
    assert sweep.visible_gpus({"CUDA_VISIBLE_DEVICES": "2, 7"}) == ["2", "7"]
    assert sweep.visible_gpus({"CUDA_VISIBLE_DEVICES": ""}) == []
    import torch

    assert sweep.visible_gpus({}) == [str(i) for i in range(torch.cuda.device_count())]


@pytest.mark.notebook
def test_each_workers_kernel_runs_on_its_own_gpu(tmp_path, monkeypatch):
    """--jobs 2 with GPUs 3 and 5 visible: the two runs (at once: each stage takes 3 s) see one GPU each, set in
    the environment their kernel starts with."""
    nb_dir = _tiny_notebooks(tmp_path / "nbs")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    planned = [_job(nb_dir, tmp_path / run, "env", seed=3) for run in ("a", "b")]
    assert sorted(sweep.run_jobs(planned, jobs=2)["done"]) == ["a/env", "b/env"]
    seen = sorted((tmp_path / run / "env.txt").read_text().split()[2] for run in ("a", "b"))
    assert seen == ["3", "5"]


@pytest.mark.notebook
def test_cluster_local_runs_each_run_as_a_submitit_job_with_the_sweeps_semantics(tmp_path, monkeypatch):
    """submitit's local executor: a run's stages chained in one job (b stops at its failure), the kernels inside
    submitit jobs on cpus_per_job threads and one visible GPU each (3, 5, 3 for runs a, c, b), the comparison
    submitted after every ReSeND job ended; a rerun skips."""
    nb_dir = _tiny_notebooks(tmp_path / "nbs")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    study = tmp_path / "study"
    planned = [_job(nb_dir, study / "a", "ok"), _job(nb_dir, study / "a", "env", seed=2), _job(nb_dir, study / "c", "env"),
               _job(nb_dir, study / "b", "boom"), _job(nb_dir, study / "b", "ok"),
               _job(nb_dir, study / "comparisons", "06_comparisons")]
    cluster = sweep.Cluster("local", tmp_path / ".submitit", gpus_per_job=1, cpus_per_job=1, time_min=5)
    outcome = sweep.run_jobs(planned, cluster=cluster)
    assert sorted(outcome["done"]) == ["a/env", "a/ok", "c/env", "comparisons/06_comparisons"], outcome
    assert outcome["failed"] == ["b/boom"] and not (study / "b" / "ok.ipynb").exists()
    assert (study / "a" / "env.txt").read_text().split() == ["local", "1", "3"]
    assert (study / "c" / "env.txt").read_text().split() == ["local", "1", "5"]
    assert len([d for d in (tmp_path / ".submitit").iterdir() if d.name.isdigit()]) == 4  # a job (id) per run
    again = sweep.run_jobs([j for j in planned if j.run_dir.name != "b"], cluster=cluster)
    assert sorted(again["skipped"]) == ["a/env", "a/ok", "c/env", "comparisons/06_comparisons"]


def test_a_lost_cluster_job_is_a_failure_of_its_first_unfinished_stage(tmp_path):
    run = tmp_path / "run"
    chain = [_job(tmp_path, run, "ok"), _job(tmp_path, run, "flaky")]
    run.mkdir()
    sweep.stage_marker(chain[0]).write_text(json.dumps({"hash": "x"}))
    error = RuntimeError("Job 123 (task: 0) with path /x\nhas not produced any output (state: TIMEOUT)")
    assert sweep._record_lost_job(chain, error) == ("run/flaky", "failed")
    assert (run / "FAILED.txt").read_text().startswith("the cluster job of run ended without a result (RuntimeError: "
                                                       "Job 123 (task: 0) with path /x)")


def test_slurm_jobs_get_the_partition_gpus_cpus_time_and_array_limit(tmp_path, monkeypatch):
    from submitit.slurm.slurm import _make_sbatch_string

    cluster = sweep.Cluster("slurm", tmp_path, partition="gpu", gpus_per_job=1, cpus_per_job=8, time_min=720,
                            mem_gb=64, parallel=8)
    script = _make_sbatch_string(command="run", folder=str(tmp_path / "%j"), map_count=33, **cluster.parameters())
    for line in ("--array=0-32%8", "--partition=gpu", "--gpus-per-node=1", "--cpus-per-task=8", "--time=720",
                 "--mem=64GB", "--nodes=1", "--ntasks-per-node=1"):
        assert f"#SBATCH {line}\n" in script
    monkeypatch.setattr(sweep.shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match="--cluster slurm needs Slurm's sbatch on PATH: run the sweep on a Slurm "):
        cluster.executor()
    with pytest.raises(ValueError, match="cpus_per_job=0 must be >= 1"):
        sweep.Cluster("slurm", tmp_path, cpus_per_job=0)


def test_cluster_options_without_a_cluster_are_refused_naming_the_fix(capsys):
    grid = str(PARAMS_DIR / "grids" / "smoke.yaml")
    with pytest.raises(SystemExit):
        sweep.main([grid, "--partition", "gpu", "--time", "60"])
    assert "--partition, --time apply to submitit jobs: add --cluster slurm" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        sweep.main([grid, "--cluster", "local", "--mem-gb", "8"])
    assert "--partition and --mem-gb are Slurm settings" in capsys.readouterr().err


# ----------------------------------------------------------------------------- issue 21: a study that cannot lie
def _fake_stage(input_path, output_path, parameters, **_):
    """papermill.execute_notebook's stand-in: each stage writes what the real one does (02: checkpoint + train_ and
    pair_ keys; 03: per-benchmark keys + scores; 04: r2), values from the config and seed, in a second."""
    import numpy as np

    from lib import runs

    run, stage = __import__("pathlib").Path(parameters["run_dir"]), __import__("pathlib").Path(input_path).stem
    value = (0.6 if parameters["config_name"] == "bce" else 0.7) + parameters["seed"] / 100
    if stage == "02_train":
        (run / "checkpoints").mkdir(parents=True, exist_ok=True)
        (run / "checkpoints" / "last.pt").write_bytes(repr(parameters).encode())
        runs.write_metrics(run, {"train_loss_last": 0.1, "train_acc_same_last": 0.9, "pair_auroc": 0.99,
                                 "train_seconds": 3.0})
    elif stage == "03_evaluate":
        runs.write_metrics(run, {"auroc__glyph_printed": value, "fpr95__glyph_printed": 0.5, "auroc__intra_avg": value,
                                 "fpr95__intra_avg": 0.5})
        (run / "scores").mkdir(exist_ok=True)
        np.savez(run / "scores" / "glyph_printed.npz", normality=np.full(4, value))
    else:
        runs.write_metrics(run, {"r2": value / 2, "r2_pairs": 84.0})
    __import__("pathlib").Path(output_path).write_text("{}")


@pytest.fixture
def fake_sweep(tmp_path, monkeypatch):
    """``run(**overrides) -> (exit status, printed)``: lib.sweep's command line on a 2-config smoke grid under
    tmp_path, its stages `_fake_stage`, its reference rows a file written from the grid's benchmarks."""
    import papermill

    from lib import reference

    monkeypatch.setattr(sweep, "OUTPUTS_DIR", tmp_path)
    monkeypatch.setattr(papermill, "execute_notebook", _fake_stage)

    def fake_reference(study_dir, settings):
        (study_dir / "reference").mkdir(exist_ok=True)
        (study_dir / "reference" / "metrics.json").write_text(json.dumps({"benchmarks": settings.benchmarks}))

    monkeypatch.setattr(reference, "write_reference_rows", fake_reference)

    def run(capsys, **overrides):
        grid = {"study": "s", "preset": "smoke", "seeds": [0], "configs": ["bce", "hinge_d0.1"],
                "notebooks": list(sweep.STAGES), "overrides": {"benchmarks": "glyph_printed", **overrides}}
        (tmp_path / "grid.yaml").write_text(json.dumps(grid))
        status = sweep.main([str(tmp_path / "grid.yaml")])
        return status, capsys.readouterr().out

    return run


def test_a_deleted_output_reruns_its_stage_and_the_table_keeps_every_run(fake_sweep, tmp_path, capsys):
    """Issue 21, case 4: deleting a finished run's metrics.json and rerunning gave "0 stages run, 6 skipped", rc 0
    and a summary without that run. Now the markers vouch for their outputs: the stages whose outputs are gone run
    again. 03's keys changed by hand are CHANGED; 02's marker stays valid under 03's and 04's writes."""
    study = tmp_path / "s"
    assert fake_sweep(capsys)[0] == 0
    first = pd.read_csv(study / "summary.csv")
    assert set(first["config"]) == {"bce", "hinge_d0.1"}
    marker = json.loads((study / "bce__seed0" / "02_train.done.json").read_text())["outputs"]
    assert list(marker["files"]) == ["checkpoints/last.pt"] and "auroc__glyph_printed" not in marker["keys"]
    assert fake_sweep(capsys)[1].startswith("sweep s: 0 stages run, 6 skipped")
    (study / "bce__seed0" / "metrics.json").unlink()
    status, printed = fake_sweep(capsys)
    assert status == 0 and printed.startswith("sweep s: 3 stages run, 3 skipped"), printed
    pd.testing.assert_frame_equal(pd.read_csv(study / "summary.csv"), first)
    (study / "hinge_d0.1__seed0" / "scores" / "glyph_printed.npz").unlink()  # 03's file: 03 and 04 rerun
    assert fake_sweep(capsys)[1].startswith("sweep s: 2 stages run, 4 skipped")
    runs_metrics = json.loads((study / "bce__seed0" / "metrics.json").read_text())
    (study / "bce__seed0" / "metrics.json").write_text(json.dumps({**runs_metrics, "auroc__glyph_printed": 0.99}))
    status, printed = fake_sweep(capsys)
    assert status == 1 and "CHANGED bce__seed0/03_evaluate" in printed and "0 stages run, 4 skipped" in printed


def test_a_changed_grid_leaves_the_studys_records_alone(fake_sweep, tmp_path, capsys):
    """Issue 21, case 7: a grid with other benchmarks on a finished study said CHANGED (rc 1) and rewrote the
    reference rows and the tables all the same."""
    study = tmp_path / "s"
    assert fake_sweep(capsys)[0] == 0
    records = {p: p.read_bytes() for p in [study / "summary.csv", study / "tables.md",
                                           study / "reference" / "metrics.json"]}
    status, printed = fake_sweep(capsys, benchmarks="glyph_printed,glyph_printed_to_handwritten")
    assert status == 1 and "2 with changed settings" in printed and "left as they were" in printed
    assert {p: p.read_bytes() for p in records} == records


def test_a_grid_is_checked_whole_before_anything_runs(tmp_path, monkeypatch):
    """Issue 21: a grid naming an unknown benchmark passed --dry-run, trained every run, then died in the reference
    rows; an unknown comparison benchmark likewise."""
    monkeypatch.setattr(sweep, "OUTPUTS_DIR", tmp_path)
    for grid in ({"overrides": {"benchmarks": "glyph_printed,nonexistent"}},
                 {"comparisons": {"benchmarks": ["nonexistent"]}}):
        path = tmp_path / "grid.yaml"
        path.write_text(json.dumps({"study": "s", "preset": "smoke", "seeds": [0], "configs": ["bce"], **grid}))
        with pytest.raises(ValueError, match="unknown benchmark 'nonexistent'"):
            sweep.main([str(path), "--dry-run"])
    assert list(tmp_path.iterdir()) == [tmp_path / "grid.yaml"]


def test_device_runs_the_grid_as_a_study_of_its_own(tmp_path, monkeypatch, capsys):
    """Issue 23: `make demo DEVICE=cuda` (sweep --device cuda) puts every run on the GPU as the study <study>_cuda,
    never beside the CPU runs of the grid's own study; without a GPU it stops before anything runs."""
    monkeypatch.setattr(sweep, "OUTPUTS_DIR", tmp_path)
    path = tmp_path / "grid.yaml"
    path.write_text(json.dumps({"study": "s", "preset": "smoke", "seeds": [0], "configs": ["bce"],
                                "overrides": {"steps": 3}}))
    grid = sweep.on_device(sweep.load_grid(path), "cuda")
    assert grid.study == "s_cuda" and grid.overrides == {"steps": 3, "device": "cuda"}
    assert {job.params["device"] for job in sweep.plan(grid)} == {"cuda"}
    assert {job.run_dir.parent for job in sweep.plan(grid)} == {tmp_path / "s_cuda"}
    with pytest.raises(ValueError, match="unknown device 'auto' for a sweep: choose one of cpu, cuda"):
        sweep.on_device(grid, "auto")
    assert sweep.main([str(path), "--device", "cuda", "--dry-run"]) == 0
    assert capsys.readouterr().out.split()[:2] == [str(tmp_path / "s_cuda" / "bce__seed0"), "02_train"]
    monkeypatch.setattr(sweep.torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit):
        sweep.main([str(path), "--device", "cuda"])
    assert "torch sees no CUDA GPU here" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == [path]


def _marked(mark: str) -> list[tuple[int, str]]:
    """(pid, command line) of every live process whose environment carries RESEND_TEST_MARK=`mark`."""
    import os
    from pathlib import Path

    found = []
    for entry in os.scandir("/proc"):
        try:
            if entry.name.isdigit() and f"RESEND_TEST_MARK={mark}".encode() in \
                    Path(entry.path, "environ").read_bytes().split(b"\0"):
                found.append((int(entry.name), Path(entry.path, "cmdline").read_bytes().replace(b"\0", b" ").decode()))
        except OSError:
            continue
    return found


@pytest.mark.slow
@pytest.mark.notebook
def test_a_killed_parallel_sweep_stops_everything_it_started_and_a_rerun_completes_it(tmp_path):
    """Issue 21, case 5: SIGTERM to a `--jobs 2` sweep left its workers and kernels running under PID 1 with the
    study lock released, so a rerun raced them. Now the sweep stops them all before it exits (and unlocks); the rerun
    gives the summary of the same runs trained uninterrupted (the smoke grid, shrunk: 02 only, 2 steps of a tiny
    model), and so does the same grid at --jobs 1 (case 3: a kernel's thread count changes no bit)."""
    import os
    import shutil
    import signal
    import subprocess
    import sys
    import time
    import uuid

    from lib import paths

    grid = config.load_yaml(PARAMS_DIR / "grids" / "smoke.yaml")
    grid.update(study="killed", notebooks=["02_train"],
                overrides={"steps": 2, "device": "cpu", "pretrained": "none", "source_classes": 10, "d_model": 16,
                           "n_heads": 2, "head_hidden": 8, "image_size": 16, "batch_pairs": 42,
                           "benchmarks": "glyph_printed"})
    (tmp_path / "grid.yaml").write_text(json.dumps(grid))
    mark = uuid.uuid4().hex
    env = {**os.environ, "PYTHONPATH": str(paths.REPO_ROOT), "RESEND_OUTPUTS": str(tmp_path / "out"),
           "OMP_NUM_THREADS": "1", "RESEND_TEST_MARK": mark, "RESEND_DEBUG": ""}
    command = [sys.executable, "-m", "lib.sweep", str(tmp_path / "grid.yaml"), "--jobs", "2"]
    study = tmp_path / "out" / "killed"

    sweeping = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while sum("ipykernel" in cmd for _, cmd in _marked(mark)) < 2:  # both runs' kernels are up: mid-run
        assert sweeping.poll() is None and time.time() < deadline, sweeping.communicate()
        time.sleep(0.2)
    sweeping.send_signal(signal.SIGTERM)
    _, err = sweeping.communicate(timeout=60)
    assert sweeping.returncode == 128 + signal.SIGTERM
    lines = err.replace("\r", "\n").splitlines()  # the progress bar's states end with \r
    assert [line for line in lines if "error" in line.lower() or "Traceback" in line] == [
        "lib.sweep: error: sweep interrupted by SIGTERM: its workers and notebook kernels are stopped and the stages "
        "they ran have no marker; rerun the same command to continue"], err
    left = time.time() + 5  # the sweep's resource tracker ends once the sweep has exited
    while _marked(mark) and time.time() < left:
        time.sleep(0.1)
    assert _marked(mark) == []  # no worker, kernel or child of them is left
    with sweep.study_lock(study):  # and the lock is free
        pass
    assert not list(study.glob("*/02_train.done.json"))

    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]

    # the same runs uninterrupted, in-process (train_stage: what 02 runs), beside the same reference rows
    baseline = tmp_path / "baseline"
    shutil.copytree(study / "reference", baseline / "reference")
    for job in sweep.plan(sweep.load_grid(tmp_path / "grid.yaml")):
        train.train_stage(config.resolve(**{**job.params, "run_dir": str(baseline / job.run_dir.name)}, say=print))
    summary.write_summary(baseline)

    def table(folder) -> pd.DataFrame:
        frame = pd.read_csv(folder / "summary.csv")
        return frame[[c for c in frame.columns if "seconds" not in c and "per_s" not in c]]

    assert set(table(study)["config"]) == {"bce", "hinge_d0.1"}
    pd.testing.assert_frame_equal(table(study), table(baseline))

    # case 3: --jobs 1, each kernel offered both cores, writes the table --jobs 2 (one core each) wrote
    alone = {**env, "RESEND_OUTPUTS": str(tmp_path / "alone"), "OMP_NUM_THREADS": "2"}
    done = subprocess.run([*command[:-1], "1"], env=alone, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    pd.testing.assert_frame_equal(table(tmp_path / "alone" / "killed"), table(study))

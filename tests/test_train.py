"""lib.train: history and checkpoint, bit-identical resume after a kill, finished runs kept, NaN stop, LARS, CLI."""

import contextlib

import numpy as np
import pandas as pd
import pytest
import torch

from lib import checkpoints, config, device, runs, train
from lib.data import TensorImageSet

TINY = dict(d_model=16, n_heads=2, n_blocks=1, head_hidden=8, image_size=16, pretrained="none", neg_to_pos_ratio=3,
            batch_pairs=8, images_per_class=2, steps=6, warmup_steps=2, lr=0.05, device="cpu")


@pytest.fixture(scope="module")
def source():
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (16, 3, 16, 16), dtype=torch.uint8, generator=gen)
    return TensorImageSet(images, np.repeat(np.arange(4), 4))


def tiny(tmp_path, name="run", **overrides):
    return config.resolve("smoke", **{**TINY, "run_dir": str(tmp_path / name), **overrides})


def test_train_writes_history_checkpoint_and_env(tmp_path, source):
    settings = tiny(tmp_path, loss="ce")
    run_dir = runs.prepare(settings, "train")
    history = train.train(settings, run_dir, source)
    assert list(history["step"]) == [1, 2, 3, 4, 5, 6]
    assert {"loss", "acc_same", "acc_diff", "lr", "pairs_per_s", "images_per_s"} <= set(history.columns)
    assert history["lr"].tolist()[:3] == pytest.approx([0.025, 0.05, 0.05])  # warmup (step+1)/2
    assert ((history["acc_same"] >= 0) & (history["acc_same"] <= 1)).all()
    pd.testing.assert_frame_equal(pd.read_csv(run_dir / "history.csv"), history, check_dtype=False)
    state = torch.load(checkpoints.checkpoint_path(run_dir), weights_only=False)
    assert {"model", "optimizer", "scheduler", "step", "finished", "rng", "sampler", "settings", "history",
            "model_info", "objective", "world_size"} <= set(state)
    assert state["step"] == 6 and state["finished"] and state["objective"]["name"] == "ce" and state["world_size"] == 1
    assert runs.update_env(run_dir, {})["pretrained"] == "random init"
    net, objective, loaded = checkpoints.load_trained(run_dir)
    assert objective.out_dim == 2 and loaded.d_model == 16 and not net.training
    assert all(torch.equal(v, state["model"][k]) for k, v in net.state_dict().items())


def test_per_pair_mode_trains(tmp_path, source):
    history = train.train(tiny(tmp_path, pairing="per_pair", steps=2, loss="hinge"), tmp_path / "pp", source)
    assert len(history) == 2 and np.isfinite(history["loss"]).all()


def test_resume_after_a_kill_is_bit_identical(tmp_path, source, train_until_killed):
    straight = tiny(tmp_path, "straight", checkpoint_every=3)
    expected = train.train(straight, straight.resolved_run_dir(), source)
    expected_state = torch.load(checkpoints.checkpoint_path(straight.resolved_run_dir()), weights_only=False)

    killed = tiny(tmp_path, "killed", checkpoint_every=3)
    train_until_killed(killed, source, at_step=3)  # the process dies right after the step-3 checkpoint
    assert torch.load(checkpoints.checkpoint_path(killed.resolved_run_dir()), weights_only=False)["step"] == 3
    resumed = train.train(killed, killed.resolved_run_dir(), source)
    state = torch.load(checkpoints.checkpoint_path(killed.resolved_run_dir()), weights_only=False)
    for key, value in expected_state["model"].items():
        assert torch.equal(value, state["model"][key]), key
    same_columns = [c for c in expected.columns if c not in train.TIMING_COLUMNS]
    pd.testing.assert_frame_equal(resumed[same_columns], expected[same_columns], check_exact=True)
    assert expected["loss"].iloc[0] != expected["loss"].iloc[-1]  # it did train


def test_a_finished_run_is_not_retrained(tmp_path, source, monkeypatch):
    settings = tiny(tmp_path, steps=2)
    run_dir = settings.resolved_run_dir()
    first = train.train(settings, run_dir, source)
    runs.write_metrics(run_dir, {"train_loss_last": float(first["loss"].iloc[-1])})

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(train.PairStep, "forward", no_training)
    pd.testing.assert_frame_equal(train.train(settings, run_dir, source), first)
    with pytest.raises(ValueError, match="finished run"):
        train.train(tiny(tmp_path, steps=2, lr=0.1), run_dir, source)


def test_nan_loss_stops_with_the_step_and_objective(tmp_path, source):
    with pytest.raises(FloatingPointError, match=r"at step \d+ with objective bce_focal"):
        train.train(tiny(tmp_path, loss="bce_focal", lr=1e30, warmup_steps=0), tmp_path / "nan", source)


def test_load_trained_without_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="run notebooks/02_train.ipynb first"):
        checkpoints.load_trained(tmp_path)


def test_lars_optimizer_and_warmup(source):
    from timm.optim import Lars

    settings = config.resolve("smoke", **{**TINY, "lars": True})
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))
    opt = train.make_optimizer(net, settings)
    assert isinstance(opt, Lars) and opt.param_groups[0]["trust_coeff"] == 1e-3
    assert [len(g["params"]) for g in opt.param_groups] == [1, 3]  # decay on the weight matrix only
    before = net[0].weight.detach().clone()
    net(torch.randn(5, 4)).sum().backward()
    opt.step()
    assert not torch.equal(before, net[0].weight)
    factor = train.warmup_factor(4)
    assert [factor(s) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]


def test_cli_settings(tmp_path):
    cfg = tmp_path / "x.yaml"
    cfg.write_text("preset: mini\nloss: hinge\nhinge_delta: 0.1\n")
    settings = config.settings_from_cli(["--config", str(cfg), "--set", "steps=7", "--set", "pairing=per_pair"])
    assert (settings.preset, settings.d_model, settings.hinge_delta, settings.steps, settings.pairing) == \
        ("mini", 128, 0.1, 7, "per_pair")
    with pytest.raises(KeyError):
        config.settings_from_cli(["--set", "stepz=3"])


def test_resolve_device():
    assert device.resolve_device(config.resolve("smoke", device="cpu")) == torch.device("cpu")
    if not torch.cuda.is_available():
        assert device.resolve_device(config.resolve("smoke")) == torch.device("cpu")
        with pytest.raises(RuntimeError, match="no CUDA"):
            device.resolve_device(config.resolve("smoke", device="cuda"))


def test_autocast_is_bf16_on_cuda_only_and_off_when_amp_is_off():
    assert isinstance(device.autocast(torch.device("cpu")), contextlib.nullcontext)
    assert isinstance(device.autocast(torch.device("cuda"), enabled=False), contextlib.nullcontext)
    x = torch.randn(4, 4)
    with device.autocast(torch.device("cpu")):
        assert (x @ x).dtype == torch.float32  # the CPU path stays fp32
    with device.autocast(torch.device("cpu"), cpu=True):  # unless cpu_amp asks for bf16 on the CPU too
        assert (x @ x).dtype == torch.bfloat16
    assert isinstance(device.autocast(torch.device("cpu"), enabled=False, cpu=True), contextlib.nullcontext)
    if torch.cuda.is_available():
        y = torch.randn(4, 4, device="cuda")
        with device.autocast(torch.device("cuda")):
            assert (y @ y).dtype == torch.bfloat16


def test_cli_set_applies_a_value_equal_to_the_smoke_default():
    assert config.settings_from_cli(["--set", "preset=mini", "--set", "steps=30"]).steps == 30  # mini says 400


def _state(run_dir):
    return torch.load(checkpoints.checkpoint_path(run_dir), weights_only=False)["model"]


def test_a_seeded_run_is_bit_identical_at_one_and_two_threads(tmp_path, source):
    """Asked for 1 or 2 threads, a deterministic CPU run computes on one (lib.device.configure_cpu): at 2 threads
    120 of 140 smoke tensors differed before (oneDNN's and ATen's reductions split over the threads)."""
    kw = dict(image_size=32, small_stem=False, steps=3, batch_pairs=32, images_per_class=2)
    big = TensorImageSet(torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8,
                                       generator=torch.Generator().manual_seed(1)), np.repeat(np.arange(16), 4))
    first, second = tiny(tmp_path, "a", **kw), tiny(tmp_path, "b", **kw)
    torch.set_num_threads(1)
    train.train(first, first.resolved_run_dir(), big)
    torch.set_num_threads(2)
    train.train(second, second.resolved_run_dir(), big)
    assert torch.get_num_threads() == 1
    a, b = _state(first.resolved_run_dir()), _state(second.resolved_run_dir())
    assert [k for k in a if not torch.equal(a[k], b[k])] == []
    assert torch.are_deterministic_algorithms_enabled()


def test_a_refused_run_leaves_the_finished_runs_records_alone(tmp_path, source):
    settings = tiny(tmp_path, steps=2)
    run_dir = settings.resolved_run_dir()
    train.train(settings, run_dir, source)
    runs.write_metrics(run_dir, {"train_loss_last": 0.5})
    before = {name: (run_dir / name).read_bytes() for name in ("params.yaml", "history.csv", "metrics.json")}
    with pytest.raises(ValueError, match="finished run trained with other settings"):
        train.train(tiny(tmp_path, steps=2, lr=0.1), run_dir, source)
    assert {name: (run_dir / name).read_bytes() for name in before} == before
    assert config.load_yaml(run_dir / "params.yaml")["lr"] == TINY["lr"]


@pytest.fixture
def unwritable(tmp_path):
    """A folder this process cannot write: chmod for a normal user; root ignores modes, so a procfs folder."""
    import os

    if os.geteuid() == 0:
        return "/proc/self/fdinfo"
    folder = tmp_path / "locked"
    folder.mkdir(mode=0o500)
    return str(folder)


def test_an_unwritable_checkpoint_folder_fails_before_training(tmp_path, source, unwritable, monkeypatch):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "checkpoints").symlink_to(unwritable)
    monkeypatch.setattr(train.PairStep, "forward", lambda *a: pytest.fail("trained before checking the folder"))
    with pytest.raises(PermissionError, match=r"cannot write to .*checkpoints .*choose a writable run_dir"):
        train.train(tiny(tmp_path), run_dir, source)


def test_a_full_disk_at_the_final_checkpoint_names_the_file_and_keeps_the_history(tmp_path, source, monkeypatch):
    import errno

    write = runs.atomic_write_bytes

    def full_disk(path, data):
        if path.name == "last.pt":
            raise OSError(errno.ENOSPC, "No space left on device")
        write(path, data)

    monkeypatch.setattr(runs, "atomic_write_bytes", full_disk)
    settings = tiny(tmp_path)
    with pytest.raises(OSError, match=r"could not write checkpoint .*last\.pt \(No space left on device"):
        train.train(settings, settings.resolved_run_dir(), source)
    assert list(pd.read_csv(settings.resolved_run_dir() / "history.csv")["step"]) == [1, 2, 3, 4, 5, 6]


def test_a_truncated_checkpoint_names_the_file_and_the_fix(tmp_path, source):
    settings = tiny(tmp_path, checkpoint_every=2, steps=4)
    run_dir = settings.resolved_run_dir()
    train.train(settings, run_dir, source)
    path = checkpoints.checkpoint_path(run_dir)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    advice = rf"checkpoint .*last\.pt is unreadable \(truncated or corrupt.*move its folder {run_dir} away"
    with pytest.raises(RuntimeError, match=advice):
        train.train(settings, run_dir, source)
    runs.write_metrics(run_dir, {"train_steps": 4})  # a finished run: resume=False would not help it
    with pytest.raises(RuntimeError, match=advice):
        train.train(tiny(tmp_path, checkpoint_every=2, steps=4, resume=False), run_dir, source)
    run_dir.rename(tmp_path / "moved")  # the advice, followed
    assert len(train.train(settings, run_dir, source)) == 4


def test_an_unfinished_checkpoint_is_not_evaluated(tmp_path, source, train_until_killed):
    settings = tiny(tmp_path, checkpoint_every=3)
    train_until_killed(settings, source, at_step=3)
    with pytest.raises(RuntimeError, match=r"unfinished training run \(step 3 of 6\): run 02_train again"):
        checkpoints.load_trained(settings.resolved_run_dir())


def test_skipped_source_images_are_counted_in_env_json(tmp_path, tiny_image_tree):
    import json

    from lib.data import FileImageSet

    paths = [tiny_image_tree / "pacs" / "photo" / c / f"img{k}.png" for c in ("dog", "horse") for k in range(3)]
    with pytest.warns(UserWarning, match="skipped 1 missing"):
        source = FileImageSet(paths + [tiny_image_tree / "gone.png"], [0, 0, 0, 1, 1, 1, 1], image_size=16)
    settings = tiny(tmp_path, steps=1, batch_pairs=4, neg_to_pos_ratio=1)
    train.train(settings, settings.resolved_run_dir(), source)
    assert json.loads((settings.resolved_run_dir() / "env.json").read_text())["source_skipped_images"] == 1


def test_a_file_backed_source_trains_the_same_with_decoding_workers_prefetch_and_resume(tmp_path, tiny_image_tree,
                                                                                         train_until_killed,
                                                                                         monkeypatch):
    """num_workers only moves the decoding: the same seed gives the same losses and weights with 0 workers (decoded in
    the step) or 2 (step t+1 decoded by the workers while step t trains: `train.Prefetch`), and a prefetching run
    killed after a checkpoint resumes to the same bits (the checkpoint holds the states from before the prefetched
    step's draws)."""
    from lib.data import FileImageSet

    paths = [tiny_image_tree / "pacs" / "photo" / c / f"img{k}.png" for c in ("dog", "horse", "house") for k in range(3)]
    source = FileImageSet(paths, np.repeat(np.arange(3), 3), image_size=16)
    taken = []
    take = train.Prefetch.take
    monkeypatch.setattr(train.Prefetch, "take", lambda self, step: taken.append(step) or take(self, step))

    def run(name, workers, kill_at=None):
        settings = tiny(tmp_path, name, steps=4, log_every=1, checkpoint_every=2, batch_pairs=8, neg_to_pos_ratio=1,
                        num_workers=workers)
        if kill_at:
            train_until_killed(settings, source, at_step=kill_at)  # then resumed below (resume is the default)
        history = train.train(settings, settings.resolved_run_dir(), source)
        model = torch.load(checkpoints.checkpoint_path(settings.resolved_run_dir()), weights_only=False)["model"]
        return history["loss"].tolist(), model

    plain, prefetched, resumed = run("w0", 0), run("w2", 2), run("w2_killed", 2, kill_at=2)
    assert taken == [0, 1, 2, 3] + [0, 1] + [2, 3]  # with workers every step is taken from the prefetch
    assert np.isfinite(plain[0]).all() and plain[0] == prefetched[0] == resumed[0]
    for other in (prefetched, resumed):
        assert all(torch.equal(v, other[1][k]) for k, v in plain[1].items())


def test_the_throughput_benchmark_times_the_training_step(tmp_path, source, monkeypatch):
    """benchmarks/train_throughput.py measures lib.train.train_step, the step train.train runs, not a copy of it."""
    import runpy

    from lib.paths import REPO_ROOT

    measure = runpy.run_path(str(REPO_ROOT / "benchmarks" / "train_throughput.py"))["measure"]
    real, calls = train.train_step, []
    monkeypatch.setattr(train, "train_step", lambda *args, **kwargs: calls.append(1) or real(*args, **kwargs))
    pairs_per_s, images_per_s = measure(tiny(tmp_path), source, steps=1, warmup=1)
    assert len(calls) == 2 and pairs_per_s > 0 and images_per_s > 0


TRAIN_STAGE_METRICS = {"train_loss_init", "train_loss_first", "train_loss_last", "train_acc_same_last",
                       "train_acc_diff_last", "train_pairs_per_s", "train_steps", "train_seconds", "pair_auroc",
                       "pair_acc_same", "pair_acc_diff"}


def test_a_torchrun_trained_run_is_recorded_like_02_and_evaluated_by_03(tmp_path):
    """torchrun, 2 processes on the CPU (gloo), smoke preset, 3 steps: the checkpoint records world_size 2 and rank 0's
    full model, the CLI records the metrics 02 records; 02 on the folder (with or without metrics.json) takes the
    stored history instead of refusing a checkpoint "written by 2 process(es)"; 03's evaluation runs on it."""
    import os
    import subprocess
    import sys

    from lib import evaluate, paths, stages

    run_dir = tmp_path / "ddp"
    values = dict(steps=3, device="cpu", pretrained="none", run_dir=str(run_dir))
    env = {**os.environ, "PYTHONPATH": str(paths.REPO_ROOT), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "lib.train",
               *[a for k, v in values.items() for a in ("--set", f"{k}={v}")]]
    result = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "3 steps on 2 process(es)" in result.stdout
    state = checkpoints.load_checkpoint(checkpoints.checkpoint_path(run_dir))
    assert state["world_size"] == 2 and len(state["sampler"]) == 2 and state["finished"] and state["step"] == 3
    metrics = runs.read_metrics(run_dir)
    assert set(metrics) == TRAIN_STAGE_METRICS and metrics["train_steps"] == 3 and 0 <= metrics["pair_auroc"] <= 1
    history = pd.read_csv(run_dir / "history.csv")
    assert list(history["step"]) == [1, 2, 3]
    assert {k: metrics[k] for k in train.training_metrics(history)} == pytest.approx(train.training_metrics(history))

    settings = config.resolve("smoke", **values)
    for recorded in (True, False):  # metrics.json there (finished run), then gone (trained, never recorded)
        if not recorded:
            (run_dir / "metrics.json").unlink()
        _, again, metrics_02 = train.train_stage(settings)  # what 02_train runs
        pd.testing.assert_frame_equal(again, pd.DataFrame(state["history"]))
        assert {k: metrics_02[k] for k in TRAIN_STAGE_METRICS - {"train_seconds"}} == \
            pytest.approx({k: metrics[k] for k in TRAIN_STAGE_METRICS - {"train_seconds"}})
        assert metrics_02["train_seconds"] == metrics["train_seconds"]  # the training's, not this rerun's

    evaluation = config.resolve("smoke", run_dir=str(run_dir), device="cpu", benchmarks="glyph_printed")
    _, model, objective, merged = stages.open_trained_run(evaluation, "evaluate")  # what 03_evaluate runs
    assert all(torch.equal(v, state["model"][k]) for k, v in model.state_dict().items())
    scores, _ = evaluate.evaluate_benchmarks((model, objective), merged)
    assert 0.0 <= scores["auroc__glyph_printed"] <= 1.0


@pytest.mark.parametrize("schedule, stop_at, steps_then", [("constant", 3, 2), ("cosine", 3, 8), ("constant", None, 4)])
def test_a_resume_with_other_steps_is_refused_in_one_line(tmp_path, source, train_until_killed, schedule, stop_at,
                                                         steps_then):
    """Issue 21, cases 1-2: a run killed at step 3 of 6 (or trained to the end but never recorded) rerun with other
    steps was recorded as a finished run of the new length (fewer steps than it has, or a cosine schedule whose lr
    jumps back up). A resume continues its own run: anything else is refused, naming stored → requested."""
    settings = tiny(tmp_path, checkpoint_every=3, schedule=schedule)
    run_dir = settings.resolved_run_dir()
    if stop_at:
        train_until_killed(settings, source, at_step=stop_at)
    else:
        train.train(settings, run_dir, source)
    before = {p.name: p.read_bytes() for p in (run_dir / "params.yaml", checkpoints.checkpoint_path(run_dir))}
    with pytest.raises(ValueError) as refused:
        train.train(tiny(tmp_path, checkpoint_every=3, schedule=schedule, steps=steps_then, lr=0.02), run_dir, source)
    message = str(refused.value)
    assert "\n" not in message and f"step {stop_at or 6} of 6" in message
    assert f"steps 6 → {steps_then}" in message and "lr 0.05 → 0.02" in message and "new run_dir" in message
    assert {p.name: p.read_bytes() for p in (run_dir / "params.yaml", checkpoints.checkpoint_path(run_dir))} == before
    history = train.train(settings, run_dir, source)  # the stored settings: it resumes (or returns) its own run
    assert list(history["step"]) == [1, 2, 3, 4, 5, 6]


def test_train_seconds_are_the_trainings_not_a_reruns(tmp_path, source, train_until_killed):
    """Issue 21, case 6: metrics.json of a finished run rebuilt by rerunning 02 recorded the rerun's 0.1 s; a resumed
    run records the seconds of its parts summed."""
    settings = tiny(tmp_path, checkpoint_every=3)
    run_dir = settings.resolved_run_dir()
    train_until_killed(settings, source, at_step=3)
    part = checkpoints.load_checkpoint(checkpoints.checkpoint_path(run_dir))["train_seconds"]
    history = train.train(settings, run_dir, source)
    assert history.attrs["train_seconds"] > part > 0
    first = train.record_metrics(settings, run_dir, history, source, seconds=1e6)["train_seconds"]
    assert first == history.attrs["train_seconds"]
    (run_dir / "metrics.json").unlink()
    again = train.train(settings, run_dir, source)  # returns the stored history at once
    assert train.record_metrics(settings, run_dir, again, source, seconds=1e-3)["train_seconds"] == first

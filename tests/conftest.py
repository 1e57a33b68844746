"""Shared pytest fixtures (keep minimal)."""

from __future__ import annotations

import json
import os
import random

import numpy as np
import pandas as pd
import pytest

import torch

from lib import evaluate


def pytest_configure(config):
    """On a pytest-xdist worker (make test), torch shares the cores with the other workers instead of taking them
    all in each."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))


@pytest.fixture(autouse=True)
def _seed_global_rngs():
    """Every test starts from the same global torch / numpy / random state, whatever ran before it on its xdist worker:
    a test that draws without its own generator gets the same draws on every run (one drew an unlucky image in CI)."""
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _restore_threads():
    """A deterministic CPU run computes on one thread (lib.device.configure_cpu sets it for the process): give the
    tests after it the machine's threads back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny_image_tree(tmp_path):
    """A data_root with a PACS-like tree: pacs/<domain>/<class>/img<k>.png, 3 tiny PNGs per class and domain."""
    from PIL import Image

    from lib.datasets.real import PACS_DOMAINS, PACS_KNOWN, PACS_UNKNOWN

    rng = np.random.default_rng(0)
    for domain in PACS_DOMAINS:
        for name in PACS_KNOWN + PACS_UNKNOWN:
            folder = tmp_path / "pacs" / domain / name
            folder.mkdir(parents=True)
            for k in range(3):
                Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(folder / f"img{k}.png")
    return tmp_path


class Killed(Exception):
    """Stands in for a process killed right after a training checkpoint."""


@pytest.fixture
def train_until_killed(monkeypatch):
    """``run(settings, source, at_step)``: lib.train.train on `settings` dies right after its checkpoint of step
    `at_step` (the checkpoint is written, nothing after it); checkpointing is restored afterwards."""
    from lib import checkpoints, train

    def run(settings, source, at_step: int) -> None:
        save = checkpoints.save_checkpoint

        def save_then_die(path, state):
            save(path, state)
            if state["step"] == at_step:
                raise Killed

        monkeypatch.setattr(checkpoints, "save_checkpoint", save_then_die)
        with pytest.raises(Killed):
            train.train(settings, settings.resolved_run_dir(), source)
        monkeypatch.setattr(checkpoints, "save_checkpoint", save)

    return run


FAKE_CONFIGS = ["mse_c1", "mse_c10", "bce"]
FAKE_BENCHMARK = "glyph_printed"
# papermill's per-cell limit in the notebook tests (seconds): a hung kernel fails its test instead of the whole run
CELL_TIMEOUT = 600


def fake_scores(separation: float, seed: int) -> evaluate.BenchmarkScores:
    """60 test images of 6 classes (0-2 known), class scores that separate known from unknown by `separation`."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(6), 10)
    sims = rng.normal(0, 1, (60, 3)).astype(np.float32)
    sims[np.arange(60)[labels < 3], labels[labels < 3]] += separation
    probs = np.exp(sims) / np.exp(sims).sum(1, keepdims=True)
    return evaluate.BenchmarkScores(FAKE_BENCHMARK, probs.max(1).astype(np.float64), sims.argmax(1), sims, labels < 3,
                                    labels, 1.5, domains=np.array(["printed", "handwritten"] * 30))


@pytest.fixture
def fake_study(tmp_path):
    """A study folder `tmp_path/fake`: 3 configs x 2 seeds with metrics and histories; every run has per-image
    scores except bce seed 1 (an older run). Nothing trained: the explorer only reads run folders."""
    root = tmp_path / "fake"
    for i, config in enumerate(FAKE_CONFIGS):
        for seed in (0, 1):
            run = root / f"{config}__seed{seed}"
            run.mkdir(parents=True)
            scores = fake_scores(1.0 + i, seed)
            metrics = scores.metrics()
            (run / "metrics.json").write_text(json.dumps({
                f"auroc__{FAKE_BENCHMARK}": metrics["auroc"], f"fpr95__{FAKE_BENCHMARK}": metrics["fpr95"],
                "auroc__avg": metrics["auroc"],
                "r2": 0.1 * (i + 1) + 0.01 * seed}))
            pd.DataFrame({"step": range(5), "loss": np.linspace(1, 0.5, 5), "acc_same": 0.5, "acc_diff": 0.5,
                          "lr": 0.01}).to_csv(run / "history.csv", index=False)
            if (config, seed) != ("bce", 1):
                evaluate.save_scores(run, {FAKE_BENCHMARK: scores})
    return root

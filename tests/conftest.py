"""Shared pytest fixtures (keep minimal)."""

from __future__ import annotations

import numpy as np
import pytest


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

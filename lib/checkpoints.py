"""Checkpoint I/O of relational runs: where a run keeps its model, writing and reading it, and loading a trained run
for evaluation (`load_trained`, `load_for_eval` with the evaluation notebook's settings merged in).

A checkpoint (``<run>/checkpoints/last.pt``, written by `lib.train`) is a dict: model, optimizer, scheduler, step,
finished, rng, sampler, settings (a flat dict; older setting names are made canonical on load), history,
model_info and ``objective = {"name", "params"}``.
"""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path
from typing import Any

import torch

from lib import config, objectives, paths, runs
from lib.config import Settings
from lib.device import resolve_device
from lib.model import ReSeND

# Settings the evaluation notebooks take from the *notebook* (everything else comes from the trained run).
EVAL_FIELDS = ("study", "run_dir", "seed", "device", "num_workers", "interactive", "data_root", "benchmarks",
               "eval_batch_size", "prototypes", "prototypes_k", "r2_pairs")


def checkpoint_path(run_dir: Path | str) -> Path:
    return Path(run_dir) / "checkpoints" / "last.pt"


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write `state` to `path` atomically; a failed write names the file, its size and what to do."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    try:
        runs.atomic_write_bytes(path, buffer.getvalue())
    except OSError as error:
        raise OSError(f"could not write checkpoint {path} ({error.strerror or error}; {buffer.tell() / 1e6:.1f} MB): "
                      f"free space or fix permissions there; history.csv beside it holds the steps run") from None


def load_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint dict at `path` (settings with older names made canonical); clear error when unreadable."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)  # our own file: holds numpy RNG states
    except Exception as error:  # torch's zip reader says only "failed finding central directory"
        raise RuntimeError(f"checkpoint {path} is unreadable (truncated or corrupt: {type(error).__name__}: "
                           f"{str(error).splitlines()[0] if str(error) else ''}): to train the run again, move its "
                           f"folder {Path(path).parent.parent} away (or choose another run_dir) and rerun "
                           "02_train / lib.train") from None
    state["settings"] = config.canonical(state["settings"], str(path), say=lambda _: None)  # older setting names
    return state


def load_trained(run_dir: Path | str, device: str | torch.device = "cpu"):
    """(model in eval mode on `device`, objective, settings) of a trained run."""
    path = checkpoint_path(run_dir)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint in {Path(run_dir)}/checkpoints/last.pt: run notebooks/02_train.ipynb first")
    state = load_checkpoint(path)
    if not state.get("finished"):
        raise RuntimeError(f"{path} is an unfinished training run (step {state.get('step')} of "
                           f"{state['settings'].get('steps')}): run 02_train again on it (it resumes) before evaluating")
    settings = config.Settings(**{k: v for k, v in state["settings"].items() if k in config.FIELDS})
    objective = objectives.make(state["objective"]["name"], **state["objective"]["params"])
    net = ReSeND(out_dim=objective.out_dim, d_model=settings.d_model, n_heads=settings.n_heads,
                 n_blocks=settings.n_blocks, mlp_ratio=settings.mlp_ratio, head=settings.head,
                 head_hidden=settings.head_hidden, small_stem=settings.small_stem)
    net.load_state_dict(state["model"])
    return net.to(device).eval(), objective, settings


def check_checkpoint(run_dir: Path | str) -> Path:
    """Return ``run_dir/checkpoints/last.pt`` or raise FileNotFoundError saying how to make it."""
    path = checkpoint_path(run_dir)
    if not path.exists():
        raise FileNotFoundError(f"no trained model in {run_dir}: {path} is missing. Train it first, e.g. "
                                f"`papermill notebooks/02_train.ipynb out.ipynb -p run_dir {run_dir}`")
    return path


def merge_settings(trained: Settings, requested: Settings, run_dir: Path | str | None = None) -> Settings:
    """Settings for evaluating a trained run: the trained run's values for everything that defines the model and
    its data (architecture, objective, image_size, dataset, ...), the notebook's values for the evaluation fields
    (`EVAL_FIELDS`: benchmarks, prototypes, eval_batch_size, r2_pairs, device, data_root, ...).
    An empty notebook ``data_root`` keeps the trained one."""
    values = trained.to_dict()
    for name in EVAL_FIELDS:
        value = getattr(requested, name)
        if name == "data_root" and not value:
            continue
        values[name] = value
    values["run_dir"] = str(run_dir if run_dir is not None else requested.resolved_run_dir())
    return dataclasses.replace(trained, **values)


def find_run_dir(settings: Settings) -> Path:
    """``settings.resolved_run_dir()``; a relative path that does not exist from the working directory is taken
    from the repository root."""
    run_dir = settings.resolved_run_dir()
    if not run_dir.is_absolute() and not run_dir.exists() and (paths.REPO_ROOT / run_dir).exists():
        run_dir = paths.REPO_ROOT / run_dir
    return run_dir


def load_for_eval(run_dir: Path | str, settings: Settings):
    """(model, objective, merged settings) of a trained run, on ``settings.device``; clear error without checkpoint."""
    check_checkpoint(run_dir)
    device = resolve_device(settings)
    model, objective, trained = load_trained(run_dir, device)
    if settings.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.eval()
    return model, objective, merge_settings(trained, settings, run_dir)

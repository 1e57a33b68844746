"""The set-up shared by the stages that analyse a trained run (03_evaluate, 04_r2): find its folder, load its
model and merge the settings, record the stage's parameters."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from lib import checkpoints, data, runs
from lib.config import Settings
from lib.device import configure_cpu
from lib.objectives import Objective


def open_trained_run(settings: Settings, stage: str) -> tuple[Path, nn.Module, Objective, Settings]:
    """(run folder, model in eval mode on ``settings.device``, objective, merged settings) of the trained run that
    `settings` name (`checkpoints.find_run_dir`). The trained run's settings win for the model and its data
    (architecture, objective, image_size, dataset); `settings` win for the evaluation fields
    (`checkpoints.EVAL_FIELDS`: benchmarks, prototypes, eval_batch_size, device, data_root...). The merged settings
    are recorded as ``params_<stage>.yaml`` once the checkpoint has loaded and the evaluation fields passed their
    checks (03: the benchmarks name known ones, at least one available); a missing checkpoint raises
    FileNotFoundError (saying how to train it), a refused setting ValueError, and either records nothing."""
    configure_cpu(settings)  # one thread and the pinned float path for a deterministic CPU run
    run_dir = checkpoints.find_run_dir(settings)
    model, objective, merged = checkpoints.load_for_eval(run_dir, settings)
    if stage == "evaluate" and not data.available_benchmarks(merged.benchmarks, merged):  # unknown names raise
        raise ValueError(f"benchmarks={merged.benchmarks!r} selects no benchmark available here (the real ones "
                         "need data_root): name an embedded one or set data_root")
    runs.prepare(merged, stage)
    return run_dir, model, objective, merged

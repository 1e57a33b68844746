"""The papermill sweep: every configuration x seed of a grid runs 02 -> 03 -> 04 into its own run folder.

    python -m lib.sweep params/grids/mini.yaml [--dry-run] [--only bce,ce] [--jobs 2]

A grid YAML holds: ``study``, ``preset``, ``seeds``, ``configs`` (names of params/objectives/*.yaml),
``notebooks`` (stages, in order), ``overrides`` (flat settings for every run) and optionally
``comparisons: {benchmarks: [...], seeds: [...]}`` (06_comparisons once per benchmark x seed, after the
ReSeND runs).

A stage is done only when it succeeded: then, and only then, ``<run>/<stage>.done.json`` records a hash of its
resolved settings and of the stage before it. A rerun skips a done stage, reruns an unfinished one (a killed
sweep: training resumes from its last checkpoint) and reports, without touching it, a done stage whose settings
changed since. A failed stage leaves FAILED.txt and its partial notebook (``.failed.ipynb``); the run's later
stages wait, the other runs go on, and a retry redoes only the failed stage onwards. One sweep at a time per
study (``<study>/.sweep.lock``). ``--jobs N`` runs N run folders at once (their stages still in order), each notebook kernel on
cpu_count // N threads: on 2 cores, two single-threaded runs overlap one's kernel start-up and Python work
with the other's training. The summary (lib.summary) is rebuilt at the end from the run folders alone.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import logging
import os
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


from lib import config, pretrain, progress, reference, runs, summary
from lib.paths import NOTEBOOKS_DIR, OUTPUTS_DIR, PARAMS_DIR, REPO_ROOT, shown

GRID_KEYS = {"study", "preset", "seeds", "configs", "notebooks", "overrides", "comparisons"}
STAGES = ("02_train", "03_evaluate", "04_r2")


@dataclass
class Job:
    """One notebook stage of one run."""

    run_dir: Path
    notebook: str
    params: dict[str, Any]
    label: str = ""
    notebooks_dir: Path = NOTEBOOKS_DIR  # where `notebook`.ipynb is read from

    @property
    def output(self) -> Path:
        return self.run_dir / f"{self.notebook}.ipynb"


@dataclass
class Grid:
    study: str
    preset: str
    seeds: list[int]
    configs: list[str] = field(default_factory=list)
    notebooks: list[str] = field(default_factory=lambda: list(STAGES))
    overrides: dict[str, Any] = field(default_factory=dict)
    comparisons: dict[str, Any] = field(default_factory=dict)


def load_grid(path: Path | str) -> Grid:
    raw = config.load_yaml(path)
    unknown = sorted(set(raw) - GRID_KEYS)
    if unknown:
        raise KeyError(f"unknown grid key(s) {unknown} in {path}: valid keys are {sorted(GRID_KEYS)}")
    missing = sorted({"study", "preset", "seeds"} - set(raw))
    if missing:
        raise KeyError(f"grid {path} lacks {missing}: add them (see params/grids/mini.yaml)")
    grid = Grid(**raw)
    for name in grid.notebooks:
        if not (NOTEBOOKS_DIR / f"{name}.ipynb").exists():
            raise FileNotFoundError(f"grid {path} names notebook {name!r}, but notebooks/{name}.ipynb does not exist")
    for name in grid.configs:
        objective_values(name)  # fail before anything runs
    config.resolve(grid.preset, **(grid.overrides or {}))
    return grid


def objective_values(name: str) -> dict[str, Any]:
    path = PARAMS_DIR / "objectives" / f"{name}.yaml"
    if not path.exists():
        options = sorted(p.stem for p in (PARAMS_DIR / "objectives").glob("*.yaml"))
        raise FileNotFoundError(f"unknown config {name!r}: choose from {', '.join(options)} (params/objectives/)")
    values = config.load_yaml(path)
    config._check_keys(values, str(path))
    return values


def plan(grid: Grid) -> list[Job]:
    """Every (config, seed, stage) job of the grid, ReSeND runs first, then comparisons."""
    jobs = []
    study_dir = OUTPUTS_DIR / grid.study
    for name in grid.configs:
        for seed in grid.seeds:
            run_dir = study_dir / f"{name}__seed{seed}"
            params = {"preset": grid.preset, "study": grid.study, "config_name": name, "seed": seed,
                      "run_dir": str(run_dir), **(grid.overrides or {}), **objective_values(name)}
            config.resolve(**params)  # a bad combination fails here, not an hour in
            jobs += [Job(run_dir, nb, params, f"{name}__seed{seed}") for nb in grid.notebooks]
    comparisons = grid.comparisons or {}
    for bench in comparisons.get("benchmarks", []):
        for seed in comparisons.get("seeds", grid.seeds):
            run_dir = study_dir / f"comparisons_{bench}__seed{seed}"
            params = {"preset": grid.preset, "study": grid.study, "seed": seed, "run_dir": str(run_dir),
                      "benchmark": bench, "resend_study": grid.study, **(grid.overrides or {})}
            jobs.append(Job(run_dir, "06_comparisons", params, f"comparisons_{bench}__seed{seed}"))
    return jobs


def _silent(_: str) -> None:
    pass


def stage_hash(job: Job, upstream: str = "") -> str:
    """sha256 of what a stage's result depends on: its notebook name, its fully resolved settings and the hash of
    the stage before it in the run (so a retrained model invalidates its evaluation)."""
    settings = config.resolve(**job.params, say=_silent).to_dict()
    blob = json.dumps({"notebook": job.notebook, "settings": settings, "upstream": upstream}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def stage_marker(job: Job) -> Path:
    """``<run>/<notebook>.done.json``: written when, and only when, the stage succeeded."""
    return job.run_dir / f"{job.notebook}.done.json"


def read_marker(job: Job) -> dict[str, Any] | None:
    path = stage_marker(job)
    try:
        return json.loads(path.read_text()) if path.exists() else None
    except (OSError, json.JSONDecodeError):
        return None  # a marker cut short is no marker: the stage reruns


# jupyter_client interrupts a kernel before shutting it down, and ipykernel logs "KeyboardInterrupt caught in kernel"
# for it; the kernel's own log says nothing a sweep needs (cell errors reach papermill, not this log)
KERNEL_ARGS = ["--IPKernelApp.log_level=CRITICAL"]


class _UnknownParameterFilter(logging.Filter):
    """papermill warns about every value not in a notebook's parameters cell; the sweep's values are all checked
    settings (`config.resolve` in `plan`), which the notebook resolves itself, so the warning is noise here."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Passed unknown parameter")


def run_job(job: Job, upstream: str = "") -> tuple[str, str]:
    """Execute one stage with papermill unless it is done; returns (outcome, its hash) with outcome one of
    'done' (ran now), 'skipped' (its marker matches), 'changed' (a marker with other settings or inputs: kept,
    reported, not rerun) or 'failed' (FAILED.txt written, the partial notebook kept as ``.failed.ipynb``).

    A stage without a marker was never finished (killed, failed, or interrupted while papermill wrote its
    notebook) and runs again; training resumes from its last checkpoint.
    """
    import papermill

    digest = stage_hash(job, upstream)
    marker = read_marker(job)
    if marker is not None:
        return ("skipped" if marker.get("hash") == digest else "changed"), digest
    failed = job.run_dir / "FAILED.txt"
    job.run_dir.mkdir(parents=True, exist_ok=True)
    failed.unlink(missing_ok=True)  # a retry of a failed stage
    started = time.time()
    logging.getLogger("papermill").addFilter(_UNKNOWN_PARAMETER_FILTER)
    try:
        papermill.execute_notebook(
            str(job.notebooks_dir / f"{job.notebook}.ipynb"), str(job.output), parameters=job.params,
            kernel_name="python3", cwd=str(REPO_ROOT), progress_bar=False, log_output=False,
            extra_arguments=KERNEL_ARGS,
        )
    except Exception as error:  # papermill keeps the partial notebook at job.output
        message = f"{job.notebook} failed: {type(error).__name__}: {error}"
        failed.write_text(message + "\n\n" + traceback.format_exc())
        job.output.rename(job.output.with_suffix(".failed.ipynb")) if job.output.exists() else None
        return "failed", digest
    record = {"stage": job.notebook, "hash": digest, "upstream": upstream, "seconds": round(time.time() - started, 1),
              "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    runs.atomic_write_text(stage_marker(job), json.dumps(record, indent=2))
    return "done", digest


_UNKNOWN_PARAMETER_FILTER = _UnknownParameterFilter()


def build_backbones(jobs: list[Job]) -> None:
    """Build the source-pretrained backbones (``pretrained: source``) the pending training stages need, once and
    before the first notebook, so the pretraining shows its own progress bar here instead of inside a notebook."""
    recipes = {}
    for job in jobs:
        if job.notebook in ("02_train", "06_comparisons") and read_marker(job) is None:
            settings = config.resolve(**job.params)
            if settings.pretrained == "source":
                recipes.setdefault(pretrain.weight_path(settings), settings)
    for settings in recipes.values():
        pretrain.source_backbone(settings)


def chains(jobs: list[Job]) -> list[list[Job]]:
    """The jobs grouped by run folder, stages in plan order: a run's stages run in sequence, runs in parallel."""
    by_run: dict[Path, list[Job]] = {}
    for job in jobs:
        by_run.setdefault(job.run_dir, []).append(job)
    return list(by_run.values())


def run_chain(chain: list[Job]) -> list[tuple[str, str]]:
    """Run one run folder's stages in order; stop at the first stage that failed or whose settings changed (a
    later stage needs the earlier one). A stage that runs now first drops the markers of the stages after it, which
    were computed from its previous result. Returns ``[(stage label, outcome), ...]`` for the stages it reached."""
    results = []
    upstream = ""
    for position, job in enumerate(chain):
        if read_marker(job) is None:
            for later in chain[position + 1:]:
                stage_marker(later).unlink(missing_ok=True)
        result, upstream = run_job(job, upstream)
        results.append((f"{job.label}/{job.notebook}", result))
        if result in ("failed", "changed"):
            break
    return results


def kernel_threads(jobs: int) -> int:
    """Threads per notebook kernel when `jobs` run side by side: the machine's cores shared out (at least 1)."""
    return max(1, (os.cpu_count() or 1) // jobs)


def _worker_init(threads: int) -> None:
    # kernels inherit the worker's environment: OpenMP/MKL read these when torch starts
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(threads)


@contextmanager
def study_lock(study_dir: Path):
    """Hold ``<study>/.sweep.lock`` (an flock, released when the process ends, even when killed) for the whole
    sweep; a second sweep on the same study fails at once, naming the sweep that holds it."""
    study_dir.mkdir(parents=True, exist_ok=True)
    path = study_dir / ".sweep.lock"
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise RuntimeError(f"another sweep holds {study_dir} ({holder}): wait for it to finish, or run this grid "
                               "under another study") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}, started {time.strftime('%Y-%m-%d %H:%M:%S')}")
        handle.flush()
        try:
            yield
        finally:
            handle.seek(0)
            handle.truncate()
            fcntl.flock(handle, fcntl.LOCK_UN)


def run_grid(grid: Grid, only: list[str] | None = None, jobs: int = 1) -> dict[str, list[str]]:
    """Run the grid's pending stages (see `run_jobs`) under the study's lock, after building the backbones they
    need."""
    planned = [j for j in plan(grid) if not only or j.params.get("config_name") in only]
    with study_lock(OUTPUTS_DIR / grid.study):
        build_backbones(planned)
        outcome = run_jobs(planned, jobs, f"sweep {grid.study}")
        if grid.configs:  # the floor and ceiling every study table is read against (lib.reference)
            reference.write_reference_rows(OUTPUTS_DIR / grid.study,
                                           config.resolve(grid.preset, say=_silent, **(grid.overrides or {})))
        return outcome


def run_jobs(planned: list[Job], jobs: int = 1, desc: str = "sweep") -> dict[str, list[str]]:
    """Run `planned` stages; return ``{'done' | 'skipped' | 'failed': [run/stage labels]}``. With ``jobs > 1``,
    that many run folders at once in worker processes, each kernel on ``cpu_count // jobs`` threads; comparison
    runs start once every ReSeND run has finished (they read them)."""
    if jobs < 1:
        raise ValueError(f"jobs={jobs} must be >= 1 (the number of run folders executed at once)")
    outcome: dict[str, list[str]] = {"done": [], "skipped": [], "failed": [], "changed": []}
    resend = chains([j for j in planned if j.notebook != "06_comparisons"])
    comparisons = chains([j for j in planned if j.notebook == "06_comparisons"])
    bar = progress.bar(total=len(planned), desc=desc, unit="stage")

    def record(results: list[tuple[str, str]], chain: list[Job]) -> None:
        for label, result in results:
            outcome[result].append(label)
        bar.update(len(chain))  # stages not reached after a failure count as handled
        bar.set_postfix_str(results[-1][0], refresh=False)

    with progress.text_mode():  # the kernels' bars: text in the executed notebooks, even when this runs in Jupyter
        if jobs == 1:
            for phase in (resend, comparisons):
                for chain in phase:
                    record(run_chain(chain), chain)
        else:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor, as_completed

            with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_init,
                                     initargs=(kernel_threads(jobs),)) as pool:
                for phase in (resend, comparisons):
                    futures = {pool.submit(run_chain, chain): chain for chain in phase}
                    for future in as_completed(futures):
                        record(future.result(), futures[future])
    bar.close()
    return outcome


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("grid", help="params/grids/<name>.yaml")
    parser.add_argument("--only", default="", help="comma list of configs to run (default: all)")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    parser.add_argument("--jobs", type=int, default=1,
                        help="run folders executed at once, each kernel on cpu_count // jobs threads (default 1)")
    args = parser.parse_args(argv)
    grid = load_grid(args.grid)
    if args.dry_run:
        for job in plan(grid):
            print(f"{shown(job.run_dir)}  {job.notebook}")
        return 0
    start = time.perf_counter()
    outcome = run_grid(grid, [c for c in args.only.split(",") if c] or None, args.jobs)

    paths = summary.write_summary(OUTPUTS_DIR / grid.study, paper=grid.preset == "paper")
    minutes = (time.perf_counter() - start) / 60
    print(f"sweep {grid.study}: {len(outcome['done'])} stages run, {len(outcome['skipped'])} skipped, "
          f"{len(outcome['failed'])} failed, {len(outcome['changed'])} with changed settings in {minutes:.1f} min")
    for item in outcome["failed"]:
        print(f"  FAILED {item} (see its FAILED.txt)")
    for item in outcome["changed"]:
        print(f"  CHANGED {item}: finished with other settings or inputs; kept as it is, not rerun. To redo it, "
              "move its run folder away; to keep both, run the grid under another study")
    for path in paths:
        print(f"  wrote {shown(path)}")
    return 1 if outcome["failed"] or outcome["changed"] else 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The papermill sweep: every configuration x seed of a grid runs 02 -> 03 -> 04 into its own run folder.

    python -m lib.sweep params/grids/mini.yaml [--dry-run] [--only bce,ce] [--jobs 2]

A grid YAML holds: ``study``, ``preset``, ``seeds``, ``configs`` (names of params/objectives/*.yaml),
``notebooks`` (stages, in order), ``overrides`` (flat settings for every run) and optionally
``comparisons: {benchmarks: [...], seeds: [...]}`` (06_comparisons once per benchmark x seed, after the
ReSeND runs).

A stage is done only when it succeeded: then, and only then, ``<run>/<stage>.done.json`` records a hash of its
resolved settings and of the stage before it, and sha256s of the outputs it vouches for (`stage_outputs`). A rerun
skips a done stage whose outputs are as recorded, reruns an unfinished one (a killed sweep: training resumes from
its last checkpoint) or one whose outputs are gone, and reports as CHANGED, without touching it, a done stage whose
settings or outputs changed since (and then leaves the study's reference rows and tables as they were). The grid is
checked whole (configs, overrides, benchmark names) before anything runs, ``--dry-run`` included. SIGTERM, SIGINT
and SIGHUP stop the sweep's workers and kernels before its lock is released. A failed stage leaves FAILED.txt and its partial notebook (``.failed.ipynb``); the run's later
stages wait, the other runs go on, and a retry redoes only the failed stage onwards. One sweep at a time per
study (``<study>/.sweep.lock``). ``--jobs N`` runs N run folders at once (their stages still in order), each notebook kernel on
cpu_count // N threads: on 2 cores, two single-threaded runs overlap one's kernel start-up and Python work
with the other's training. With N visible GPUs, worker i runs its kernels on GPU i (``CUDA_VISIBLE_DEVICES``, set
before the kernel starts; `gpu_assignment`). The summary (lib.summary) is rebuilt at the end from the run folders
alone.

``--cluster local | slurm`` hands the runs to submitit instead (`Cluster`): one submitit job per run folder, its
stages 02 -> 03 -> 04 chained in it, the same markers and outcomes; the comparisons are submitted once every ReSeND
job has ended; the source backbone and the reference rows are jobs of their own (before and after the runs).
``local`` starts every run of a phase at once as subprocesses of this machine (the Slurm code path, testable
anywhere); ``slurm`` submits a job array (``--jobs N``: at most N runs at once) with ``--partition``,
``--gpus-per-job``, ``--cpus-per-job``, ``--time`` and ``--mem-gb``:

    python -m lib.sweep params/grids/paper.yaml --cluster slurm --partition gpu --gpus-per-job 1 --cpus-per-job 8 --time 720
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import logging
import os
import shutil
import signal
import threading
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import submitit
import torch

from lib import cli, config, data, pretrain, progress, reference, runs, summary
from lib.paths import NOTEBOOKS_DIR, OUTPUTS_DIR, PARAMS_DIR, REPO_ROOT, shown

CLUSTERS = ("none", "local", "slurm")  # none: this process and its --jobs workers; local / slurm: submitit
GRID_KEYS = {"study", "preset", "seeds", "pretrain_seeds", "configs", "notebooks", "overrides", "comparisons"}
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
    pretrain_seeds: list[int] = field(default_factory=list)  # source backbones (pretrain_seed); empty: the preset's one


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


DEVICES = ("cpu", "cuda")  # what --device names (auto would name no device)


def on_device(grid: Grid, device: str) -> Grid:
    """`grid` with every run on `device`, as the study ``<study>_<device>``: another device computes other bits, so
    its runs are a study of their own and never mix with (or count as changed against) the grid's own runs."""
    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r} for a sweep: choose one of {', '.join(DEVICES)}")
    return replace(grid, study=f"{grid.study}_{device}", overrides={**(grid.overrides or {}), "device": device})


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
    # with pretrain_seeds every run folder names its backbone: <config>__bb<b>__seed<k> (lib.runs.RUN_NAME)
    backbones = [(f"__bb{b}", {"pretrain_seed": b}) for b in grid.pretrain_seeds] or [("", {})]
    for name in grid.configs:
        for (tag, backbone), seed in [(b, s) for b in backbones for s in grid.seeds]:
            run_dir = study_dir / f"{name}{tag}__seed{seed}"
            params = {"preset": grid.preset, "study": grid.study, "config_name": name, "seed": seed,
                      "run_dir": str(run_dir), **(grid.overrides or {}), **backbone, **objective_values(name)}
            settings = config.resolve(**params)  # a bad combination fails here, not an hour in
            data.benchmark_names(settings.benchmarks)  # so does an unknown benchmark (03, the reference rows)
            jobs += [Job(run_dir, nb, params, run_dir.name) for nb in grid.notebooks]
    comparisons = grid.comparisons or {}
    for bench in comparisons.get("benchmarks", []):
        if bench not in data.BENCHMARKS:
            raise ValueError(f"grid comparisons name unknown benchmark {bench!r}: choose one of "
                             f"{', '.join(data.BENCHMARKS)}")
        for seed in comparisons.get("seeds", grid.seeds):
            run_dir = study_dir / f"comparisons_{bench}__seed{seed}"
            params = {"preset": grid.preset, "study": grid.study, "seed": seed, "run_dir": str(run_dir),
                      "benchmark": bench, "resend_study": grid.study, **(grid.overrides or {})}
            config.resolve(**params, say=_silent)
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


# What a stage's marker vouches for: files of its run folder (globs) and the metrics.json keys it writes (02, 03 and 04
# merge into one metrics.json, so each vouches only for its own keys and a later stage's writes leave it valid);
# any other notebook (06, a test's) vouches for every key of its metrics.json.
STAGE_OUTPUTS = {
    "02_train": (("checkpoints/last.pt",), lambda key: key.startswith(("train_", "pair_"))),
    "03_evaluate": (("scores/*.npz",), lambda key: "__" in key),
    "04_r2": ((), lambda key: key.startswith("r2")),
}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _metrics_digest(metrics: dict[str, Any], keys: list[str]) -> str:
    return hashlib.sha256(json.dumps({k: metrics[k] for k in keys}, sort_keys=True).encode()).hexdigest()


def stage_outputs(job: Job) -> dict[str, Any]:
    """What the stage's marker records of its outputs: ``files`` {path in the run folder: sha256}, ``keys`` (the
    metrics.json keys it vouches for, `STAGE_OUTPUTS`) and ``metrics_sha256`` of their values."""
    globs, mine = STAGE_OUTPUTS.get(job.notebook, ((), lambda key: True))
    files = sorted({p for pattern in globs for p in job.run_dir.glob(pattern) if p.is_file()})
    metrics = runs.read_metrics(job.run_dir)
    keys = sorted(k for k in metrics if mine(k))
    return {"files": {str(p.relative_to(job.run_dir)): _sha256(p) for p in files}, "keys": keys,
            "metrics_sha256": _metrics_digest(metrics, keys)}


def outputs_state(job: Job, marker: dict[str, Any]) -> str:
    """'kept' when every output the marker vouches for is there as it recorded it, 'missing' when one is gone (the
    stage runs again), 'changed' when one differs (reported, kept). A marker older than output hashes is kept while
    the run's metrics.json exists."""
    recorded = marker.get("outputs")
    if recorded is None:
        return "kept" if job.notebook not in STAGE_OUTPUTS or runs.is_finished(job.run_dir) else "missing"
    metrics = runs.read_metrics(job.run_dir)
    if any(not (job.run_dir / name).is_file() for name in recorded["files"]) or \
            any(key not in metrics for key in recorded["keys"]):
        return "missing"
    same = all(_sha256(job.run_dir / name) == sha for name, sha in recorded["files"].items()) and \
        _metrics_digest(metrics, recorded["keys"]) == recorded["metrics_sha256"]
    return "kept" if same else "changed"


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


def run_job(job: Job, upstream: str = "", later: list[Job] = ()) -> tuple[str, str]:
    """Execute one stage with papermill unless it is done; returns (outcome, its hash) with outcome one of
    'done' (ran now), 'skipped' (its marker matches and so do the outputs it vouches for), 'changed' (a marker with
    other settings or inputs, or outputs changed since: kept, reported, not rerun) or 'failed' (FAILED.txt written,
    the partial notebook kept as ``.failed.ipynb``).

    A stage without a marker was never finished (killed, failed, or interrupted while papermill wrote its
    notebook) and runs again; training resumes from its last checkpoint. So does a stage one of whose outputs
    (`stage_outputs`) is gone. A stage that runs drops the markers of the stages `later` in its run first: they
    were computed from its previous result.
    """
    import papermill

    digest = stage_hash(job, upstream)
    marker = read_marker(job)
    if marker is not None:
        if marker.get("hash") != digest:
            return "changed", digest
        state = outputs_state(job, marker)
        if state != "missing":
            return ("skipped" if state == "kept" else "changed"), digest
        stage_marker(job).unlink()  # an output it vouched for is gone: the stage runs again
    for stage in later:
        stage_marker(stage).unlink(missing_ok=True)
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
              "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "outputs": stage_outputs(job)}
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
        result, upstream = run_job(job, upstream, chain[position + 1:])
        results.append((f"{job.label}/{job.notebook}", result))
        if result in ("failed", "changed"):
            break
    return results


def kernel_threads(jobs: int) -> int:
    """Threads per notebook kernel when `jobs` run side by side: the machine's cores shared out (at least 1)."""
    return max(1, (os.cpu_count() or 1) // jobs)


def visible_gpus(environ: dict[str, str] | None = None) -> list[str]:
    """The GPUs this process may hand out, as CUDA_VISIBLE_DEVICES entries: that variable's list when it is set (empty:
    none), else 0 .. torch.cuda.device_count() - 1."""
    environ = os.environ if environ is None else environ
    if "CUDA_VISIBLE_DEVICES" in environ:
        return [g.strip() for g in environ["CUDA_VISIBLE_DEVICES"].split(",") if g.strip()]
    return [str(i) for i in range(torch.cuda.device_count())]


def gpu_assignment(workers: int, gpus: list[str]) -> list[str | None]:
    """The GPU of each of `workers` workers: worker i gets ``gpus[i % len(gpus)]`` (one GPU each when there are as
    many GPUs as workers; round robin when fewer); None for every worker when there is no GPU."""
    return [gpus[i % len(gpus)] if gpus else None for i in range(workers)]


def _worker_init(threads: int, gpus) -> None:
    # kernels inherit the worker's environment: OpenMP/MKL read these when torch starts, CUDA the device list
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(threads)
    gpu = gpus.get() if gpus is not None else None  # one entry of gpu_assignment per worker process
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu


def _die_with_parent() -> None:
    """Linux: this process gets SIGTERM when the process that started it ends, even by SIGKILL (PR_SET_PDEATHSIG),
    so a `kill -9` of the sweep takes its workers along (their kernels then end themselves: ipykernel exits when
    its parent goes). Elsewhere: nothing."""
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _start_worker(threads: int, gpus) -> None:
    _die_with_parent()
    _worker_init(threads, gpus)


def _chain_job(chain: list[Job], threads: int) -> list[tuple[str, str]]:
    """`run_chain` inside a submitit job: its kernels on `threads` threads and on the job's GPUs (submitit / Slurm
    set CUDA_VISIBLE_DEVICES)."""
    _worker_init(threads, None)
    return run_chain(chain)


@dataclass
class Cluster:
    """Where submitit runs the sweep's jobs: ``local`` (subprocesses of this machine, all of a phase at once) or
    ``slurm`` (sbatch; a phase's runs are one job array). Every job gets the same resources."""

    kind: str  # local | slurm
    folder: Path  # submitit's job files and logs (%j = the job id)
    partition: str = ""  # slurm partition; empty: the cluster's default
    gpus_per_job: int = 0  # GPUs of each job (local: pinned round robin over the visible GPUs)
    cpus_per_job: int = 1  # CPU cores of each job; its notebook kernels run on as many threads
    time_min: int = 240  # wall-clock limit of each job, minutes
    mem_gb: int = 0  # memory of each job; 0: the cluster's default
    parallel: int = 0  # slurm: at most this many jobs of an array at once; 0: no limit

    def __post_init__(self):
        if self.kind not in ("local", "slurm"):
            raise ValueError(f"cluster {self.kind!r} is not a submitit cluster: use local or slurm")
        for name in ("gpus_per_job", "mem_gb", "parallel"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 0")
        for name in ("cpus_per_job", "time_min"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")

    def parameters(self) -> dict[str, Any]:
        """The executor's ``update_parameters`` (submitit's names for local or Slurm)."""
        if self.kind == "local":  # the threads: `_chain_job` sets them (the local executor has no CPU setting)
            return {"timeout_min": self.time_min, "gpus_per_node": self.gpus_per_job}
        values = {"time": self.time_min, "gpus_per_node": self.gpus_per_job, "cpus_per_task": self.cpus_per_job,
                  "nodes": 1, "ntasks_per_node": 1, "job_name": "resend-sweep"}
        values.update({"partition": self.partition} if self.partition else {})
        values.update({"mem": f"{self.mem_gb}GB"} if self.mem_gb else {})
        values.update({"array_parallelism": self.parallel} if self.parallel else {})
        return values

    def executor(self) -> submitit.Executor:
        if self.kind == "slurm" and shutil.which("sbatch") is None:
            raise RuntimeError("--cluster slurm needs Slurm's sbatch on PATH: run the sweep on a Slurm login node, or "
                               "use --cluster local / --jobs N on this machine")
        folder = self.folder / "%j"
        executor = submitit.LocalExecutor(folder) if self.kind == "local" else submitit.SlurmExecutor(folder)
        executor.update_parameters(**self.parameters())
        return executor

    def call(self, fn, *args):
        """Run ``fn(*args)`` as one job and return its result (the source backbone, the reference rows)."""
        return self.executor().submit(fn, *args).result()

    def run_phase(self, phase: list[list[Job]]):
        """Submit one job per run folder of `phase` (`_chain_job`); yield ``(chain, results or the job's error)`` as
        the jobs end."""
        if not phase:
            return
        executor = self.executor()
        if self.kind == "local":  # one GPU each, as the --jobs workers get theirs
            pins = gpu_assignment(len(phase), visible_gpus()) if self.gpus_per_job == 1 else [None] * len(phase)
            submitted = []
            for chain, gpu in zip(phase, pins):
                if gpu is not None and gpu.isdigit():
                    executor.update_parameters(visible_gpus=(int(gpu),))
                submitted.append(executor.submit(_chain_job, chain, self.cpus_per_job))
        else:
            with executor.batch():  # one job array
                submitted = [executor.submit(_chain_job, chain, self.cpus_per_job) for chain in phase]
        chain_of = {job.job_id: chain for job, chain in zip(submitted, phase)}
        for job in submitit.helpers.as_completed(submitted, poll_frequency=1 if self.kind == "local" else 30):
            try:
                yield chain_of[job.job_id], job.result()
            except Exception as error:  # the job died (time limit, node lost, out of memory): no marker written
                yield chain_of[job.job_id], error


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


SWEEP_TOKEN = "RESEND_SWEEP_TOKEN"  # in the sweep's environment: every worker and kernel it starts inherits it
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class SweepInterrupted(KeyboardInterrupt):
    """The sweep got SIGTERM / SIGINT / SIGHUP: everything it started is stopped (`stop_processes`); exit status
    128 + the signal (lib.cli). A KeyboardInterrupt, so no ``except Exception`` of a stage records it as a failure."""

    def __init__(self, signum: int):
        self.exit_code = 128 + signum
        super().__init__(f"sweep interrupted by {signal.Signals(signum).name}: its workers and notebook kernels are "
                         "stopped and the stages they ran have no marker; rerun the same command to continue")


def marked_processes(name: str, value: str) -> list[int]:
    """This user's processes, other than this one and its multiprocessing resource tracker (which ends with this
    process; killed, it relaunches and complains), whose environment holds ``name=value`` (Linux /proc); the direct
    children first."""
    from multiprocessing import resource_tracker

    needle, me = f"{name}={value}".encode(), os.getpid()
    spared = {me, getattr(resource_tracker._resource_tracker, "_pid", None)}
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) in spared:
            continue
        try:
            environ = Path(entry.path, "environ").read_bytes()  # empty for a zombie: it is gone
            parent = int(Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if needle in environ.split(b"\0"):
            found.append((parent != me, int(entry.name)))
    return [pid for _, pid in sorted(found)]


def stop_processes(find, grace_s: float = 10.0) -> None:
    """SIGTERM every process `find()` returns, SIGKILL those left after `grace_s`; return once `find()` is empty
    (or 5 s after the SIGKILL)."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        deadline = time.monotonic() + wait_s
        while (pids := find()) and time.monotonic() < deadline:
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except OSError:  # gone meanwhile
                    pass
            time.sleep(0.2)
        if not pids:
            return


@contextmanager
def stopping_everything_on_signals():
    """While the block runs, SIGTERM, SIGINT and SIGHUP stop the sweep with every process it started: its ``--jobs``
    workers, their papermill kernels (which jupyter_client starts in sessions of their own, out of reach of a
    process-group kill) and their children, all found by `SWEEP_TOKEN` in their environment; then
    `SweepInterrupted` is raised, so a lock held around the block is released only once they are gone. Outside the
    main thread (no signal handlers there) it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    token, before = f"{os.getpid()}-{time.time_ns()}", os.environ.get(SWEEP_TOKEN)
    os.environ[SWEEP_TOKEN] = token

    def stop(signum, _frame):
        for sig in STOP_SIGNALS:  # a second Ctrl-C must not cut the clean-up short
            signal.signal(sig, signal.SIG_IGN)
        stop_processes(lambda: marked_processes(SWEEP_TOKEN, token))
        raise SweepInterrupted(signum)

    handlers = {sig: signal.signal(sig, stop) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        if before is None:
            os.environ.pop(SWEEP_TOKEN, None)
        else:
            os.environ[SWEEP_TOKEN] = before


def run_grid(grid: Grid, only: list[str] | None = None, jobs: int = 1, cluster: Cluster | None = None
             ) -> dict[str, list[str]]:
    """Run the grid's pending stages (see `run_jobs`) under the study's lock, after building the backbones they
    need (on the cluster, as a job of its own, when there is one); then the study's reference rows, unless a stage
    is CHANGED (the grid no longer describes the study: its records are left as they are). A signal stops
    everything the sweep started before the lock is released (`stopping_everything_on_signals`)."""
    planned = [j for j in plan(grid) if not only or j.params.get("config_name") in only]
    def call(fn, *args):  # here, or as a job of its own on the cluster (its GPU, its node)
        return cluster.call(fn, *args) if cluster else fn(*args)

    with study_lock(OUTPUTS_DIR / grid.study), stopping_everything_on_signals():
        call(build_backbones, planned)
        outcome = run_jobs(planned, jobs, f"sweep {grid.study}", cluster)
        if grid.configs and not outcome["changed"]:  # the floor and ceiling every study table is read against
            for backbone in grid.pretrain_seeds or [None]:  # one reference per backbone of the study
                values = {} if backbone is None else {"pretrain_seed": backbone}
                folder = [] if backbone is None else [reference.backbone_folder(backbone)]
                call(reference.write_reference_rows, OUTPUTS_DIR / grid.study,
                     config.resolve(grid.preset, say=_silent, **{**(grid.overrides or {}), **values}), *folder)
        return outcome


def _record_lost_job(chain: list[Job], error: Exception) -> tuple[str, str]:
    """A cluster job that ended without results: FAILED.txt in its run folder (the stage it was in has no marker,
    so a rerun redoes it); returns its (label, 'failed')."""
    first = str(error).strip().splitlines()[0] if str(error).strip() else ""
    message = (f"the cluster job of {chain[0].label} ended without a result ({type(error).__name__}: {first}): "
               "rerun the sweep to redo it; the job's log is in the study's .submitit folder")
    chain[0].run_dir.mkdir(parents=True, exist_ok=True)
    (chain[0].run_dir / "FAILED.txt").write_text(message + "\n\n" + str(error))
    return f"{chain[0].label}/{next((j.notebook for j in chain if read_marker(j) is None), chain[-1].notebook)}", "failed"


def run_jobs(planned: list[Job], jobs: int = 1, desc: str = "sweep", cluster: Cluster | None = None
             ) -> dict[str, list[str]]:
    """Run `planned` stages; return ``{'done' | 'skipped' | 'failed' | 'changed': [run/stage labels]}``. With
    ``jobs > 1``, that many run folders at once in worker processes, each kernel on ``cpu_count // jobs`` threads
    and worker i on GPU i (`gpu_assignment`); with a `cluster`, one submitit job per run folder instead. Comparison
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

    try:
        with progress.text_mode():  # the kernels' bars: text in the executed notebooks, even when this runs in Jupyter
            if cluster is not None:
                for phase in (resend, comparisons):
                    for chain, results in cluster.run_phase(phase):
                        record([_record_lost_job(chain, results)] if isinstance(results, Exception) else results, chain)
            elif jobs == 1:
                for phase in (resend, comparisons):
                    for chain in phase:
                        record(run_chain(chain), chain)
            else:
                import multiprocessing
                from concurrent.futures import ProcessPoolExecutor, as_completed

                context = multiprocessing.get_context("spawn")
                gpus = context.Queue()
                for gpu in gpu_assignment(jobs, visible_gpus()):
                    gpus.put(gpu)
                with ProcessPoolExecutor(jobs, mp_context=context, initializer=_start_worker,
                                         initargs=(kernel_threads(jobs), gpus)) as pool:
                    for phase in (resend, comparisons):
                        futures = {pool.submit(run_chain, chain): chain for chain in phase}
                        for future in as_completed(futures):
                            record(future.result(), futures[future])
    finally:  # before any error line: the bar's last state ends its own line
        bar.close()
    return outcome


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("grid", help="params/grids/<name>.yaml")
    parser.add_argument("--only", default="", help="comma list of configs to run (default: all)")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    parser.add_argument("--jobs", type=int, default=1,
                        help="run folders executed at once, each kernel on cpu_count // jobs threads and worker i on "
                             "GPU i (default 1); with --cluster slurm: at most this many jobs of an array at once")
    parser.add_argument("--device", default="", choices=DEVICES,
                        help="every run on this device, as the study <study>_<device> (default: the grid's own "
                             "device setting and study)")
    parser.add_argument("--cluster", default="none", choices=CLUSTERS,
                        help="none: this machine, --jobs workers (default); local | slurm: one submitit job per run")
    parser.add_argument("--partition", default="", help="slurm partition (default: the cluster's)")
    parser.add_argument("--gpus-per-job", type=int, default=None,
                        help="GPUs per job (slurm default 1; local default 1 when GPUs are visible, else 0)")
    parser.add_argument("--cpus-per-job", type=int, default=None,
                        help="CPU cores per job, its kernels' threads (slurm default 8; local: cpu_count // jobs)")
    parser.add_argument("--time", type=int, default=None, help="wall-clock limit per job, minutes (default 240)")
    parser.add_argument("--mem-gb", type=int, default=None, help="memory per slurm job in GB (default: the cluster's)")
    args = parser.parse_args(argv)
    cluster_given = [flag for flag, value in (("--partition", args.partition), ("--gpus-per-job", args.gpus_per_job),
                                              ("--cpus-per-job", args.cpus_per_job), ("--mem-gb", args.mem_gb),
                                              ("--time", args.time)) if value not in (None, "")]
    if args.cluster == "none" and cluster_given:
        parser.error(f"{', '.join(cluster_given)} apply to submitit jobs: add --cluster slurm (or --cluster local)")
    if args.cluster == "local" and (args.partition or args.mem_gb is not None):
        parser.error("--partition and --mem-gb are Slurm settings: use them with --cluster slurm")
    if args.device == "cuda" and not args.dry_run and args.cluster != "slurm" and not torch.cuda.is_available():
        parser.error("--device cuda, but torch sees no CUDA GPU here: drop --device (or use --cluster slurm for "
                     "a cluster's GPU nodes)")
    grid = load_grid(args.grid)
    if args.device:
        grid = on_device(grid, args.device)
    if args.dry_run:
        for job in plan(grid):
            print(f"{shown(job.run_dir)}  {job.notebook}")
        return 0
    cluster = None
    if args.cluster != "none":
        slurm = args.cluster == "slurm"
        defaults = {"gpus_per_job": int(slurm or bool(visible_gpus())),
                    "cpus_per_job": 8 if slurm else kernel_threads(args.jobs), "time_min": 240, "mem_gb": 0}
        given = {"gpus_per_job": args.gpus_per_job, "cpus_per_job": args.cpus_per_job, "time_min": args.time,
                 "mem_gb": args.mem_gb}
        cluster = Cluster(args.cluster, OUTPUTS_DIR / grid.study / ".submitit", partition=args.partition,
                          parallel=args.jobs if slurm else 0,
                          **{k: defaults[k] if v is None else v for k, v in given.items()})
    start = time.perf_counter()
    outcome = run_grid(grid, [c for c in args.only.split(",") if c] or None, args.jobs, cluster)

    # a CHANGED stage: the grid no longer describes the study, whose tables stay those of the runs it describes
    paths = [] if outcome["changed"] else summary.write_summary(OUTPUTS_DIR / grid.study, paper=grid.preset == "paper")
    minutes = (time.perf_counter() - start) / 60
    print(f"sweep {grid.study}: {len(outcome['done'])} stages run, {len(outcome['skipped'])} skipped, "
          f"{len(outcome['failed'])} failed, {len(outcome['changed'])} with changed settings in {minutes:.1f} min")
    for item in outcome["failed"]:
        print(f"  FAILED {item} (see its FAILED.txt)")
    for item in outcome["changed"]:
        print(f"  CHANGED {item}: finished with other settings or inputs, or its outputs changed since; kept as it is, not rerun. To redo it, "
              "move its run folder away; to keep both, run the grid under another study")
    if outcome["changed"]:
        print("  the study's reference rows, summary.csv, tables.md and figures are left as they were (a stage is "
              "CHANGED): rerun the unchanged grid to refresh them")
    for path in paths:
        print(f"  wrote {shown(path)}")
    return 1 if outcome["failed"] or outcome["changed"] else 0


if __name__ == "__main__":
    raise SystemExit(cli.run(main, prog="lib.sweep"))

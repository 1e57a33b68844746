"""Run folders: ``outputs/<study>/<config>__seed<k>/`` with params, env, metrics, history, figures, checkpoints.

A finished run (one with ``metrics.json``) is never overwritten: writers merge into it, and
`claim_run_dir` refuses to start a fresh training run over a finished one. `collect` reads a study's finished runs
into one table (what summaries, 04 and the comparisons read).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from lib import objectives
from lib.config import Settings
from lib.device import cpu_paths
from lib.paths import REPO_ROOT


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write via a temporary file + rename, so a crash never leaves a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


@contextlib.contextmanager
def exclusive(path: Path):
    """Hold an exclusive lock on ``<path>.lock`` (flock, released when the process dies): a second process asking
    for the same cached file waits, then reuses what the first one wrote."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def prepare(settings: Settings, stage: str) -> Path:
    """Create the run folder and record the stage's settings (`write_params`); return the folder. Call it once the
    stage's checks have passed (training records its own, inside `lib.train.train`, after its checks)."""
    run_dir = settings.resolved_run_dir()
    run_dir.mkdir(parents=True, exist_ok=True)
    write_params(run_dir, settings, stage)
    return run_dir


def write_params(run_dir: Path, settings: Settings, stage: str) -> None:
    """Write ``params.yaml`` (training) or ``params_<stage>.yaml`` and refresh ``env.json``."""
    name = "params.yaml" if stage == "train" else f"params_{stage}.yaml"
    atomic_write_text(Path(run_dir) / name, yaml.safe_dump(settings.to_dict(), sort_keys=False))
    update_env(run_dir, {})


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return out.stdout.strip() + ("+dirty" if dirty else "") if out.returncode == 0 else "unknown"
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def cpu_model(cpuinfo: Path | str = "/proc/cpuinfo") -> str:
    """The CPU that computed, as ``<vendor> <model name> (family F model M)`` from the first processor of
    `cpuinfo` (Linux); elsewhere what `platform` knows. A run records which CPU it ran on: seeded CPU runs are
    bit-identical across CPUs only on the pinned path (README "Across CPU vendors")."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return platform.processor() or platform.machine()
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip() and fields:
            break  # the first processor's block is enough
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip(), value.strip())
    name = " ".join(fields[k] for k in ("vendor_id", "model name") if fields.get(k))
    if "cpu family" in fields:
        name += f" (family {fields['cpu family']} model {fields.get('model', '?')})"
    return name or platform.processor() or platform.machine()


def environment() -> dict[str, Any]:
    import torch
    import torchvision

    cuda = torch.cuda.is_available()
    return {
        "commit": git_commit(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "cuda_available": cuda,
        "gpu": torch.cuda.get_device_name(0) if cuda else "",
        "gpu_count": torch.cuda.device_count() if cuda else 0,
        "cpu_threads": torch.get_num_threads(),
        "cpu_paths": cpu_paths(),  # avx2-mkl-zen (pinned: the same bits on x86-64 AVX2 CPUs) | native (lib.device)
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu": cpu_model(),
    }


def read_env(run_dir: Path) -> dict[str, Any]:
    """The run's env.json ({} when it has none)."""
    path = Path(run_dir) / "env.json"
    return json.loads(path.read_text()) if path.exists() else {}


def update_env(run_dir: Path, extra: dict[str, Any]) -> dict[str, Any]:
    """Merge `extra` (e.g. ``{"pretrained": "random init"}``) into ``env.json``."""
    env = read_env(run_dir)
    env.update(environment())
    env.update(extra)
    atomic_write_text(Path(run_dir) / "env.json", json.dumps(env, indent=2, sort_keys=True))
    return env


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return float(value)
    return value


def read_metrics(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / "metrics.json"
    return json.loads(path.read_text()) if path.exists() else {}


def write_metrics(run_dir: Path, metrics: dict[str, Any]) -> dict[str, Any]:
    """Merge flat snake_case metrics (plain floats) into ``metrics.json``; return the merged dict."""
    bad = [k for k in metrics if not k.replace("__", "_").replace("_", "").replace(".", "").isalnum() or k != k.lower()]
    if bad:
        raise ValueError(f"metric keys must be flat snake_case, got {bad}")
    merged = read_metrics(run_dir)
    merged.update({k: _plain(v) for k, v in metrics.items()})
    atomic_write_text(Path(run_dir) / "metrics.json", json.dumps(merged, indent=2, sort_keys=True))
    return merged


def save_figure(fig, run_dir: Path, name: str) -> Path:
    """Save a matplotlib Figure as ``figures/<name>.png`` (name like ``02_learning_curves``)."""
    path = Path(run_dir) / "figures" / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


def is_finished(run_dir: Path) -> bool:
    return (Path(run_dir) / "metrics.json").exists()


RUN_NAME = re.compile(r"^(?P<config>.+?)(?:__bb(?P<backbone>\d+))?__seed(?P<seed>\d+)$")  # <config>[__bb<b>]__seed<k>


def collect(study_dir: Path) -> pd.DataFrame:
    """One row per finished ReSeND run folder of a study (``<config>__seed<k>`` with metrics.json): config, seed,
    metrics, train_regime and split_own / split_derived (comma lists of the real benchmarks evaluated on those
    lists, from env.json); rows in the table order of the study's configurations (lib.objectives.CONFIGS), then by name and seed."""
    rows = []
    for run_dir in sorted(Path(study_dir).iterdir()) if Path(study_dir).exists() else []:
        match = RUN_NAME.match(run_dir.name)
        if not match or run_dir.name.startswith("comparisons_") or not is_finished(run_dir):
            continue
        metrics = read_metrics(run_dir)
        env = read_env(run_dir)
        splits = env.get("splits", {})  # real benchmark -> paper | own | derived (lib.evaluate records it)
        rows.append({"config": match["config"], "backbone": int(match["backbone"] or 0), "seed": int(match["seed"]),
                     "run": run_dir.name, **metrics,
                     "train_regime": env.get("train_regime", ""),
                     **{f"split_{origin}": ",".join(sorted(n for n, o in splits.items() if o == origin))
                        for origin in ("own", "derived")}})
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    order = {name: i for i, name in enumerate(objectives.CONFIGS)}
    df["_order"] = df["config"].map(lambda c: order.get(c, len(order)))
    return df.sort_values(["_order", "config", "backbone", "seed"]).drop(columns="_order").reset_index(drop=True)

"""Repository paths, resolved from this file so notebooks work from any working directory."""

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PARAMS_DIR = REPO_ROOT / "params"
OUTPUTS_DIR = Path(os.environ.get("RESEND_OUTPUTS") or REPO_ROOT / "outputs")  # run folders; the variable moves them (scratch disk, tests)
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
CACHE_DIR = REPO_ROOT / ".cache"  # rendered datasets (npz), keyed by their recipe
SPLITS_DIR = REPO_ROOT / "lib" / "splits"  # shipped split lists of the real benchmarks


def shown(path: Path) -> str:
    """`path` relative to the repository when it lies inside it (shorter messages), else as it is."""
    path = Path(path)
    return str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path)

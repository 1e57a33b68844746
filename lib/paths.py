"""Repository paths, resolved from this file so notebooks work from any working directory."""

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PARAMS_DIR = REPO_ROOT / "params"
OUTPUTS_DIR = Path(os.environ.get("RESEND_OUTPUTS") or REPO_ROOT / "outputs")  # run folders; the variable moves them (scratch disk, tests)
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
CACHE_DIR = REPO_ROOT / ".cache"  # rendered datasets (npz), keyed by their recipe
SPLITS_DIR = REPO_ROOT / "lib" / "splits"  # shipped split lists of the real benchmarks

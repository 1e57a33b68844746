"""make setup fails loudly: a failing step stops it, and no stamp marks a half-installed venv as ready."""

import subprocess

import pytest

from lib.paths import REPO_ROOT


@pytest.mark.parametrize("failing", ["-r", "-e"])  # the requirements install, then the editable install of lib
def test_a_failing_install_step_fails_make_and_leaves_no_stamp(tmp_path, failing):
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    fake = venv / "bin" / "python"  # a python whose pip fails on one step, as pip does without setuptools
    fake.write_text(f'#!/bin/sh\ncase "$*" in *"install"*"{failing} "*) echo "ERROR: step {failing} broke" >&2; exit 1;; esac\n'
                    'exit 0\n')
    fake.chmod(0o755)
    result = subprocess.run(["make", "--no-print-directory", f"VENV={venv}", f"{venv}/.installed"], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0, result.stdout
    assert f"ERROR: step {failing} broke" in result.stdout + result.stderr
    assert not (venv / ".installed").exists()

"""The command-line tools' error contract (lib.cli): a refusal is one line on stderr and a non-zero exit; the
traceback only with --debug or RESEND_DEBUG=1."""

import os
import subprocess
import sys

import pytest

from lib import cli, paths, pretrain, reference, summary, sweep, train
from lib.splits import resend

REFUSALS = [  # (tool, argv, what the line says)
    (train, ["--set", "lr=-1"], "setting lr=-1.0 must be > 0"),
    (sweep, ["/nonexistent/grid.yaml"], "/nonexistent/grid.yaml does not exist"),
    (reference, ["/tmp/study", "--set", "nosuch=1"], "unknown setting(s) ['nosuch']"),
    (resend, ["/nonexistent/txt_lists"], "/nonexistent/txt_lists is not a folder"),
    (summary, ["/nonexistent/study"], "no study folder /nonexistent/study"),
    (pretrain, ["--set", "pretrained=source", "--set", "pretrain_epochs=0"], "needs pretrain_epochs >= 1"),
]


@pytest.mark.parametrize("tool, argv, said", REFUSALS, ids=[t.__name__ for t, _, _ in REFUSALS])
def test_every_tool_refuses_in_one_line(tool, argv, said, capsys):
    assert cli.run(tool.main, argv, prog=tool.__name__) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"{tool.__name__}: error: ") and said in err, err


def test_the_command_line_says_one_line_and_debug_shows_the_traceback(monkeypatch):
    """Issue 21: every refusal was the last line of a 16-line traceback."""
    command = [sys.executable, "-m", "lib.train", "--set", "lr=-1"]
    env = {**os.environ, "PYTHONPATH": str(paths.REPO_ROOT), "RESEND_DEBUG": ""}
    plain = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert plain.returncode == 1 and plain.stdout == ""
    assert plain.stderr == "lib.train: error: setting lr=-1.0 must be > 0: fix it in the YAML or the -p flag\n"
    with pytest.raises(ValueError, match=r"^setting lr=-1.0 must be > 0"):  # --debug: the exception, traceback and all
        cli.run(train.main, ["--set", "lr=-1", "--debug"], prog="lib.train")
    monkeypatch.setenv("RESEND_DEBUG", "1")
    with pytest.raises(ValueError, match=r"^setting lr=-1.0 must be > 0"):
        cli.run(train.main, ["--set", "lr=-1"], prog="lib.train")


def test_one_line_joins_lines_and_drops_keyerror_quotes():
    assert cli.one_line(KeyError("unknown grid key(s)")) == "unknown grid key(s)"
    assert cli.one_line(ValueError("first\n  second\n")) == "first second"
    assert cli.one_line(RuntimeError()) == "RuntimeError"

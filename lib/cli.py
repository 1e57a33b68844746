"""The command-line tools' error contract: a refusal or a failure is ONE line on stderr and a non-zero exit.

    if __name__ == "__main__":
        raise SystemExit(cli.run(main))

`run` calls ``main(argv)`` and turns any exception into ``<tool>: error: <message>`` (the message's lines joined), exit
status 1 (an exception with an ``exit_code`` attribute sets its own: an interrupted sweep exits 128 + the signal).
``--debug`` on the command line (removed before `main` sees it) or ``RESEND_DEBUG=1`` shows the full traceback
instead. argparse's own usage errors keep their exit status 2.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Callable

DEBUG_FLAG = "--debug"
DEBUG_ENV = "RESEND_DEBUG"


def one_line(error: BaseException) -> str:
    """The message of `error` on one line (KeyError's quotes dropped; an empty message names the exception type)."""
    text = error.args[0] if isinstance(error, KeyError) and len(error.args) == 1 else str(error)
    text = " ".join(part.strip() for part in str(text).splitlines() if part.strip())
    return text or type(error).__name__


def debugging(argv: list[str]) -> bool:
    return DEBUG_FLAG in argv or os.environ.get(DEBUG_ENV, "") not in ("", "0")


def run(main: Callable[[list[str]], int | None], argv: list[str] | None = None, prog: str | None = None) -> int:
    """Exit status of ``main(argv)`` (None = 0); any exception becomes one line on stderr (see the module doc)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = debugging(argv)
    argv = [a for a in argv if a != DEBUG_FLAG]
    prog = prog or Path(sys.argv[0]).stem or "lib"
    try:
        return int(main(argv) or 0)
    except SystemExit:
        raise
    except BaseException as error:  # KeyboardInterrupt too: one line, not a traceback through papermill
        if debug:
            raise
        print(f"{prog}: error: {one_line(error)}", file=sys.stderr)
        return int(getattr(error, "exit_code", 130 if isinstance(error, KeyboardInterrupt) else 1))

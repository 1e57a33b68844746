"""Progress bars: widgets in an interactive Jupyter frontend, plain text everywhere else (terminals, papermill,
nbval), so an executed notebook keeps a finished bar ("100%| 400/400") instead of a frozen widget ("0% 0/400").

The choice (`widgets_wanted`): ``RESEND_PROGRESS=text`` or ``=widget`` decides; otherwise (``auto``) widgets only in
an IPython kernel that a Jupyter server started (JupyterLab / Notebook give their kernels ``JPY_SESSION_NAME``;
VS Code ``VSCODE_PID``) — papermill and nbval start their kernels without either. The sweep sets ``text`` for
the kernels it starts (`text_mode`), which also covers a sweep launched from a notebook cell.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager

from tqdm import std

MODE_VARIABLE = "RESEND_PROGRESS"  # text | widget | auto (default)
FRONTEND_VARIABLES = ("JPY_SESSION_NAME", "VSCODE_PID")  # set in the kernels of an interactive frontend


def _in_kernel() -> bool:
    shell = sys.modules["IPython"].get_ipython() if "IPython" in sys.modules else None
    return type(shell).__name__ == "ZMQInteractiveShell"


def widgets_wanted() -> bool:
    """True when bars should be ipywidgets (see the module docstring), False for text bars."""
    mode = os.environ.get(MODE_VARIABLE, "auto").strip().lower() or "auto"
    if mode not in ("text", "widget", "auto"):
        raise ValueError(f"{MODE_VARIABLE}={mode!r}: text | widget | auto")
    if mode != "auto":
        return mode == "widget"
    return _in_kernel() and any(os.environ.get(name) for name in FRONTEND_VARIABLES)


def tqdm_class() -> type:
    """tqdm.notebook.tqdm (widgets) or tqdm.std.tqdm (text) per `widgets_wanted`; text when ipywidgets is missing."""
    if widgets_wanted():
        try:
            import ipywidgets  # noqa: F401 (tqdm.notebook needs it)
            from tqdm.notebook import tqdm as notebook_tqdm
        except ImportError:
            return std.tqdm
        return notebook_tqdm
    return std.tqdm


def bar(iterable=None, **kwargs):
    """A tqdm bar (the class of `tqdm_class`): ``bar(items, desc=...)`` or ``bar(total=n, desc=...)``."""
    return tqdm_class()(iterable, **kwargs)


def each(items, bar, label=None):
    """Yield `items`, advancing `bar` by one once the loop body of each is done; with `label(item)`, the bar's
    postfix names the item being worked on."""
    for item in items:
        if label is not None:
            bar.set_postfix_str(label(item), refresh=False)
        yield item
        bar.update(1)


@contextmanager
def text_mode():
    """Within the block (and in the processes and kernels started in it) every bar is text; restored after."""
    before = os.environ.get(MODE_VARIABLE)
    os.environ[MODE_VARIABLE] = "text"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(MODE_VARIABLE, None)
        else:
            os.environ[MODE_VARIABLE] = before

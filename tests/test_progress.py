"""Progress bars: text under papermill / nbval / terminals (an executed notebook keeps a finished bar), widgets only
in a kernel of an interactive frontend (lib/progress.py)."""

import io

import nbformat
import pytest
from tqdm import std

from conftest import CELL_TIMEOUT
from lib import progress
from lib.paths import REPO_ROOT


class ZMQInteractiveShell:  # the class name ipykernel's shell has
    pass


@pytest.fixture
def in_kernel(monkeypatch):
    """The process looks like an IPython kernel (what tqdm.auto would draw widgets in)."""
    import IPython

    shell = ZMQInteractiveShell()
    monkeypatch.setattr(IPython, "get_ipython", lambda: shell)
    for name in (progress.MODE_VARIABLE, *progress.FRONTEND_VARIABLES):
        monkeypatch.delenv(name, raising=False)


def test_a_kernel_started_by_papermill_gets_text_bars(in_kernel):
    # papermill / nbval start their kernels through jupyter_client: no JPY_SESSION_NAME, no VSCODE_PID
    assert not progress.widgets_wanted()
    assert progress.tqdm_class() is std.tqdm


def test_a_jupyterlab_kernel_gets_widgets(in_kernel, monkeypatch):
    monkeypatch.setenv("JPY_SESSION_NAME", "notebooks/03_evaluate.ipynb")  # what jupyter_server gives its kernels
    assert progress.widgets_wanted()
    from tqdm.notebook import tqdm as notebook_tqdm

    assert progress.tqdm_class() is notebook_tqdm


def test_outside_a_kernel_bars_are_text_even_under_a_jupyter_server(monkeypatch):
    monkeypatch.delenv(progress.MODE_VARIABLE, raising=False)
    monkeypatch.setenv("JPY_SESSION_NAME", "x.ipynb")  # e.g. `!python -m lib.sweep` from a notebook cell
    import IPython

    monkeypatch.setattr(IPython, "get_ipython", lambda: None)  # IPython loaded, but this is no kernel
    assert not progress.widgets_wanted()


def test_the_variable_decides_and_text_mode_restores_it(in_kernel, monkeypatch):
    monkeypatch.setenv("JPY_SESSION_NAME", "x.ipynb")
    monkeypatch.setenv(progress.MODE_VARIABLE, "text")
    assert not progress.widgets_wanted()
    monkeypatch.setenv(progress.MODE_VARIABLE, "widget")
    assert progress.widgets_wanted()
    with progress.text_mode():
        assert not progress.widgets_wanted()
    assert progress.widgets_wanted()  # "widget" again after the block
    monkeypatch.setenv(progress.MODE_VARIABLE, "fancy")
    with pytest.raises(ValueError, match="text | widget | auto"):
        progress.widgets_wanted()


def test_each_advances_the_bar_once_a_body_is_done():
    bar = progress.bar(total=3, file=io.StringIO())
    seen = []
    for item in progress.each("abc", bar, label=str.upper):
        seen.append((item, bar.n))
    assert seen == [("a", 0), ("b", 1), ("c", 2)] and bar.n == 3


def bar_notebook(path):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "from lib import progress\n"
        "total = sum(1 for _ in progress.bar(range(40), desc='demo bar'))\n"
        "assert total == 40")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def outputs_of(path):
    nb = nbformat.read(path, as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    text = "".join(o.get("text", "") for o in outputs)
    widgets = [o for o in outputs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    return text, widgets


@pytest.mark.notebook
def test_an_executed_notebook_keeps_a_finished_text_bar(tmp_path, monkeypatch):
    """papermill as the sweep runs it, from inside a JupyterLab session (a kernel there would draw widgets): the
    executed notebook holds the finished text bar and no widget; the same kernel without the sweep's text mode
    draws a widget (the control that shows the check can fail)."""
    import papermill

    monkeypatch.delenv(progress.MODE_VARIABLE, raising=False)
    monkeypatch.setenv("JPY_SESSION_NAME", "notebooks/x.ipynb")  # inherited by the kernels papermill starts
    source = bar_notebook(tmp_path / "bar.ipynb")
    with progress.text_mode():
        papermill.execute_notebook(str(source), str(tmp_path / "text.ipynb"), kernel_name="python3",
                                   cwd=str(REPO_ROOT), progress_bar=False, execution_timeout=CELL_TIMEOUT)
    text, widgets = outputs_of(tmp_path / "text.ipynb")
    assert "demo bar: 100%" in text and "40/40" in text and not widgets
    papermill.execute_notebook(str(source), str(tmp_path / "widget.ipynb"), kernel_name="python3",
                               cwd=str(REPO_ROOT), progress_bar=False, execution_timeout=CELL_TIMEOUT)
    text, widgets = outputs_of(tmp_path / "widget.ipynb")
    assert widgets and "demo bar: 100%" not in text

"""07_explore in a real browser: JupyterLab serving a copy of the notebook (interactive=True, on a fake study),
headless Chromium driven by selenium runs it, changes the config dropdown, and the figure in the widget changes
with no error in the notebook or the browser console.

Needs selenium (requirements.txt), Debian's `chromium` and `chromium-driver` (`make test-tools` installs them); where
they are missing it is skipped, except under CI (``CI`` set), where a missing tool fails it. Run it alone:
``pytest -m browser tests/test_browser.py``.
"""

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import nbformat
import pytest

from conftest import FAKE_BENCHMARK
from lib.paths import NOTEBOOKS_DIR, REPO_ROOT

pytestmark = pytest.mark.browser
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
TOKEN = "explorer-test"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def lab(fake_study, tmp_path):
    """(url of the notebook, its path): JupyterLab on a folder holding 07 with interactive=True on the fake study."""
    if not (CHROMIUM and CHROMEDRIVER):
        why = "needs Debian's chromium and chromium-driver: run make test-tools"
        pytest.fail(f"CI runs the browser test: {why}") if os.environ.get("CI") else pytest.skip(why)
    folder = tmp_path / "lab"
    folder.mkdir()
    nb = nbformat.read(NOTEBOOKS_DIR / "07_explore.ipynb", as_version=4)
    nb.cells[1].source = (f'study = "fake"\nconfig_name = "mse_c1"\nseed = 0\nbenchmark = "{FAKE_BENCHMARK}"\n'
                          "interactive = True")
    nbformat.write(nb, folder / "07_explore.ipynb")
    port = free_port()
    env = {**os.environ, "RESEND_OUTPUTS": str(fake_study.parent), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
           "JUPYTER_CONFIG_DIR": str(tmp_path / "jupyter_config"), "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime")}
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--allow-root", f"--port={port}",
         "--ServerApp.ip=127.0.0.1", f"--IdentityProvider.token={TOKEN}", f"--ServerApp.root_dir={folder}",
         "--LabApp.expose_app_in_browser=True"],
        env=env, stdout=subprocess.DEVNULL, stderr=open(tmp_path / "lab.log", "wb"))
    try:
        deadline = time.time() + 90
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token={TOKEN}", timeout=2)
                break
            except OSError:
                if time.time() > deadline or server.poll() is not None:
                    raise RuntimeError((tmp_path / "lab.log").read_text()[-3000:])
                time.sleep(1)
        yield f"http://127.0.0.1:{port}/lab/tree/07_explore.ipynb?token={TOKEN}", folder / "07_explore.ipynb"
    finally:
        server.terminate()
        server.wait(30)


def widget_images(driver) -> list[str]:
    """The src of every image inside the explorer's Output widget (data: URIs of the PNGs)."""
    return driver.execute_script(
        "return [...document.querySelectorAll('.widget-output img')].map(i => i.src)")


def test_changing_the_config_redraws_the_figures_without_an_error(lab):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    url, notebook = lab
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1600,1200"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        run_all_then_pick_another_config(driver, url)
    except Exception:
        driver.save_screenshot(str(notebook.parent / "failure.png"))  # what the page showed, next to the notebook
        raise
    finally:
        driver.quit()


def run_all_then_pick_another_config(driver, url):
    from selenium.webdriver.support.ui import Select, WebDriverWait

    driver.get(url)
    wait = WebDriverWait(driver, 120, poll_frequency=0.5)
    wait.until(lambda d: d.execute_script(  # the notebook open and its kernel started
        "const app = window.jupyterapp; const w = app && app.shell.currentWidget;"
        "return !!(w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel"
        " && w.sessionContext.session.kernel.status === 'idle')"))
    driver.execute_script("window.jupyterapp.commands.execute('notebook:run-all-cells')")
    wait.until(lambda d: len(widget_images(d)) >= 5)  # roc, histogram, per-class, learning curves, scatter
    before = widget_images(driver)
    dropdown = wait.until(lambda d: [s for s in d.find_elements("css selector", ".widget-dropdown") if "config" in s.text])
    Select(dropdown[0].find_element("css selector", "select")).select_by_visible_text("mse_c10")
    wait.until(lambda d: len(widget_images(d)) >= 5 and widget_images(d) != before)
    after = widget_images(driver)
    assert len(after) == len(before) and after[0] != before[0]  # the ROC overlay now highlights another config
    errors = driver.find_elements("css selector", '[data-mime-type="application/vnd.jupyter.stderr"]')
    assert not [e.text for e in errors if "Traceback" in e.text or "Error" in e.text]
    console = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
    assert not console, console

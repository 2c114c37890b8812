"""The attention explorer in a real browser, as a student meets it.

Starts JupyterLab on 127.0.0.1 (fresh settings, runtime and data folders, fast mode), drives
Debian's Chromium with Playwright, opens notebooks/09_inspecting_attention.ipynb, runs every cell
from the Run menu, moves the first explorer's query slider and then its γ slider and checks that
the overlay picture changes each time, and that the browser console shows no widget errors. A
screenshot is saved under the test's tmp_path (its path is printed).

    pytest tests/test_browser.py -s          # just this test, with its report
    pytest -m "not browser"                  # everything else

JupyterLab runs with autosave off, so the notebook in the repository is never written; the test
checks that too.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = "notebooks/09_inspecting_attention.ipynb"
CHROMIUM = Path("/usr/bin/chromium")
# Chromium runs as root here, offline: no sandbox, and no background requests that would flood a
# closed network (Playwright's own browser download cannot work offline, so we use Debian's).
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip

SERVER_START_S = 90  # JupyterLab's first start on a busy 2-core machine
RUN_ALL_S = 240  # every cell of the notebook, in fast mode
REDRAW_S = 30  # the explorer's answer to a slider move

# JupyterLab user settings for the test (a temporary folder, so nothing of the user's leaks in):
# never autosave (the committed notebook must stay without outputs), keep every cell in the DOM,
# and no news or update checks (the network is closed).
LAB_SETTINGS = {
    "@jupyterlab/docmanager-extension:plugin": {"autosave": False},
    "@jupyterlab/notebook-extension:tracker": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension:notification": {"fetchNews": "false", "checkForUpdates": False},
}

# Console messages that mean a widget failed: the manager's own errors, and anything naming
# widgets. "Failed to load resource" alone is a missing image (the Colab badge offline).
WIDGET_ERROR = re.compile(
    r"widget|Error displaying|Failed to (create|render|load (model|widget|class|module))|"
    r"Could not (create|find|render)|Class \w+ not found|Model not found",
    re.IGNORECASE,
)

pytestmark = [pytest.mark.browser, pytest.mark.timeout(420)]


# ---------------------------------------------------------------------------------------------
# JupyterLab
# ---------------------------------------------------------------------------------------------


@dataclass
class Lab:
    url: str  # http://127.0.0.1:PORT
    token: str
    log_path: Path

    def api(self, path: str, method: str = "GET") -> object:
        request = urllib.request.Request(
            f"{self.url}{path}", method=method, headers={"Authorization": f"token {self.token}"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read()
        return json.loads(body) if body else None

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _lab_environment(home: Path) -> dict[str, str]:
    """The server's environment: fast mode, and every Jupyter folder in `home`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "IPYTHON"))}
    env.pop("MPLBACKEND", None)  # the kernel draws inline, as a student's does
    # Chromium, the server and the kernel share 2 cores: a kernel with one thread per core would
    # fight them (OpenMP threads spin while they wait) and run the notebook several times slower.
    env.setdefault("OMP_NUM_THREADS", "1")
    env.update(
        SAGAN_EDU_FAST="1",
        JUPYTER_CONFIG_DIR=str(home / "config"),
        JUPYTER_DATA_DIR=str(home / "data"),
        JUPYTER_RUNTIME_DIR=str(home / "runtime"),
        JUPYTERLAB_SETTINGS_DIR=str(home / "settings"),
        JUPYTERLAB_WORKSPACES_DIR=str(home / "workspaces"),
        IPYTHONDIR=str(home / "ipython"),
    )
    for plugin, settings in LAB_SETTINGS.items():
        package, name = plugin.split(":")  # stored as <package>/<plugin>.jupyterlab-settings
        path = home / "settings" / package / f"{name}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(settings))
    return env


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> Iterator[Lab]:
    """JupyterLab on a free localhost port with a token; stopped (kernels too) afterwards."""
    home = tmp_path_factory.mktemp("jupyter")
    port, token = _free_port(), secrets.token_hex(16)
    lab = Lab(f"http://127.0.0.1:{port}", token, home / "server.log")
    command = [
        sys.executable, "-m", "jupyter", "lab", "--no-browser", "--allow-root",
        "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={ROOT}",
        "--ServerApp.terminals_enabled=False", "--LabApp.extension_manager=readonly",
    ]  # fmt: skip
    with open(lab.log_path, "w") as log:
        # Its own process group, so teardown can stop the server and anything it started.
        server = subprocess.Popen(
            command, cwd=ROOT, env=_lab_environment(home), stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        _wait_for_server(lab, server)
        yield lab
    finally:
        _stop_server(lab, server)


def _wait_for_server(lab: Lab, server: subprocess.Popen) -> None:
    deadline = time.monotonic() + SERVER_START_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"JupyterLab exited with code {server.returncode}:\n{lab.log_tail()}")
        try:
            lab.api("/api/status")
            return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"JupyterLab did not answer within {SERVER_START_S} s:\n{lab.log_tail()}")


def _stop_server(lab: Lab, server: subprocess.Popen) -> None:
    """Shut down the kernels (they run in sessions of their own), then the server."""
    if server.poll() is None:
        try:
            for kernel in lab.api("/api/kernels"):
                lab.api(f"/api/kernels/{kernel['id']}", method="DELETE")
        except OSError as err:
            print(f"could not shut down the kernels through the API: {err}")
    for sig, wait_s in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        if server.poll() is not None:
            break
        try:
            os.killpg(server.pid, sig)
        except ProcessLookupError:
            break
        try:
            server.wait(wait_s)
        except subprocess.TimeoutExpired:
            continue


# ---------------------------------------------------------------------------------------------
# The browser
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def page(tmp_path):
    """A Chromium page that records console errors; closed afterwards."""
    if not CHROMIUM.exists():
        pytest.skip(
            f"{CHROMIUM} is missing: install Debian's chromium package (`make chromium`, "
            "which `make test` runs) for the browser test"
        )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.console_log = []  # (type, text, url) of every message, for the report
            page.on(
                "console",
                lambda m: page.console_log.append((m.type, m.text, m.location.get("url", ""))),
            )
            page.on("pageerror", lambda err: page.console_log.append(("pageerror", str(err), "")))
            page.set_default_timeout(60_000)
            yield page
        finally:
            browser.close()


def _widget_errors(console_log: list[tuple[str, str, str]]) -> list[str]:
    errors = []
    for kind, text, url in console_log:
        if kind not in ("error", "pageerror"):
            continue
        if WIDGET_ERROR.search(text) or ("Failed to load resource" in text and "widget" in url):
            errors.append(f"{kind}: {text} ({url})")
    return errors


def _console_errors(console_log: list[tuple[str, str, str]]) -> str:
    lines = [f"  {kind}: {text} ({url})" for kind, text, url in console_log if kind != "debug"]
    return "\n".join(lines) or "  (none)"


# JavaScript run in the page. Every code cell's prompt: "[3]:" done, "[*]:" running or queued,
# "[ ]:" not run.
PROMPTS_JS = "[...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')]" \
    ".map(p => p.textContent.trim())"  # fmt: skip
# The picture's bytes, hashed: the <img> shows a blob: URL, new on every update, so compare data.
IMAGE_DIGEST_JS = """async (img) => {
    const bytes = await (await fetch(img.src)).arrayBuffer();
    const digest = await crypto.subtle.digest("SHA-256", bytes);
    return [...new Uint8Array(digest)].map(b => b.toString(16).padStart(2, "0")).join("");
}"""


def _wait_for_kernel_idle(page) -> None:
    """Wait until the status bar reads "Python 3 (ipykernel) | Idle": started and connected.

    (The toolbar's circle reads idle before any kernel exists; Run All then asks for a kernel.)
    """
    page.wait_for_function(
        "() => [...document.querySelectorAll('.jp-StatusBar-TextItem')]"
        ".some(e => / \\| Idle$/.test(e.textContent.trim()))",
        timeout=120_000,
    )


def _run_all_cells(page) -> list[str]:
    """Run → Run All Cells, as a student would; return the prompts once nothing is running."""
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
    page.wait_for_function(f"() => {PROMPTS_JS}.some(t => t === '[*]:')", timeout=30_000)
    # Done when no cell is queued or running (an error stops the run with cells left unrun).
    page.wait_for_function(f"() => !{PROMPTS_JS}.some(t => t === '[*]:')", timeout=RUN_ALL_S * 1000)
    _wait_for_kernel_idle(page)
    return page.evaluate(f"() => {PROMPTS_JS}")


def _error_outputs(page) -> list[str]:
    return page.evaluate(
        "() => [...document.querySelectorAll("
        "'.jp-OutputArea-output[data-mime-type=\"application/vnd.jupyter.stderr\"]')]"
        ".map(e => e.innerText).filter(t => /Error|Traceback/.test(t))"
    )


def _move_slider(explorer, slider_class: str, presses: int, key: str = "ArrowRight") -> str:
    """Move a slider of `explorer` with the keyboard, as a user can; return its new readout."""
    slider = explorer.locator(f".{slider_class}")
    handle = slider.locator(".noUi-handle")
    handle.scroll_into_view_if_needed()
    handle.click()  # focus; clicking the handle itself does not move it
    for _ in range(presses):
        handle.press(key)
    return slider.locator(".widget-readout").inner_text()


def _wait_for_new_picture(picture, before: str) -> str:
    """Poll the picture's digest until it differs from `before` (or REDRAW_S pass)."""
    deadline = time.monotonic() + REDRAW_S
    while True:
        # evaluate() awaits the digest's promise (wait_for_function would not: a promise is
        # truthy, so it would pass at once).
        digest = picture.evaluate(IMAGE_DIGEST_JS)
        if digest != before or time.monotonic() > deadline:
            return digest
        time.sleep(0.25)


# ---------------------------------------------------------------------------------------------
# The test
# ---------------------------------------------------------------------------------------------


def test_attention_explorer_in_jupyterlab(lab: Lab, page, tmp_path):
    started = time.monotonic()
    phases: dict[str, float] = {}  # seconds since start, for the report
    committed = (ROOT / NOTEBOOK).read_bytes()
    screenshot = tmp_path / "09_inspecting_attention.png"
    try:
        page.goto(f"{lab.url}/lab/tree/{NOTEBOOK}?token={lab.token}")
        page.wait_for_selector(".jp-NotebookPanel .jp-CodeCell")
        _wait_for_kernel_idle(page)
        phases["notebook open, kernel idle"] = time.monotonic() - started

        prompts = _run_all_cells(page)
        phases["all cells run"] = time.monotonic() - started
        unrun = [i for i, p in enumerate(prompts) if not re.fullmatch(r"\[\d+\]:", p)]
        assert not unrun, (
            f"code cells {unrun} did not run (prompts {prompts}); errors in the notebook:\n"
            + "\n".join(_error_outputs(page))
        )

        explorer = page.locator(".sagan-explorer").first  # the digits explorer (a second follows)
        explorer.wait_for(state="visible", timeout=REDRAW_S * 1000)
        explorer.scroll_into_view_if_needed()
        picture = explorer.locator("img.sagan-overlay")
        page.wait_for_function("(img) => img.complete && img.naturalWidth > 0",
                               arg=picture.element_handle())  # fmt: skip
        summary = explorer.locator(".sagan-summary").inner_text()
        assert "G/16x16" in summary and "px away" in summary, summary
        before = picture.evaluate(IMAGE_DIGEST_JS)
        phases["explorer drawn"] = time.monotonic() - started

        readout = _move_slider(explorer, "sagan-query-row", presses=8)
        assert readout == "18", f"the row slider reads {readout!r} after 8 steps from 10"
        after = _wait_for_new_picture(picture, before)
        assert after != before, (
            f"the overlay picture did not change within {REDRAW_S} s of moving the query row "
            "slider: the slider's callback is not redrawing"
        )
        # Each of the 8 key presses is one redraw in the kernel, and the picture changed after
        # the first: the summary reaches row 18 only after the last (Playwright's expect waits
        # 5 s unless told otherwise, too little for 8 redraws on a busy 2-core machine).
        expect(explorer.locator(".sagan-summary")).to_contain_text(
            "Query (18, 16)", timeout=REDRAW_S * 1000
        )
        phases["redrawn after the slider moved"] = time.monotonic() - started

        # The γ control: from 1.00 down 4 steps of 0.25 switches G's attention off.
        readout = _move_slider(explorer, "sagan-gamma-scale", presses=4, key="ArrowLeft")
        assert readout == "0.00", f"the γ slider reads {readout!r} after 4 steps down from 1.00"
        off = _wait_for_new_picture(picture, after)
        assert off != after, f"the picture did not change within {REDRAW_S} s of setting γ × 0"
        expect(explorer.locator(".sagan-summary")).to_contain_text(
            "(attention off)",
            timeout=REDRAW_S * 1000,  # 4 redraws, each running G
        )
        phases["redrawn with attention off"] = time.monotonic() - started
        _wait_for_kernel_idle(page)  # every redraw done: the screenshot shows the final picture

        errors = _widget_errors(page.console_log)
        assert not errors, "widget errors in the browser console:\n" + "\n".join(errors)
        assert page.get_by_text("Error displaying widget").count() == 0
        explorer.scroll_into_view_if_needed()
        page.screenshot(path=screenshot)
        print(f"\nbrowser test passed; screenshot: {screenshot}")
    except BaseException:
        try:
            page.screenshot(path=screenshot)
            print(f"\nscreenshot of the failure: {screenshot}")
        except Exception as err:  # the page may be gone; the report matters more
            print(f"\nno screenshot ({err})")
        print(f"browser console:\n{_console_errors(page.console_log)}")
        print(f"JupyterLab log (tail):\n{lab.log_tail()}")
        raise
    finally:
        phases["end"] = time.monotonic() - started
        print("timings (s since start): " + ", ".join(f"{k} {v:.0f}" for k, v in phases.items()))
        assert (ROOT / NOTEBOOK).read_bytes() == committed, (
            f"{NOTEBOOK} was written during the test (autosave?); restore it with git"
        )

"""A real browser on the lab: headless Chromium, driven through the Chrome DevTools Protocol.

Debian's ``chromium`` opens JupyterLab with the token, as the learner does with the link that
provisioning prints, opens a notebook, runs its first code cell (click, Shift+Enter) and reads
the page itself: the window title, the kernel shown in the notebook's toolbar, the cell's
output, and whether an error dialog is up. A screenshot is saved.

Chromium's background networking (updates, metrics, sync, translation, safe browsing) is off,
and its host resolver maps every name to nothing except 127.0.0.1, so it talks to the
forwarded port only. The DevTools socket is a websocket on 127.0.0.1; tornado's client
speaks it (tornado comes with JupyterLab).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

from tornado.websocket import websocket_connect

CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",  # we are root
    "--disable-gpu",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
    "--window-size=1400,900",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-breakpad",
    "--disable-domain-reliability",
    "--disable-client-side-phishing-detection",
    "--metrics-recording-only",
    "--disable-features=Translate,OptimizationHints,MediaRouter,AutofillServerCommunication",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    "--proxy-server=direct://",
    "--proxy-bypass-list=*",
)

# What the check reads off the page (JupyterLab 4's DOM).
_CURRENT_PANEL = """
  const tab = document.querySelector('#jp-main-dock-panel .lm-TabBar-tab.lm-mod-current');
  const current = tab && document.getElementById(tab.dataset.id);
  const panel = current && current.classList.contains('jp-NotebookPanel') ? current : null;
"""
_READ_PAGE = (
    """(() => {"""
    + _CURRENT_PANEL
    + """
  const q = (sel) => panel ? panel.querySelector(sel) : null;
  const cell = q('.jp-CodeCell');
  const text = (el) => el ? el.innerText.trim() : '';
  return {
    title: document.title,
    tab: text(tab && tab.querySelector('.lm-TabBar-tabLabel')),
    kernel: text(q('.jp-Toolbar-kernelName')),
    kernel_status: (q('.jp-Notebook-ExecutionIndicator') || {dataset: {}}).dataset.status || '',
    prompt: cell ? text(cell.querySelector('.jp-InputPrompt')) : '',
    output: cell ? text(cell.querySelector('.jp-OutputArea')) : '',
    error_output: !!(cell && cell.querySelector(
      '[data-mime-type="application/vnd.jupyter.stderr"], ' +
      '[data-mime-type="application/vnd.jupyter.error"]')),
    dialog: text(document.querySelector('.jp-Dialog')),
    cells: panel ? panel.querySelectorAll('.jp-Cell').length : 0,
  };
})()"""
)

_CELL_EDITOR_BOX = (
    """(() => {"""
    + _CURRENT_PANEL
    + """
  const ed = panel && panel.querySelector('.jp-CodeCell .jp-InputArea-editor');
  if (!ed) return null;
  ed.scrollIntoView({block: 'center'});
  const r = ed.getBoundingClientRect();
  return {x: r.left + 40, y: r.top + r.height / 2};
})()"""
)


class BrowserError(Exception):
    """The browser could not start, or the page never showed what the check waits for."""


class _Page:
    def __init__(self, conn) -> None:
        self.conn = conn
        self.next_id = 0

    async def send(self, method: str, **params):
        self.next_id += 1
        my_id = self.next_id
        await self.conn.write_message(json.dumps({"id": my_id, "method": method, "params": params}))
        while True:
            raw = await asyncio.wait_for(self.conn.read_message(), 120)
            if raw is None:
                raise BrowserError("the DevTools socket closed")
            msg = json.loads(raw)
            if msg.get("id") == my_id:
                if "error" in msg:
                    raise BrowserError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    async def evaluate(self, expression: str):
        result = await self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        return result.get("result", {}).get("value")

    async def wait_for(self, what: str, predicate, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        page = {}
        while time.monotonic() < deadline:
            page = await self.evaluate(_READ_PAGE) or {}
            if predicate(page):
                return page
            await asyncio.sleep(1)
        raise BrowserError(f"waited {timeout:.0f} s for {what}; the page showed {page}")

    async def key(self, key: str, code: int, modifiers: int = 0) -> None:
        for kind in ("rawKeyDown", "keyUp"):
            await self.send(
                "Input.dispatchKeyEvent", type=kind, key=key, code=key, modifiers=modifiers,
                windowsVirtualKeyCode=code, nativeVirtualKeyCode=code,
            )  # fmt: skip

    async def click(self, x: float, y: float) -> None:
        for kind in ("mousePressed", "mouseReleased"):
            await self.send(
                "Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1
            )


@contextlib.contextmanager
def chromium(log_path: Path):
    """Start headless Chromium; yield the DevTools HTTP base URL (127.0.0.1)."""
    binary = shutil.which("chromium")
    if binary is None:
        raise BrowserError("no chromium (fix: apt-get install chromium)")
    profile = Path(tempfile.mkdtemp(prefix="labkit-ci-chromium-"))
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not port_file.exists() or not port_file.read_text().strip():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise BrowserError(f"chromium did not start (see {log_path})")
            time.sleep(0.2)
        yield f"http://127.0.0.1:{port_file.read_text().split()[0]}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(profile, ignore_errors=True)


def open_and_run_first_cell(url: str, screenshot: Path, log_path: Path, timeout: float = 900):
    """Open ``url`` (a notebook in JupyterLab, with the token), run its first code cell and
    return what the page showed before and after, with the seconds each phase took."""
    with chromium(log_path) as devtools:
        with urllib.request.urlopen(f"{devtools}/json/list", timeout=30) as resp:
            targets = json.load(resp)
        page_ws = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
        return asyncio.run(_drive(page_ws, url, screenshot, timeout))


async def _drive(page_ws: str, url: str, screenshot: Path, timeout: float) -> dict:
    conn = await websocket_connect(page_ws, max_message_size=64 * 1024 * 1024)
    page = _Page(conn)
    times = {}
    try:
        await page.send("Page.enable")
        await page.send("Runtime.enable")
        t = time.monotonic()
        await page.send("Page.navigate", url=url)
        opened = await page.wait_for(
            "the notebook to open with its kernel idle",
            lambda p: (
                p.get("cells", 0) > 0
                and p.get("kernel_status") == "idle"
                and p.get("kernel") not in ("", "No Kernel")
            ),
            timeout,
        )
        times["open_seconds"] = round(time.monotonic() - t, 1)
        box = await page.evaluate(_CELL_EDITOR_BOX)
        if not box:
            raise BrowserError("no code cell editor on the page")
        t = time.monotonic()
        await page.click(box["x"], box["y"])
        await page.key("Enter", 13, modifiers=8)  # Shift+Enter: run the cell, select the next
        ran = await page.wait_for(
            "the first cell to run (a number in its prompt, the kernel idle again)",
            lambda p: (
                any(ch.isdigit() for ch in p.get("prompt", "")) and p.get("kernel_status") == "idle"
            ),
            timeout,
        )
        times["run_seconds"] = round(time.monotonic() - t, 1)
        shot = await page.send("Page.captureScreenshot", format="png")
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        screenshot.write_bytes(base64.b64decode(shot["data"]))
        return {"opened": opened, "ran": ran, **times}
    finally:
        conn.close()

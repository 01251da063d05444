"""Run notebooks through a JupyterLab server, the way a learner's browser runs them.

The server's REST API opens a session on the notebook (which starts its kernel, "labkit
(root)" from the notebook's metadata), and each code cell is sent over the kernel's
websocket as an ``execute_request``, in order, on one kernel, exactly as JupyterLab's
"Run All" does. A cell that raises fails the notebook (nbval's --nbval-lax rule: the checks
are inside the cells). Only the standard library and tornado (which JupyterLab depends on).
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field

from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

KERNEL = "labkit"
KERNEL_DISPLAY_NAME = "labkit (root)"


class NotebookError(Exception):
    """A cell raised, or the server or kernel did not answer."""


@dataclass
class CellResult:
    index: int
    seconds: float
    status: str  # "ok" | "error"
    error: str = ""


@dataclass
class NotebookResult:
    path: str
    kernel: str
    seconds: float = 0.0
    cells: list[CellResult] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.cells) and all(c.status == "ok" for c in self.cells)


class Server:
    """A JupyterLab server at ``base`` (http://127.0.0.1:PORT), with its token."""

    def __init__(self, base: str, token: str) -> None:
        self.base = base.rstrip("/")
        self.token = token

    def api(self, method: str, path: str, body: dict | None = None, timeout: float = 120):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            f"{self.base}{path}",
            data=data,
            method=method,
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            text = resp.read().decode()
        return json.loads(text) if text else None

    def kernelspecs(self) -> dict:
        return self.api("GET", "/api/kernelspecs")

    def notebook(self, path: str) -> dict:
        return self.api("GET", f"/api/contents/{urllib.parse.quote(path)}?content=1")["content"]

    def shutdown_all(self) -> None:
        """End every session and kernel, so no kernel outlives the run (the guest's leak
        check would see it)."""
        for s in self.api("GET", "/api/sessions"):
            self.api("DELETE", f"/api/sessions/{s['id']}")
        for k in self.api("GET", "/api/kernels"):
            self.api("DELETE", f"/api/kernels/{k['id']}")

    def run_notebook(self, path: str, cell_timeout: float = 900, log=print) -> NotebookResult:
        """Open ``path`` in a session on its own kernel and run every code cell in order."""
        nb = self.notebook(path)
        kernel = nb["metadata"].get("kernelspec", {}).get("name", KERNEL)
        session = self.api(
            "POST",
            "/api/sessions",
            {"path": path, "name": path.rsplit("/", 1)[-1], "type": "notebook",
             "kernel": {"name": kernel}},
        )  # fmt: skip
        result = NotebookResult(path, session["kernel"]["name"])
        start = time.monotonic()
        try:
            asyncio.run(self._run_cells(session, nb, result, cell_timeout, log))
        finally:
            self.api("DELETE", f"/api/sessions/{session['id']}")
            result.seconds = round(time.monotonic() - start, 1)
        return result

    async def _run_cells(self, session, nb, result, cell_timeout, log) -> None:
        kernel_id = session["kernel"]["id"]
        ws_base = self.base.replace("http://", "ws://", 1)
        client_session = uuid.uuid4().hex
        url = f"{ws_base}/api/kernels/{kernel_id}/channels?session_id={client_session}"
        req = HTTPRequest(url, headers={"Authorization": f"token {self.token}"}, connect_timeout=60)
        conn = await websocket_connect(req, max_message_size=64 * 1024 * 1024)
        try:
            await _request(conn, client_session, "kernel_info_request", {}, timeout=300)
            code_cells = [c for c in nb["cells"] if c["cell_type"] == "code"]
            for index, cell in enumerate(code_cells):
                source = cell["source"]
                source = source if isinstance(source, str) else "".join(source)
                t = time.monotonic()
                reply, error = await _request(
                    conn,
                    client_session,
                    "execute_request",
                    {"code": source, "silent": False, "store_history": True,
                     "user_expressions": {}, "allow_stdin": False, "stop_on_error": True},
                    timeout=cell_timeout,
                )  # fmt: skip
                seconds = round(time.monotonic() - t, 1)
                status = reply["content"]["status"]
                cell_result = CellResult(index, seconds, "ok" if status == "ok" else "error")
                if status != "ok":
                    cell_result.error = error or json.dumps(reply["content"])[:2000]
                result.cells.append(cell_result)
                log(f"  {result.path} cell {index + 1}/{len(code_cells)}: {status} ({seconds} s)")
                if status != "ok":
                    break
        finally:
            conn.close()


async def _request(conn, session: str, msg_type: str, content: dict, timeout: float):
    """Send one shell request; return (its reply, the error text from iopub or "") once the
    kernel is idle again for it."""
    msg_id = uuid.uuid4().hex
    await conn.write_message(
        json.dumps(
            {
                "header": {
                    "msg_id": msg_id,
                    "username": "labkit-ci",
                    "session": session,
                    "msg_type": msg_type,
                    "version": "5.3",
                    "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                },
                "parent_header": {},
                "metadata": {},
                "content": content,
                "channel": "shell",
                "buffers": [],
            }  # fmt: skip
        )
    )
    reply = None
    idle = False
    error = ""
    deadline = time.monotonic() + timeout
    while reply is None or not idle:
        left = deadline - time.monotonic()
        if left <= 0:
            raise NotebookError(f"{msg_type}: no answer from the kernel within {timeout:.0f} s")
        raw = await asyncio.wait_for(conn.read_message(), left)
        if raw is None:
            raise NotebookError(f"{msg_type}: the kernel's websocket closed")
        if isinstance(raw, bytes):
            continue
        msg = json.loads(raw)
        if msg.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        kind = msg["header"]["msg_type"]
        if msg["channel"] == "shell" and kind.endswith("_reply"):
            reply = msg
        elif kind == "status" and msg["content"].get("execution_state") == "idle":
            idle = True
        elif kind == "error":
            error = "\n".join(msg["content"].get("traceback", []))[-4000:]
    return reply, error

"""A registry for notebook 04, on this machine, and a progress bar for a pull in a notebook.

The lab works offline: instead of Docker Hub, ``local_registry()`` starts Debian's
``docker-registry`` (the CNCF distribution registry, the same program Docker Hub's API comes
from) on 127.0.0.1, with its storage in a temporary directory, no auth and plain HTTP (which
clients use for 127.0.0.1 without being told). An image goes in with ``skopeo copy``, which the
notebook runs itself, so the learner sees the command. The registry stops, and its storage
goes, when the cell's ``with`` block ends (or the kernel exits).

``NotebookProgress`` draws a pull as Docker does, a line per layer (``a1b2c3d4e5f6:
Downloading [====>   ] 1.2MB/3.4MB``), redrawn in place under the cell; it has the three
methods of ``labkit.images.progress.Progress``, so a pull reports to it as to the terminal's.
"""

from __future__ import annotations

import atexit
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from labkit.images.progress import Progress, human, short

REGISTRY = "/usr/bin/docker-registry"
CONFIG = """\
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {root}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{port}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalRegistry:
    """A ``docker-registry`` on 127.0.0.1 (``.host`` is ``127.0.0.1:PORT``); ``.stop()``."""

    def __init__(self, timeout: float = 15) -> None:
        if not Path(REGISTRY).exists():
            raise RuntimeError(f"{REGISTRY} is missing: apt-get install docker-registry")
        self.dir = Path(tempfile.mkdtemp(prefix="labkit-nb04-registry-"))
        self.port = _free_port()
        self.host = f"127.0.0.1:{self.port}"
        config = self.dir / "config.yml"
        config.write_text(CONFIG.format(root=self.dir / "storage", port=self.port))
        self._log = open(self.dir / "log", "wb")  # noqa: SIM115 (closed by stop)
        self._proc: subprocess.Popen | None = subprocess.Popen(
            [REGISTRY, "serve", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C meant for the notebook is not meant for it
        )
        _running.append(self)
        try:
            self._wait(timeout)
        except BaseException:
            self.stop()
            raise

    def _wait(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                log = (self.dir / "log").read_text(errors="replace").strip()
                raise RuntimeError(f"docker-registry exited {self._proc.returncode}: {log}")
            try:
                with urllib.request.urlopen(f"http://{self.host}/v2/", timeout=1) as answer:
                    if answer.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                time.sleep(0.1)
        raise TimeoutError(f"docker-registry did not answer on {self.host} in {timeout:.0f} s")

    def stop(self) -> None:
        """Stop the registry and remove its storage (again: nothing happens)."""
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None
            self._log.close()
        shutil.rmtree(self.dir, ignore_errors=True)
        if self in _running:
            _running.remove(self)

    def __enter__(self) -> LocalRegistry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


_running: list[LocalRegistry] = []


@atexit.register
def _stop_all() -> None:
    for registry in list(_running):
        registry.stop()


def local_registry(timeout: float = 15) -> LocalRegistry:
    """Start a registry on 127.0.0.1 for a ``with`` block."""
    return LocalRegistry(timeout)


# -- a pull's progress, in a notebook -------------------------------------------------------------


class NotebookProgress(Progress):
    """A line per layer, redrawn in place under the cell (plain lines outside IPython)."""

    WIDTH = 30

    def __init__(self, every: float = 0.1) -> None:
        self.rows: dict[str, list] = {}  # short digest -> [done, total, status]
        self._every, self._last = every, 0.0
        self._handle = None
        self._shown = False  # the display is made at the first layer, below what came before

    def _show(self) -> None:
        if self._shown:
            return
        self._shown = True
        try:
            from IPython import get_ipython
            from IPython.display import display

            if get_ipython() is not None:
                self._handle = display(self._text(), display_id=True)
        except ImportError:
            pass

    def start(self, digest: str, total: int) -> None:
        self._show()
        self.rows[self._short(digest)] = [0, total, "Downloading"]
        self._draw(force=True)

    def advance(self, digest: str, n: int) -> None:
        self.rows.setdefault(self._short(digest), [0, 0, "Downloading"])[0] += n
        self._draw()

    def done(self, digest: str, status: str) -> None:
        self._show()
        row = self.rows.setdefault(self._short(digest), [0, 0, status])
        row[2] = status
        self._draw(force=True)
        if self._handle is None:
            print(f"{self._short(digest)}: {status}")

    @staticmethod
    def _short(digest: str) -> str:
        return short(digest)

    def _line(self, short: str, row: list) -> str:
        done, total, status = row
        if status != "Downloading":
            return f"{short}: {status}"
        filled = int(self.WIDTH * done / total) if total else 0
        bar = "=" * filled + (">" if filled < self.WIDTH else "") + " " * (self.WIDTH - filled)
        return f"{short}: Downloading [{bar[: self.WIDTH]}] {human(done)}/{human(total)}"

    def _text(self) -> object:
        text = "\n".join(self._line(s, r) for s, r in self.rows.items()) or "waiting..."
        return _Plain(text)

    def _draw(self, force: bool = False) -> None:
        now = time.monotonic()
        if self._handle is None or (not force and now - self._last < self._every):
            return
        self._last = now
        self._handle.update(self._text())


class _Plain(str):
    """Text IPython shows as it is (no quotes)."""

    def __repr__(self) -> str:
        return str(self)

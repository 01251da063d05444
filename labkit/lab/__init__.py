"""Notebook helpers (a front end): run labkit and Docker outside the kernel, show source,
draw pictures, and make the lab hands-on (exercises, predictions, terminal tasks, a child
process for the learner's own root code). Nothing here changes the kernel process's
namespaces or root: whatever must, runs in a fresh child process (``labkit.lab.child``).

``%load_ext labkit.lab`` adds the ``%%labkit_child`` cell magic (``labkit.lab.magic``).
"""

from typing import Any

from labkit.lab import compare
from labkit.lab.child import ChildRun
from labkit.lab.child import run as run_child
from labkit.lab.compare import docker_container_pid, namespace_table, plot_namespace_grid
from labkit.lab.exercises import check
from labkit.lab.exercises import show as exercise
from labkit.lab.i18n import use as language
from labkit.lab.shell import (
    background,
    docker,
    docker_available,
    keep_running,
    labkit,
    lines,
    sh,
    show_source,
)
from labkit.lab.teach import (
    at_least,
    at_most,
    contains,
    differs_from,
    expect,
    reveal,
    terminal,
    terminal_task,
)

__all__ = ["background", "docker", "docker_available", "labkit", "lines", "sh", "show_source"]
__all__ += ["compare", "docker_container_pid", "namespace_table", "plot_namespace_grid"]
__all__ += ["ChildRun", "check", "exercise", "keep_running", "language", "run_child"]
__all__ += ["at_least", "at_most", "contains", "differs_from", "expect", "reveal", "terminal"]
__all__ += ["terminal_task"]


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext labkit.lab``: register ``%%labkit_child``."""
    from labkit.lab.magic import load

    load(ipython)

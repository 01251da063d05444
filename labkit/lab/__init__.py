"""Notebook helpers (a front end): run labkit and Docker outside the kernel, show source,
draw pictures. Nothing here changes the kernel process's namespaces or root."""

from labkit.lab import compare
from labkit.lab.compare import docker_container_pid, namespace_table, plot_namespace_grid
from labkit.lab.shell import background, docker, docker_available, labkit, lines, sh, show_source

__all__ = ["background", "docker", "docker_available", "labkit", "lines", "sh", "show_source"]
__all__ += ["compare", "docker_container_pid", "namespace_table", "plot_namespace_grid"]

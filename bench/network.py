"""Network throughput: labkit's paths beside Docker's same paths and the host's loopback.

    sudo /opt/labkit/venv/bin/python bench/network.py [--runs 5] [--seconds 3]
                     [--json OUT] [--markdown OUT]

iperf3 (Debian's package) measures TCP throughput on four paths, for labkit and for Docker
(20.10 here, default settings: docker0, userland proxy on), in one run:

* ``bridge``: container to container on the default network (``labkit0`` / ``docker0``);
* ``dnat``: the host to a published port at the host's own address (nat OUTPUT, DNAT to
  the container, forwarded over the bridge: the kernel's path);
* ``proxy``: the host to a published port at 127.0.0.1, which no DNAT serves: the userland
  proxy relays it (labkit's supervisor loop / one ``docker-proxy`` process per port);
* ``loopback``: iperf3 to itself on the host's 127.0.0.1, the ceiling every path is read
  against.

Both runtimes' containers run ``sleep``; the iperf3 server and client run in their network
namespaces (``nsenter --net``), so both sides use the same binary and only the network path
differs. The paths are measured in rounds: each round measures every path for labkit and
for Docker, the order alternating from round to round, and the ratio labkit/Docker is taken
per round, then its median is reported (a paired comparison: a round's load affects both).

Everything it makes is named ``labkit-bench-*`` and removed at the end, also on error.
Needs root. Not a test: nothing asserts a throughput. See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH)]
import startup  # noqa: E402  (bench/startup.py: the default network left as found)

PREFIX = "labkit-bench-net"
PYTHON = os.environ.get("LABKIT_PYTHON", "/opt/labkit/venv/bin/python")
LABKIT = [PYTHON, "-m", "labkit.cli"]
REPO = Path(__file__).resolve().parent.parent
PORT = 5201  # iperf3's own, inside each container
HOST_PORT = {"labkit": 18201, "docker": 18202}
PATHS = ("bridge", "dnat", "proxy")


def sh(*argv: str, check: bool = True) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=120).stdout


class Labkit:
    """Two labkit containers on the default network; ``a`` publishes iperf3's port."""

    name = "labkit"

    def __init__(self, tmp: Path) -> None:
        self.procs: list[subprocess.Popen] = []
        self.pids = [self._start(tmp, "a", ["-p", f"{HOST_PORT['labkit']}:{PORT}"]),
                     self._start(tmp, "b", [])]  # fmt: skip

    def _start(self, tmp: Path, tag: str, extra: list[str]) -> int:
        pid_file = tmp / f"{tag}.pid"
        argv = [*LABKIT, "run", "--pid-file", str(pid_file), "--name", f"{PREFIX}-{tag}", *extra,
                "busybox", "sleep", "3600"]  # fmt: skip
        self.procs.append(subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL))
        deadline = time.monotonic() + 30
        while not pid_file.exists() or not pid_file.read_text().strip():
            if time.monotonic() > deadline or self.procs[-1].poll() is not None:
                raise SystemExit(f"labkit run {tag} did not start")
            time.sleep(0.05)
        return int(pid_file.read_text())

    def close(self) -> None:
        for pid in self.pids:
            subprocess.run(["kill", "-KILL", str(pid)], capture_output=True)
        for proc in self.procs:
            proc.wait(timeout=30)


class Docker:
    """The same two containers under Docker."""

    name = "docker"

    def __init__(self) -> None:
        self.names = [f"{PREFIX}-docker-a", f"{PREFIX}-docker-b"]
        self.close()
        sh("docker", "run", "-d", "--name", self.names[0], "-p", f"{HOST_PORT['docker']}:{PORT}",
           "labkit/busybox", "sleep", "3600")  # fmt: skip
        sh("docker", "run", "-d", "--name", self.names[1], "labkit/busybox", "sleep", "3600")
        self.pids = [int(sh("docker", "inspect", "-f", "{{.State.Pid}}", n)) for n in self.names]

    def close(self) -> None:
        subprocess.run(["docker", "rm", "-f", *self.names], capture_output=True)


def address_in(pid: int) -> str:
    out = sh("nsenter", f"--net=/proc/{pid}/ns/net", "ip", "-j", "-4", "addr", "show", "eth0")
    return json.loads(out)[0]["addr_info"][0]["local"]


def host_address() -> str:
    """The host's own address on its default route's device (local: DNAT in nat OUTPUT)."""
    dev = json.loads(sh("ip", "-j", "route", "show", "default"))[0]["dev"]
    return json.loads(sh("ip", "-j", "-4", "addr", "show", dev))[0]["addr_info"][0]["local"]


def iperf(server_pid: int | None, client_pid: int | None, target: str, port: int,
          seconds: float) -> float:  # fmt: skip
    """Gbit/s received, one TCP stream; the server in ``server_pid``'s network namespace
    (None: the host's), the client in ``client_pid``'s."""

    def where(pid: int | None) -> list[str]:
        return ["nsenter", f"--net=/proc/{pid}/ns/net"] if pid else []

    listen = PORT if server_pid else port
    server = subprocess.Popen([*where(server_pid), "iperf3", "-s", "-1", "-p", str(listen)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        time.sleep(0.3)
        out = sh(*where(client_pid), "iperf3", "-c", target, "-p", str(port), "-t", str(seconds),
                 "-J")  # fmt: skip
        return json.loads(out)["end"]["sum_received"]["bits_per_second"] / 1e9
    finally:
        server.kill()
        server.wait()


def sample(rt: Labkit | Docker, path: str, host: str, seconds: float) -> float:
    a, b = rt.pids
    if path == "bridge":
        return iperf(a, b, address_in(a), PORT, seconds)
    target = host if path == "dnat" else "127.0.0.1"
    return iperf(a, None, target, HOST_PORT[rt.name], seconds)


def measure(runs: int, seconds: float, tmp: Path) -> dict:
    host = host_address()
    labkit, docker = Labkit(tmp), Docker()
    results: dict[str, dict[str, list[float]]] = {p: {"labkit": [], "docker": []} for p in PATHS}
    loopback: list[float] = []
    try:
        for i in range(runs):
            order = (labkit, docker) if i % 2 == 0 else (docker, labkit)
            loopback.append(iperf(None, None, "127.0.0.1", 18200, seconds))
            for path in PATHS:
                for rt in order:
                    results[path][rt.name].append(sample(rt, path, host, seconds))
            print(f"round {i + 1}/{runs} done", file=sys.stderr)
    finally:
        labkit.close()
        docker.close()
    return {"runs": runs, "seconds": seconds, "loopback": loopback, "paths": results,
            "docker": sh("docker", "version", "-f", "{{.Server.Version}}").strip(),
            "iperf3": sh("iperf3", "--version").splitlines()[0]}  # fmt: skip


def report(r: dict) -> str:
    loop = statistics.median(r["loopback"])
    lines = [
        f"iperf3, {r['runs']} rounds of {r['seconds']} s per path; Docker {r['docker']}; "
        f"loopback median {loop:.1f} Gbit/s",
        "",
        "| path | labkit Gbit/s | Docker Gbit/s | labkit / loopback | Docker / loopback "
        "| labkit / Docker (median of rounds) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for path, got in r["paths"].items():
        ours, theirs = statistics.median(got["labkit"]), statistics.median(got["docker"])
        paired = statistics.median(a / b for a, b in zip(got["labkit"], got["docker"], strict=True))
        lines.append(f"| {path} | {ours:.1f} | {theirs:.1f} | {ours / loop:.2f} | "
                     f"{theirs / loop:.2f} | {paired:.2f} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3)
    parser.add_argument("--json")
    parser.add_argument("--markdown")
    args = parser.parse_args(argv)
    import tempfile

    with (
        startup.default_network_kept_as_found(),
        tempfile.TemporaryDirectory(prefix=f"{PREFIX}-") as tmp,
    ):
        results = measure(args.runs, args.seconds, Path(tmp))
    text = report(results)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    if args.markdown:
        Path(args.markdown).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

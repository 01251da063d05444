"""Pulling an image, and the disk its containers use: labkit beside skopeo and Docker, in one run.

    sudo /opt/labkit/venv/bin/python bench/pull.py [--runs N] [--warmup K] [--images busybox,debian]
                     [--counts 1,5,20] [--json OUT] [--markdown OUT]

1. **Pull and unpack**, from a real registry on 127.0.0.1 (Debian's ``docker-registry``,
   started here with tests/registry_server.py) into a cold local store, the image's layers
   gzip-compressed as registries serve them. Round-robin, the starting contender rotating:
   ``labkit pull`` into a fresh ``LABKIT_STATE_DIR``; ``skopeo copy`` to a fresh ``oci:`` dir,
   then ``tar -xzf`` of every layer in order into a rootfs (copy plus unpack); ``docker pull``,
   after ``docker rmi`` of the image. One sample is the wall time of all of that contender's
   commands (and the CPU time of those processes: for Docker, of the CLI only); the
   clean-up after it and a ``sync`` are not timed. The pushed image is
   ``labkit/<name>`` as ``docker export`` gives it, imported again: Docker already holds
   ``labkit/<name>``'s own layer and config, and would pull nothing at all. Every docker
   sample must print "Pull complete", or it is not cold.
2. **Disk used by N containers** on one image, each writing a small file and kept running
   (``sleep``): labkit's store (the unpacked layers once, plus each container's directory;
   the compressed blobs it also keeps are shown apart) against N full copies of the unpacked
   image, and against Docker's overlay2 for the same N (the image's layer directory plus each
   container's directory and its ``-init`` one). ``du -skx``: disk blocks, on one filesystem,
   so no overlay mount is counted.

Everything it makes is named ``labkit-bench-*`` (temp dirs, Docker images and containers)
and removed at the end, also on error. Needs root. Not a test: nothing asserts a timing.
See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH), str(BENCH.parent / "tests")]
import startup  # noqa: E402  (bench/startup.py: p90, load, host facts)
from registry_server import Registry  # noqa: E402  (tests/registry_server.py)

PREFIX = startup.PREFIX  # labkit-bench
LABKIT = [startup.DEFAULT_PYTHON, "-m", "labkit.cli"]
WRITE = "echo labkit-bench > /bench.txt && exec sleep 600"  # what each disk container does
CONTENDERS = ("labkit", "skopeo", "docker")
UNPACKED = {"labkit": "state/layers", "skopeo": "rootfs"}  # where each one's files end up


def sh(*argv: str, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, env=env, check=check, timeout=600)


def state_env(state: Path) -> dict:
    return os.environ | {"LABKIT_STATE_DIR": str(state)}


def children_cpu() -> tuple[float, float]:
    """ms of CPU (user + system, system) used so far by this process's reaped children."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (usage.ru_utime + usage.ru_stime) * 1e3, usage.ru_stime * 1e3


def du_k(*paths: Path | str) -> int:
    """KiB of disk blocks under ``paths`` (hard links once, other filesystems skipped)."""
    return int(sh("du", "-skxc", *map(str, paths)).stdout.splitlines()[-1].split()[0])


def publish(reg: Registry, name: str) -> str:
    """Push ``labkit/NAME`` as a new image (exported and imported again), return its ref."""
    src, tag = f"{PREFIX}-src-{name}", f"{PREFIX}/src-{name}:latest"
    try:
        sh("docker", "create", "--name", src, f"labkit/{name}:latest", "true")
        exported = subprocess.run(["docker", "export", src], capture_output=True, check=True)
        subprocess.run(["docker", "import", "-", tag], input=exported.stdout, check=True,
                       capture_output=True)  # fmt: skip
        reg.push_with_skopeo(f"docker-daemon:{tag}", f"{PREFIX}/{name}:latest")
    finally:
        sh("docker", "rm", "-f", src, check=False)
        sh("docker", "rmi", tag, check=False)
    return f"{reg.domain}/{PREFIX}/{name}"


def pull_labkit(ref: str, tmp: Path) -> None:
    sh(*LABKIT, "pull", ref, env=state_env(tmp / "state"))


def pull_skopeo(ref: str, tmp: Path) -> None:
    sh("skopeo", "copy", "--quiet", "--src-tls-verify=false", f"docker://{ref}", f"oci:{tmp}/oci")
    index = json.loads((tmp / "oci/index.json").read_text())
    blob = lambda d: tmp / "oci/blobs/sha256" / d["digest"].removeprefix("sha256:")  # noqa: E731
    (tmp / "rootfs").mkdir()
    for layer in json.loads(blob(index["manifests"][0]).read_text())["layers"]:
        gz = "-xzf" if layer["mediaType"].endswith("gzip") else "-xf"
        sh("tar", "-C", str(tmp / "rootfs"), "--numeric-owner", gz, str(blob(layer)))


def pull_docker(ref: str, tmp: Path) -> None:
    if "Pull complete" not in sh("docker", "pull", ref).stdout:
        raise RuntimeError("docker pull downloaded no layer: Docker's store was not cold")


def measure(ref: str, runs: int, warmup: int) -> dict:
    pulls = {"labkit": pull_labkit, "skopeo": pull_skopeo, "docker": pull_docker}
    rows = {
        c: {"status": "ok", "samples_ms": [], "cpu_ms": [], "sys_ms": [], "warmup_ms": []}
        for c in CONTENDERS
    }
    for r in range(warmup + runs):
        for c in CONTENDERS[r % 3 :] + CONTENDERS[: r % 3]:
            if rows[c]["status"] != "ok":
                continue
            tmp = Path(tempfile.mkdtemp(prefix=f"{PREFIX}-{c}-", dir="/var/tmp"))
            t0, cpu0 = time.perf_counter_ns(), children_cpu()
            try:
                pulls[c](ref, tmp)
                ms = (time.perf_counter_ns() - t0) / 1e6
                rows[c]["warmup_ms" if r < warmup else "samples_ms"].append(round(ms, 1))
                if r >= warmup:
                    cpu, sys_ = children_cpu()
                    rows[c]["cpu_ms"].append(round(cpu - cpu0[0], 1))
                    rows[c]["sys_ms"].append(round(sys_ - cpu0[1], 1))
                if c in UNPACKED and "unpacked_k" not in rows[c]:
                    rows[c]["unpacked_k"] = du_k(tmp / UNPACKED[c])
            except (subprocess.CalledProcessError, RuntimeError) as e:
                rows[c].update(status="failed", reason=str(e), stderr=getattr(e, "stderr", ""))
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
                if c == "docker":
                    sh("docker", "rmi", ref, check=False)
                os.sync()  # no sample starts with the last one's writeback pending
    for row in rows.values():
        if ms := row["samples_ms"]:
            row.update(median_ms=statistics.median(ms), p90_ms=startup.p90(ms), min_ms=min(ms),
                       max_ms=max(ms), cpu_median_ms=statistics.median(row["cpu_ms"]),
                       sys_median_ms=statistics.median(row["sys_ms"]))  # fmt: skip
    return rows


def labkit_disk(ref: str, counts: list[int], tmp: Path) -> list[dict]:
    state, out = tmp / "state", []
    tmp.mkdir(parents=True)
    sh(*LABKIT, "pull", ref, env=state_env(state))
    for n in counts:
        boxes = []
        try:
            for i in range(n):
                pid = tmp / f"pid-{n}-{i}"
                argv = [*LABKIT, "run", "--name", f"{PREFIX}-{n}-{i}", "--pid-file", str(pid)]
                boxes.append((subprocess.Popen(
                    [*argv, ref, "sh", "-c", WRITE], env=state_env(state),
                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE), pid))  # fmt: skip
            deadline = time.monotonic() + 120
            while len(list(state.glob("containers/*/upper/bench.txt"))) < n:
                if any(p.poll() is not None for p, _ in boxes) or time.monotonic() > deadline:
                    ended = [p.stderr.read() for p, _ in boxes if p.poll() is not None]
                    raise RuntimeError(f"labkit run: {ended or 'no file after 120 s'}")
                time.sleep(0.05)
            out.append({"n": n, "layers_k": du_k(state / "layers"), "blobs_k": du_k(state / "oci"),
                        "containers_k": du_k(state / "containers")})  # fmt: skip
        finally:
            for proc, pid in boxes:
                if proc.poll() is None and pid.exists():
                    os.kill(int(pid.read_text()), signal.SIGKILL)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                proc.stderr.close()
    return out


def docker_disk(ref: str, counts: list[int]) -> list[dict]:
    sh("docker", "pull", ref)
    fmt = ["--format", "{{json .GraphDriver.Data}}"]
    image = Path(json.loads(sh("docker", "image", "inspect", *fmt, ref).stdout)["UpperDir"])
    out = []
    try:
        for n in counts:
            names = [f"{PREFIX}-disk-{n}-{i}" for i in range(n)]
            for name in names:
                sh("docker", "run", "-d", "--network=none", "--name", name, ref, "sh", "-c", WRITE)
            dirs: list[Path] = []
            for name in names:  # the container's dir and its -init dir (its top lower)
                d = json.loads(sh("docker", "inspect", *fmt, name).stdout)
                dirs += [Path(d["UpperDir"]).parent, Path(d["LowerDir"].split(":")[0]).parent]
                deadline = time.monotonic() + 60
                while not (dirs[-2] / "diff/bench.txt").exists() and time.monotonic() < deadline:
                    time.sleep(0.05)
            out.append({"n": n, "image_k": du_k(image.parent), "containers_k": du_k(*dirs)})
            sh("docker", "rm", "-f", *names)
    finally:
        left = sh("docker", "ps", "-aq", "--filter", f"name={PREFIX}-disk-").stdout.split()
        if left:
            sh("docker", "rm", "-f", *left, check=False)
        sh("docker", "rmi", ref, check=False)
    return out


def _row(*cells: str) -> str:
    return "| " + " | ".join(cells) + " |"


def report(results: dict) -> str:
    f, x = startup._fmt, lambda v: startup._fmt(v, 2, "×")
    head = ("image", "contender", "median", "p90", "min", "max", "× skopeo", "× docker",
            "min × skopeo", "CPU (sys)", "unpacked MiB")  # fmt: skip
    lines = ["## Pull and unpack (ms)", "", _row(*head), "|---" * 2 + "|---:" * 9 + "|"]
    for image, r in results["images"].items():
        med = {c: r["pull"][c].get("median_ms") for c in CONTENDERS}
        for c, row in r["pull"].items():
            if row["status"] != "ok":
                lines.append(_row(image, f"`{c}`", f"failed: {row['reason'][:200]}"))
                continue
            cells = [f(row[k]) for k in ("median_ms", "p90_ms", "min_ms", "max_ms")]
            cells += [x(med[c] / med[o] if med[o] else None) for o in ("skopeo", "docker")]
            skopeo = r["pull"]["skopeo"].get("min_ms")
            cpu = f"{f(row['cpu_median_ms'])} ({f(row['sys_median_ms'])})"
            cells += [x(row["min_ms"] / skopeo if skopeo else None), cpu]
            cells[-1] += " CLI only" if c == "docker" else ""
            lines.append(_row(image, f"`{c}`", *cells, f(row.get("unpacked_k", 0) / 1024 or None)))
    lines += ["", "## Disk used by N running containers (MiB, du -skx)", "",
              _row("image", "N", "labkit layers + containers", "(+ compressed blobs)",
                   "N full copies", "Docker overlay2", "labkit / copies", "labkit / Docker"),
              "|---" + "|---:" * 7 + "|"]  # fmt: skip
    for image, r in results["images"].items():
        for lk, dk in zip(r["disk"]["labkit"], r["disk"]["docker"], strict=True):
            ours = (lk["layers_k"] + lk["containers_k"]) / 1024
            copies = lk["n"] * lk["layers_k"] / 1024
            theirs = (dk["image_k"] + dk["containers_k"]) / 1024
            cells = [f(v) for v in (ours, ours + lk["blobs_k"] / 1024, copies, theirs)]
            lines.append(_row(image, str(lk["n"]), *cells, x(ours / copies), x(ours / theirs)))
    meta = results["meta"]
    lines += ["", f"{meta['date']}; runs {meta['runs']} (+{meta['warmup']} warm-up); "
              f"load before: {meta['load_before']}; after: {meta['load_after']}"]  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=11)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--images", default="busybox,debian")
    parser.add_argument("--counts", default="1,5,20", help="numbers of containers, for disk")
    parser.add_argument("--json", metavar="OUT")
    parser.add_argument("--markdown", metavar="OUT")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("pull.py: needs root (fix: sudo)", file=sys.stderr)
        return 2
    counts = [int(n) for n in args.counts.split(",")]
    meta = {"date": time.strftime("%Y-%m-%d %H:%M %Z"), "runs": args.runs, "warmup": args.warmup,
            "load_before": startup.load_now(), "skopeo": sh("skopeo", "--version").stdout.strip(),
            "host": startup.host_facts(startup.DEFAULT_PYTHON)}  # fmt: skip
    results: dict = {"meta": meta, "images": {}}
    tmp = Path(tempfile.mkdtemp(prefix=f"{PREFIX}-pull-", dir="/var/tmp"))
    reg = Registry(tmp / "registry")
    try:
        for name in args.images.split(","):
            ref = publish(reg, name)
            print(f"{name}: {ref}, {args.warmup}+{args.runs} rounds", file=sys.stderr)
            pull = measure(ref, args.runs, args.warmup)
            disk = {"labkit": labkit_disk(ref, counts, tmp / f"disk-{name}"),
                    "docker": docker_disk(ref, counts)}  # fmt: skip
            results["images"][name] = {"ref": ref, "pull": pull, "disk": disk}
    finally:
        reg.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    meta["load_after"] = startup.load_now()
    text = report(results)
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    rows = [row for r in results["images"].values() for row in r["pull"].values()]
    return 0 if all(row["status"] == "ok" for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Boot the learner's VM and use it as a learner does: CI's check of ``vagrant up``.

    sudo /opt/labkit/venv/bin/python tests/guest/run.py [--arch amd64|arm64] [--if-cached]
        [--out DIR] [--notebooks 02_namespaces,...] [--no-browser] [--docs-screenshot]
        [-- PYTEST ARGS for the guest]

1. The image (tests/guest/image.py): from the cache, or built (a cold build, which ends with
   the box's first boot and provisioning, as ``vagrant up``).
2. The VM boots (tests/guest/vm.py); its labkit-ci-guest unit runs tests/guest/guest.sh:
   vagrant/provision.sh with the Vagrantfile's own args again (``vagrant provision``:
   idempotent, no network), then the machine's checks.
3. From the host, over the forwarded port: JupyterLab's REST API and kernel websocket run the
   notebooks on "labkit (root)" (tests/guest/nbserver.py), and headless Chromium opens the
   Lab with the token and runs a cell (tests/guest/browser.py).
4. In the guest: the tests that differ on systemd, cgroup v2 and Docker 26, labkit doctor,
   the guest's leak check; it powers off. Then the host's leak check.

Results: OUT/result.json (every fact and time), the guest's logs, the console, the
screenshot. Exit 0 when every check passed, 1 when one failed, 2 when the VM could not run;
with ``--if-cached`` and no cached image, 0 and a note (the arm64 image takes about an hour to
build: CI runs it only when it is there, or when asked).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import browser  # noqa: E402
import image  # noqa: E402
import nbserver  # noqa: E402
import vm  # noqa: E402

REPO = HERE.parents[1]
OUT = Path("/var/log/labkit-guest")
DOCS_SCREENSHOT = REPO / "docs" / "images" / "learner-vm-jupyterlab.png"
#: What runs in the guest: what differs on systemd, pure cgroup v2 and Docker 26, and what a
#: home directory others cannot read changes (see DEVELOPERS.md, "What runs where").
#: Everything else runs on the host only: Python is 12-21 times slower under emulation.
GUEST_TESTS = {
    "amd64": [
        "tests/in_vm",
        "tests/test_hardening.py",  # (the escape suite runs on the host only: what of it
        "tests/test_docker.py",  # differs here, the eBPF device program, is in hardening
        "tests/test_cgroups.py",  # and tests/in_vm; the CI budget has no room for the rest)
        # uid 65534 with the checkout in a 0700 home, and pivot_root with /tmp a tmpfs:
        "tests/test_syscalls.py::test_unshare_as_nobody_is_eperm_with_hint",
        "tests/test_syscalls.py::test_sethostname_as_nobody_is_eperm",
        "tests/test_syscalls.py::test_errors_are_oserror_with_errno_attributes",
        "tests/test_syscalls.py::test_pivot_root_on_a_plain_dir_of_the_root_fs_is_ebusy_and_says_why",
        "tests/test_cli.py::test_not_root_is_a_clear_error",
        "tests/test_runtime.py::test_an_unreadable_rootfs_says_so_not_run_as_root",
        "tests/test_runtime.py::test_start_refuses_when_not_root",
        # the network beside Docker 26 under systemd, kernel 6.12 (its FORWARD policy DROP):
        "tests/test_network_matrix.py::test_a_container_reaches_the_outside_as_the_host",
        "tests/test_network_matrix.py::test_labkit_and_docker_containers_reach_their_peers_but_not_each_other",
        "tests/test_ports.py::test_the_outside_reaches_a_published_port_and_no_other",
        "tests/test_ports.py::test_localhost_reaches_it_through_the_proxy_or_by_hairpin_nat",
    ],
    # arm64 proves the syscall numbers and the seccomp table: namespaces, rootfs, hardening.
    "arm64": [
        "tests/in_vm",
        "tests/test_namespaces.py",
        "tests/test_rootfs.py",
        "tests/test_syscalls.py",
        "tests/test_hardening.py",
        "tests/test_escapes.py",
    ],
}
#: Notebooks run in the guest through JupyterLab: those whose step meets something else there:
#: cgroup v2 under systemd (03), Docker 26's `docker save` layout and overlay2 (04), in order.
#: The namespace notebooks (02a, 02b) run on the host only: what differs for them in the guest
#: (a shared "/", the cgroup namespace on v2) is what tests/in_vm checks, and the CI budget has
#: no room for both. The network notebooks (05, 06) too: what differs for the network there
#: (Docker 26's rules on nftables beside labkit's) is what the network tests in GUEST_TESTS
#: check, in a quarter of the time. arm64 runs the first namespace notebook (its syscall
#: numbers).
GUEST_NOTEBOOK_TOPICS = r"cgroups|images|volumes|runtime|daemon"
ARM64_NOTEBOOK_TOPICS = r"namespaces"
BROWSER_NOTEBOOK = "00_why_containers"
READY_TIMEOUT = {"amd64": 1200, "arm64": 2400}
FINISH_TIMEOUT = {"amd64": 2400, "arm64": 4800}


def say(msg: str) -> None:
    print(f"[learner-vm {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def guest_tests(arch: str) -> list[str]:
    """GUEST_TESTS[arch], less the files this checkout does not have (yet)."""
    return [t for t in GUEST_TESTS[arch] if (REPO / t.split("::")[0]).exists()]


def guest_notebooks(arch: str) -> list[str]:
    """The notebooks the guest runs (GUEST_NOTEBOOK_TOPICS); on arm64 only the first
    namespace notebook, to keep its run short."""
    topics = ARM64_NOTEBOOK_TOPICS if arch == "arm64" else GUEST_NOTEBOOK_TOPICS
    names = sorted(
        p.stem for p in (REPO / "notebooks").glob("*.ipynb") if re.search(topics, p.stem)
    )
    return names[:1] if arch == "arm64" else names


def leakcheck(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "tests" / "leakcheck.py"), *args],
        capture_output=True,
        text=True,
    )


def snapshot_checkout(dest: Path) -> Path:
    """The checkout as the guest sees it (owned by vagrant, uid 1000, as a synced folder is)."""
    image.snapshot_repo(dest)
    dest.chmod(0o755)
    subprocess.run(["chown", "-R", "1000:1000", str(dest)], check=True)
    return dest


def wait_for(path: Path, machine: vm.VM, timeout: float, progress: Path) -> bool:
    """Wait for the guest to create ``path``; echo its progress lines meanwhile."""
    deadline = time.monotonic() + timeout
    shown = 0
    while time.monotonic() < deadline:
        if progress.exists():
            lines = progress.read_text(errors="replace").splitlines()
            for line in lines[shown:]:
                print(f"    {line}", flush=True)
            shown = len(lines)
        if path.exists():
            return True
        if not machine.running():
            return False
        time.sleep(1)
    return False


def read_facts(share: Path) -> dict:
    facts = {p.name.removeprefix("fact."): p.read_text().strip() for p in share.glob("fact.*")}
    steps = {}
    if (share / "steps.jsonl").exists():
        for line in (share / "steps.jsonl").read_text().splitlines():
            row = json.loads(line)
            steps[row["step"]] = row
    facts["steps"] = steps
    return facts


def pytest_outcome(log: Path) -> str:
    if not log.exists():
        return "(pytest did not run)"
    for line in reversed(log.read_text(errors="replace").splitlines()):
        if re.search(r"\b(passed|failed|error|no tests ran)\b", line) and " in " in line:
            return line.strip("= ")
    return "(no summary line)"


def judge(r: dict, arch: str) -> list[str]:
    """Every check of the learner's path; returns what failed, in words."""
    f = r.get("facts", {})
    steps = f.get("steps", {})
    bad = []

    def need(ok: bool, what: str) -> None:
        if not ok:
            bad.append(what)

    first = r.get("image", {}).get("first_boot", {}).get("steps", {}).get("provision", {})
    need(first.get("rc") == 0, f"the image's first provisioning (vagrant up): {first}")
    for name in ("provision", "leak-baseline", "doctor-json", "leak-check"):
        need(steps.get(name, {}).get("rc") == 0, f"guest step {name}: {steps.get(name)}")
    need(f.get("state") == "running", f"systemctl is-system-running: {f.get('state')} "
         f"(failed units: {r.get('failed_units')})")  # fmt: skip
    need(f.get("docker_active") == "active", f"docker.service: {f.get('docker_active')}")
    need(f.get("jupyter_active") == "active", f"labkit-jupyter: {f.get('jupyter_active')}")
    need('"version"' in f.get("jupyter_api", ""), f"JupyterLab /api: {f.get('jupyter_api')}")
    token = f.get("token_file", "")
    need(re.fullmatch(r"600 root [1-9]\d*", token) is not None, f"token file: {token}")
    need(f.get("cgroup_fs") == "cgroup2fs", f"/sys/fs/cgroup is {f.get('cgroup_fs')}")
    need({"init.scope", "system.slice"} <= set(f.get("cgroup_top", "").split()),
         f"systemd's cgroup hierarchy: {f.get('cgroup_top')}")  # fmt: skip
    need(f.get("cgroup_jupyter") == "/system.slice/labkit-jupyter.service",
         f"JupyterLab's cgroup: {f.get('cgroup_jupyter')}")  # fmt: skip
    need(re.match(r"26\.\S* systemd cgroup-v2", f.get("docker_info", "")) is not None,
         f"docker info: {f.get('docker_info')}")  # fmt: skip
    need(f.get("home_mode") == "700 vagrant", f"/home/vagrant: {f.get('home_mode')}")
    need("0.0.0.0:8888" in f.get("jupyter_listen", ""), f"JupyterLab listens on "
         f"{f.get('jupyter_listen')} (the Vagrantfile asks for 0.0.0.0)")  # fmt: skip
    need(r.get("kernel_display_name") == nbserver.KERNEL_DISPLAY_NAME,
         f"kernelspec 'labkit': {r.get('kernel_display_name')}")  # fmt: skip
    for nb in r.get("notebooks", []):
        need(nb["passed"], f"notebook {nb['path']}: {nb.get('error') or nb['cells'][-1:]}")
    if r.get("pytest_args"):
        need(steps.get("pytest", {}).get("rc") == 0, f"guest pytest: {r.get('pytest')}")
    fails = [c for c in r.get("doctor", []) if c.get("status") == "fail"]
    need(not fails and bool(r.get("doctor")), f"labkit doctor in the guest: {fails}")
    b = r.get("browser")
    if b is not None:
        if "error" in b:
            bad.append(f"browser: {b['error']}")
        else:
            ran = b["ran"]
            need(f"{BROWSER_NOTEBOOK}.ipynb" in ran["title"] + ran["tab"],
                 f"browser: title {ran['title']!r}, tab {ran['tab']!r}")  # fmt: skip
            kernel = ran["kernel"]
            need(kernel == nbserver.KERNEL_DISPLAY_NAME, f"browser kernel: {kernel!r}")
            need("exercises and hints in:" in ran["output"], f"browser output: {ran['output']!r}")
            need(not ran["dialog"], f"browser: a dialog is up: {ran['dialog']!r}")
            need(not ran["error_output"], "browser: the cell printed an error")
    need(r.get("qemu_exit") == 0, f"qemu exit {r.get('qemu_exit')} (guest did not power off)")
    need(r.get("host_leaks", "") == "", f"host leak check: {r.get('host_leaks')}")
    return bad


def run(args: argparse.Namespace) -> int:
    arch = args.arch
    t0 = time.monotonic()
    times: dict[str, float] = {}
    if args.if_cached and image.cached(arch) is None:
        say(f"no cached {arch} image (key {image.cache_key(arch)}): skipped; build it with "
            f"python tests/guest/image.py --arch {arch}")  # fmt: skip
        return 0
    out = Path(args.out or OUT / arch)
    shutil.rmtree(out, ignore_errors=True)
    share = out / "share"
    share.mkdir(parents=True)
    result: dict = {"arch": arch, "times": times}

    t = time.monotonic()
    image_dir = image.ensure(arch)
    result["image"] = json.loads((image_dir / "build.json").read_text())
    times["image"] = round(time.monotonic() - t, 1)

    baseline = out / "host-leak-baseline"
    if args.host_leakcheck and leakcheck("--save", str(baseline)).returncode != 0:
        say("could not take the host's leak baseline")
        return 2
    checkout = snapshot_checkout(Path(tempfile.mkdtemp(prefix="labkit-guest-checkout-")))
    (share / "provision-args").write_text(" ".join(image.provision_args()) + "\n")
    pytest_args = args.pytest if args.pytest is not None else guest_tests(arch) + ["--durations=10"]
    (share / "pytest-args").write_text(" ".join(pytest_args) + "\n")
    result["pytest_args"] = pytest_args
    port = vm.free_port()
    argv = vm.command(image_dir, arch, port, checkout, share, out / "console.log")
    (out / "qemu-command.txt").write_text(" ".join(argv) + "\n")
    say(f"booting {arch} (tcg), JupyterLab forwarded to 127.0.0.1:{port}; log in {out}")
    machine = vm.VM(argv, out / "qemu.log", image_dir.parent)
    try:
        ready = wait_for(share / "ready", machine, READY_TIMEOUT[arch], share / "progress")
        times["boot_to_ready"] = round(time.monotonic() - machine.started, 1)
        if not ready:
            say(f"the guest never got ready (console: {out / 'console.log'})")
            result["error"] = "guest never ready"
        else:
            host_side(result, share, port, arch, args, out, times)
            (share / "host-done").write_text("done\n")
        t = time.monotonic()
        wait_for(share / "fact.done_seconds", machine, FINISH_TIMEOUT[arch], share / "progress")
        result["qemu_exit"] = machine.wait(120)
        times["guest_tests_to_poweroff"] = round(time.monotonic() - t, 1)
    finally:
        machine.stop()
        shutil.rmtree(checkout, ignore_errors=True)
    times["vm_total"] = round(time.monotonic() - machine.started, 1)

    facts = read_facts(share)
    result["facts"] = facts
    result["failed_units"] = (share / "failed-units.txt").read_text().strip() if (
        share / "failed-units.txt").exists() else None  # fmt: skip
    result["pytest"] = pytest_outcome(share / "pytest.log")
    try:
        result["doctor"] = json.loads((share / "doctor.json").read_text())
    except (OSError, ValueError):
        result["doctor"] = []
    # Beside the host's tests (tests/run.sh), their own objects come and go meanwhile: the
    # host is checked by run.sh after both are done instead.
    leaks = leakcheck("--since", str(baseline)) if args.host_leakcheck else None
    result["host_leaks"] = leaks.stdout.strip() if leaks and leaks.returncode else ""
    times["total"] = round(time.monotonic() - t0, 1)
    result["problems"] = judge(result, arch)
    (out / "result.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    report(result, out)
    return 1 if result["problems"] else 0


def host_side(result, share, port, arch, args, out, times) -> None:
    """What the host does while the guest waits: the REST checks, the browser, notebooks."""
    base = f"http://127.0.0.1:{port}"
    server = nbserver.Server(base, (share / "token").read_text().strip())
    specs = server.kernelspecs()["kernelspecs"]
    result["kernel_display_name"] = specs.get("labkit", {}).get("spec", {}).get("display_name")
    if not args.no_browser:
        t = time.monotonic()
        url = f"{base}/lab/tree/work/{BROWSER_NOTEBOOK}.ipynb?token={server.token}"
        shot = out / "jupyterlab.png"
        try:
            result["browser"] = browser.open_and_run_first_cell(url, shot, out / "chromium.log")
            if args.docs_screenshot:
                DOCS_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(shot, DOCS_SCREENSHOT)
        except Exception as exc:  # noqa: BLE001 - reported as a failed check
            result["browser"] = {"error": f"{type(exc).__name__}: {exc}"}
        times["browser"] = round(time.monotonic() - t, 1)
        say(f"browser: {json.dumps(result['browser'])[:600]}")
    server.shutdown_all()
    result["notebooks"] = []
    names = args.notebooks.split(",") if args.notebooks is not None else guest_notebooks(arch)
    for name in filter(None, names):
        t = time.monotonic()
        say(f"notebook {name} through JupyterLab (kernel labkit)")
        try:
            nb = server.run_notebook(f"work/{name}.ipynb", log=say)
            row = {"path": nb.path, "kernel": nb.kernel, "passed": nb.passed,
                   "seconds": nb.seconds, "cells": [c.__dict__ for c in nb.cells]}  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - reported as a failed check
            row = {"path": name, "passed": False, "error": f"{type(exc).__name__}: {exc}",
                   "cells": []}  # fmt: skip
        times[f"notebook {name}"] = round(time.monotonic() - t, 1)
        result["notebooks"].append(row)
    server.shutdown_all()


def report(r: dict, out: Path) -> None:
    f = r.get("facts", {})
    say(f"{r['arch']}: {f.get('os')}, kernel {f.get('kernel')}, systemd state {f.get('state')}, "
        f"cgroup {f.get('cgroup_fs')} (delegated: {f.get('cgroup_delegated')}), docker "
        f"{f.get('docker_info')}")  # fmt: skip
    for name, row in f.get("steps", {}).items():
        say(f"  guest {name:<16} exit {row['rc']}  {row['seconds']:>7} s")
    for name, seconds in r["times"].items():
        say(f"  host  {name:<28} {seconds:>7} s")
    say(f"  guest pytest: {r.get('pytest')}")
    for p in r["problems"]:
        say(f"FAILED: {p}")
    verdict = "FAILED" if r["problems"] else "passed"
    say(f"{r['arch']} learner's VM {verdict}: {len(r['problems'])} problems; see {out}/result.json")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=sorted(image.KERNEL_PACKAGE), default=image.host_arch())
    parser.add_argument("--if-cached", action="store_true", help="skip if no cached image")
    parser.add_argument("--out", help=f"results directory (default {OUT}/ARCH)")
    parser.add_argument("--notebooks", help="comma-separated, run through JupyterLab")
    parser.add_argument("--no-browser", action="store_true")
    parser.add_argument(
        "--no-host-leakcheck",
        dest="host_leakcheck",
        action="store_false",
        help="leave the host's leak check to the caller (tests/run.sh runs the VM beside the "
        "host's tests and checks the host once both are done)",
    )
    parser.add_argument("--docs-screenshot", action="store_true", help=f"also {DOCS_SCREENSHOT}")
    parser.add_argument("pytest", nargs="*", default=None, help="pytest args for the guest")
    args = parser.parse_args(argv)
    if not args.pytest:
        args.pytest = None
    if os.geteuid() != 0:
        print("run.py: needs root", file=sys.stderr)
        return 2
    try:
        return run(args)
    except image.BuildError as err:
        print(f"run.py: the image could not be built: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

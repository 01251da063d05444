"""What a container gets from its caller, and what it can do to its image: nothing either way.

Each test here proves a defect found by trying ``labkit run`` as an attacker would is closed,
and each carries a positive control (the same probe succeeding where it should), so a probe
that silently stopped working would fail the test rather than pass it. Probes read canary
files the test planted, never the host's own secrets; terminal tests use a pty the test made.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import termios
from pathlib import Path

import pytest
from conftest import PYTHON, REPO, _env, wait_until

pytestmark = pytest.mark.usefixtures("needs_root")

#: The runs a defect must be closed in: Docker's default, a user namespace, no PID
#: namespace, chroot in a mount namespace, and the no-namespace teaching mode.
MODES = {
    "default": (),
    "userns": ("--ns", "user,uts,pid,mnt,ipc,net,cgroup"),
    "no-pid-ns": ("--ns", "uts,mnt,ipc,net"),
    "chroot": ("--isolation", "chroot"),
    "no-namespaces": ("--ns", "none", "--isolation", "chroot"),
}


@pytest.fixture
def canary(tmp_path: Path) -> tuple[Path, str]:
    """A directory holding a file with a random token: what a leaked descriptor would show."""
    token = f"labkit-canary-{secrets.token_hex(8)}"
    directory = tmp_path / "canary-dir"
    directory.mkdir()
    (directory / "canary").write_text(token + "\n")
    return directory, token


def _labkit(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [PYTHON, "-m", "labkit.cli", *args],
        cwd=REPO,
        env=_env(None),
        capture_output=True,
        text=True,
        timeout=60,
        **kw,
    )


# -- defect 1: the caller's descriptors --------------------------------------------------------


def _with_fd7(directory: Path, argv: list[str]) -> subprocess.Popen:
    """``argv`` started by a shell that opened ``directory`` as descriptor 7 (`exec 7<dir`)."""
    script = f'exec 7<"{directory}"; exec "$@"'
    return subprocess.Popen(
        ["bash", "-c", script, "bash", *argv],
        cwd=REPO,
        env=_env(None),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize("mode", MODES)
def test_the_callers_open_descriptors_do_not_reach_the_container(
    canary, tmp_path: Path, mode: str
) -> None:
    directory, token = canary
    cli = [PYTHON, "-m", "labkit.cli", "run", *MODES[mode]]
    # Positive control: a plain child of that shell does read the canary through fd 7.
    control = _with_fd7(directory, ["cat", "/proc/self/fd/7/canary"]).communicate(timeout=30)
    assert control[0].strip() == token
    out, err = _with_fd7(directory, [*cli, "--", "cat", "/proc/self/fd/7/canary"]).communicate(
        timeout=60
    )
    assert token not in out + err
    # The container's descriptor table, read from the host while it runs.
    pid_file = tmp_path / "pid"
    proc = _with_fd7(directory, [*cli, "--pid-file", str(pid_file), "--", "sleep", "1000"])
    try:
        assert wait_until(lambda: pid_file.exists() or proc.poll() is not None, timeout=30)
        pid = int(pid_file.read_text())
        assert sorted(os.listdir(f"/proc/{pid}/fd"), key=int) == ["0", "1", "2"]
    finally:
        if pid_file.exists():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid_file.read_text()), signal.SIGKILL)
        proc.communicate(timeout=30)


@pytest.mark.parametrize("mode", ["default", "userns", "no-namespaces"])
def test_stdin_is_dev_null_unless_interactive(canary, mode: str) -> None:
    directory, token = canary
    # (the no-namespace mode has no /proc inside: there only the content can tell)
    script = "readlink /proc/self/fd/0 2>/dev/null; cat"
    with open(directory / "canary") as stdin:
        done = _labkit("run", *MODES[mode], "--", "sh", "-c", script, stdin=stdin)
    with open(directory / "canary") as stdin:
        interactive = _labkit("run", "-i", *MODES[mode], "--", "sh", "-c", script, stdin=stdin)
    assert token not in done.stdout
    assert interactive.stdout.splitlines()[-1] == token, "with -i, what is piped in arrives"
    if mode != "no-namespaces":
        assert done.stdout.splitlines() == ["/dev/null"]
        assert interactive.stdout.splitlines()[0].startswith("pipe:"), "with -i, a pipe"


def test_stdout_and_stderr_are_pipes_of_the_supervisor() -> None:
    done = _labkit("run", "--", "sh", "-c", "readlink /proc/self/fd/1; readlink /proc/self/fd/2")
    assert [line.split(":")[0] for line in done.stdout.splitlines()] == ["pipe", "pipe"]


# -- defect 2: the caller's terminal and session -------------------------------------------------

_TIOCSTI = r"""
for my $f ("/proc/self/fd/0", "/dev/tty") {
    if (open(my $t, "+<", $f)) {
        my $c = "%s\n";
        my $ok = 1;
        for my $ch (split //, $c) { $ok &&= ioctl($t, 0x5412, $ch); }
        print "$f: ", ($ok ? "injected" : "refused: $!"), "\n";
    } else {
        print "$f: cannot open: $!\n";
    }
}
"""


def _in_a_terminal(argv: list[str]) -> tuple[str, bytes]:
    """Run ``argv`` with a pty of ours as its controlling terminal; return its output and
    whatever ended up queued as *input* on that terminal (what the caller's shell would read)."""
    master, slave = os.openpty()
    try:
        done = subprocess.run(
            ["setsid", "--ctty", *argv],
            stdin=slave,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env=_env(None),
            timeout=60,
        )
        attrs = termios.tcgetattr(slave)
        attrs[3] &= ~termios.ICANON  # read what is queued without waiting for a whole line
        termios.tcsetattr(slave, termios.TCSANOW, attrs)
        os.set_blocking(slave, False)
        try:
            queued = os.read(slave, 4096)
        except BlockingIOError:
            queued = b""
        return done.stdout.decode(errors="replace"), queued
    finally:
        os.close(master)
        os.close(slave)


def test_a_container_cannot_type_into_the_callers_terminal(busybox_rootfs: Path) -> None:
    token = f"labkit-tiocsti-{secrets.token_hex(4)}"
    probe = ["perl", "-e", _TIOCSTI % token]
    # Positive control: the same probe, run directly, does inject into our pty.
    control_out, control_queued = _in_a_terminal(probe)
    assert token.encode() in control_queued, control_out
    out, queued = _in_a_terminal(
        [PYTHON, "-m", "labkit.cli", "run", "--image", "debian", "--", *probe]
    )
    assert token.encode() not in queued, f"the container typed into our terminal: {out}"
    assert "/proc/self/fd/0: refused" in out  # /dev/null is no terminal
    assert "/dev/tty: cannot open" in out  # no controlling terminal: a session of its own


def test_the_container_has_a_session_and_no_terminal_of_its_own(lab) -> None:
    with lab.background("sleep", "1000") as bg:
        fields = Path(f"/proc/{bg.pid}/stat").read_text().rsplit(")", 1)[1].split()
        session, tty_nr = int(fields[3]), int(fields[4])
        assert session == bg.pid, "PID 1 leads a session of its own"
        assert tty_nr == 0, "and has no controlling terminal"
        assert session != os.getsid(0)


def test_t_gives_the_container_a_pty_from_its_own_devpts() -> None:
    done = _labkit("run", "-t", "--", "sh", "-c", "tty; readlink /proc/self/fd/1; echo $TERM")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["/dev/pts/0", "/dev/pts/0", "xterm"]


def test_it_needs_a_terminal_on_stdin() -> None:
    done = _labkit("run", "-it", "--", "true", stdin=subprocess.DEVNULL)
    assert done.returncode == 125
    assert done.stderr.startswith("labkit: the input device is not a TTY (fix: leave out -t")


def test_it_relays_keys_both_ways() -> None:
    """-it from a real (test-made) terminal: keys in, output out, terminal settings restored."""
    master, slave = os.openpty()
    before = termios.tcgetattr(slave)
    proc = subprocess.Popen(
        ["setsid", "--ctty", PYTHON, "-m", "labkit.cli", "run", "-it", "--", "sh", "-c",
         "read line; echo got:$line; tty"],
        stdin=slave, stdout=slave, stderr=slave, cwd=REPO, env=_env(None),
    )  # fmt: skip
    try:
        output = b""
        os.set_blocking(master, False)
        sent = False
        while proc.poll() is None or not output.endswith(b"\n"):
            with contextlib.suppress(BlockingIOError, OSError):
                output += os.read(master, 4096)
            if not sent and proc.poll() is None:
                import time

                time.sleep(0.5)
                os.write(master, b"hello\r")
                sent = True
            if proc.poll() is not None and b"/dev/pts/0" in output:
                break
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        after = termios.tcgetattr(slave)
        os.close(master)
        os.close(slave)
    assert b"got:hello" in output and b"/dev/pts/0" in output
    assert after == before, "the caller's terminal settings were not restored"


# -- defect 3: a container never changes its image --------------------------------------------


def _tree(root: Path) -> dict[str, tuple]:
    """Every path in a rootfs with its type, size and mode, to prove a run changed nothing."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            st = os.lstat(os.path.join(dirpath, name))
            found[os.path.relpath(os.path.join(dirpath, name), root)] = (
                st.st_mode,
                st.st_size,
                st.st_mtime_ns,
            )
    return found


@pytest.mark.parametrize("mode", MODES)
def test_a_container_cannot_change_its_image(busybox_rootfs: Path, mode: str) -> None:
    before = _tree(busybox_rootfs)
    script = (
        "echo x > /etc/labkit-mark; mkdir /labkit-newdir; rm -f /bin/ls; "
        "echo y > /tmp/scratch && echo tmp-writable; ls /etc/labkit-mark 2>/dev/null; true"
    )
    done = _labkit("run", *MODES[mode], "--", "sh", "-c", script)
    assert done.returncode == 0, done.stderr
    assert _tree(busybox_rootfs) == before, f"the image changed in mode {mode}"
    again = _labkit("run", *MODES[mode], "--", "sh", "-c", "cat /etc/labkit-mark; ls /tmp")
    assert "x" not in again.stdout.split()
    assert "scratch" not in again.stdout
    # The container's writes land in its own layer (overlayfs upper), which it sees and the
    # next container does not. In a user namespace the image's files belong to host root,
    # which is nobody in there: writes to /etc are refused.
    assert "tmp-writable" in done.stdout
    assert ("/etc/labkit-mark" in done.stdout) == (mode != "userns"), (done.stdout, done.stderr)


def test_the_no_namespace_mode_runs_on_a_throwaway_copy(busybox_rootfs: Path) -> None:
    """Without a mount namespace nothing can be made read-only: the container gets a copy."""
    done = _labkit(
        *("run", *MODES["no-namespaces"]), "--", "sh", "-c", "echo x > /etc/m; cat /etc/m"
    )
    assert done.stdout == "x\n" and not (busybox_rootfs / "etc/m").exists()


def test_the_throwaway_copy_makes_device_nodes_again_instead_of_reading_them(
    rootfs_copy: Path, tmp_path: Path
) -> None:
    """An image with /dev/full in it (debootstrap makes one): copying it as a file would
    write zeros until the disk is full. The copy has the node, and the run ends."""
    full = os.stat("/dev/full")
    os.mknod(rootfs_copy / "dev" / "full", full.st_mode, full.st_rdev)
    state = tmp_path / "state"  # a state directory whose "debian" image is that rootfs
    (state / "images" / "debian").mkdir(parents=True)
    rootfs_copy.rename(state / "images" / "debian" / "rootfs")
    (state / "images" / "debian" / "image.json").write_text('{"created": "now"}')
    done = subprocess.run(
        [PYTHON, "-m", "labkit.cli", "run", "--image", "debian", *MODES["no-namespaces"],
         "--", "ls", "-l", "/dev/full"],
        cwd=REPO, env=_env({"LABKIT_STATE_DIR": str(state)}), capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("c") and "1,   7" in done.stdout, done.stdout


def test_the_chroot_escape_still_works_where_it_should(busybox_rootfs: Path) -> None:
    """The teaching mode notebook 01 relies on: it needs a writable place for its hideout."""
    escaped = _labkit(
        *("run", *MODES["no-namespaces"]), "--try-escape", "--", "cat", "/etc/os-release"
    )
    assert "labkit busybox" not in escaped.stdout, escaped.stderr
    pivoted = _labkit("run", "--try-escape", "--", "cat", "/etc/os-release")
    assert "labkit busybox" in pivoted.stdout, pivoted.stderr
    assert not (busybox_rootfs / "tmp/labkit-escape").exists()


# -- defect 7: groups and umask ----------------------------------------------------------------

_IDENTITY = "grep -E '^(Groups|Umask)' /proc/self/status; umask"


def test_groups_and_umask_are_the_images_not_the_callers() -> None:
    done = subprocess.run(
        ["setpriv", "--groups", "4,27", "sh", "-c",
         f"umask 077; exec {PYTHON} -m labkit.cli run -- sh -c \"{_IDENTITY}\""],
        cwd=REPO, env=_env(None), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = [" ".join(line.split()) for line in done.stdout.splitlines()]
    assert lines == ["Umask: 0022", "Groups: 0", "0022"], lines


def test_groups_and_umask_match_docker() -> None:
    from labkit import docker

    ours = _labkit("run", "--", "sh", "-c", _IDENTITY).stdout
    theirs = docker.run("run", "--rm", "labkit/busybox", "sh", "-c", _IDENTITY).stdout
    assert ours.split() == theirs.split()

"""Images run as Docker runs them: a layer of the container's own, the image's config.

Against the real kernel and the real Docker (20.10) on this host: labkit's busybox image is
imported into Docker, an image with a config (Env, Entrypoint, Cmd, WorkingDir, User, a
whiteout and an opaque directory in its top layer) is made with ``docker commit`` and
``docker save``, loaded into a labkit state directory of the test's own, and the same
command is run under both.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import PYTHON, REPO, _env, wait_until

from labkit import docker

pytestmark = pytest.mark.usefixtures("needs_root")

#: What a container shows of who and where it is, the same way under both runtimes.
PROBE = (
    'id; pwd; echo "X=$X HOME=$HOME"; grep -E "^(Groups|CapEff)" /proc/self/status; umask; '
    "ls /usr/sbin; ls /bin/ls 2>&1 | sed 's/^ls: //'"
)


def _labkit(*args: str, env: dict[str, str] | None = None, timeout: float = 60):
    return subprocess.run(
        [PYTHON, "-m", "labkit.cli", *args],
        cwd=REPO, env=_env(env), capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def _tree(root: Path) -> dict[str, tuple]:
    """Every entry under ``root``: type and mode, owner, size, mtime, and the bytes of
    files (a digest) and links: a run that changed anything at all shows here."""
    found = {}
    for top, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(top, name)
            st = os.lstat(path)
            content = ""
            if os.path.islink(path):
                content = os.readlink(path)
            elif os.path.isfile(path):
                content = hashlib.sha256(Path(path).read_bytes()).hexdigest()
            found[os.path.relpath(path, root)] = (
                st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns, content,
            )  # fmt: skip
    return found


@pytest.fixture(scope="module")
def docker_busybox() -> str:
    """labkit's busybox image in Docker (``labkit images docker-import``): the same files."""
    return docker.import_image("busybox")


@pytest.fixture(scope="module")
def config_image(
    docker_busybox: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, dict[str, str]]]:
    """An image with a config and a second layer, in Docker and in a labkit state dir of
    its own (loaded from ``docker save``); yields its name and that state's environment."""
    tmp = tmp_path_factory.mktemp("config-image")
    tag = f"labkit/test-config-{secrets.token_hex(4)}:1"
    box = f"labkit-test-commit-{secrets.token_hex(4)}"
    script = (
        "echo 'app:x:1000:1000:app:/home/app:/bin/sh' >> /etc/passwd; "
        "printf 'app:x:1000:\\nstaff:x:50:app,nobody\\n' >> /etc/group; "
        "rm /bin/ls; rm -r /usr/sbin; mkdir /usr/sbin; echo n > /usr/sbin/new"
    )
    docker.run("run", "--name", box, docker_busybox, "sh", "-c", script)
    try:
        changes = ["ENV X=1", "WORKDIR /w", "USER app", 'ENTRYPOINT ["echo"]', 'CMD ["hello"]']
        docker.run("commit", *(a for c in changes for a in ("-c", c)), box, tag)
    finally:
        docker.run("rm", "-f", box, check=False)
    try:
        archive = tmp / "image.tar"
        docker.run("save", "-o", str(archive), tag)
        env = {"LABKIT_STATE_DIR": str(tmp / "state")}
        load = (
            "import sys; from labkit.images import archive; "
            "print(archive.load(open(sys.argv[1], 'rb')))"
        )
        done = subprocess.run(
            [PYTHON, "-c", load, str(archive)], cwd=REPO, env=_env(env),
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        yield tag, env
    finally:
        docker.run("rmi", "-f", tag, check=False)


def _compare(image: str, env: dict[str, str], flags: tuple[str, ...], command: list[str]):
    """``run FLAGS IMAGE COMMAND`` under labkit and under ``docker run --rm``."""
    ours = _labkit("run", *flags, image, *command, env=env)
    theirs = docker.run("run", "--rm", *flags, image, *command, check=False)
    return ours, theirs


@pytest.mark.parametrize(
    ("flags", "command"),
    [
        pytest.param((), [], id="entrypoint-and-cmd"),
        pytest.param((), ["a", "b"], id="command-replaces-cmd"),
        pytest.param(("--entrypoint", "sh"), ["-c", PROBE], id="image-user-env-workdir"),
        pytest.param(("--entrypoint", "sh", "-u", "0"), ["-c", PROBE], id="uid-0"),
        pytest.param(("--entrypoint", "sh", "-u", "nobody"), ["-c", PROBE], id="name"),
        pytest.param(("--entrypoint", "sh", "-u", "app:staff"), ["-c", PROBE], id="name-group"),
        pytest.param(("--entrypoint", "sh", "-u", "1234:50"), ["-c", PROBE], id="uid-gid"),
        pytest.param(("--entrypoint", "sh", "-u", "65534"), ["-c", PROBE], id="uid-in-passwd"),
        pytest.param(
            ("--entrypoint", "sh", "-w", "/made/here", "-e", "X=2"), ["-c", PROBE], id="flags"
        ),
        pytest.param(("--entrypoint", ""), ["sh", "-c", PROBE], id="no-entrypoint"),
    ],
)
def test_the_image_config_applies_as_under_docker(config_image, flags, command) -> None:
    image, env = config_image
    ours, theirs = _compare(image, env, flags, command)
    assert (ours.returncode, ours.stdout) == (theirs.returncode, theirs.stdout), ours.stderr
    assert ours.returncode == 0, ours.stderr


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (("-u", "nosuch"), "unable to find user nosuch: no matching entries in passwd file"),
        (("-u", "app:nosuch"), "unable to find group nosuch: no matching entries in group file"),
        (("--entrypoint", ""), "No command specified"),
    ],
)
def test_a_user_or_command_that_cannot_be_is_refused_as_docker_does(
    config_image, flags, words
) -> None:
    image, env = config_image
    ours, theirs = _compare(image, env, flags, [])
    assert ours.returncode == theirs.returncode == 125
    assert words in ours.stderr and words in theirs.stderr
    assert not list((Path(env["LABKIT_STATE_DIR"]) / "containers").glob("[0-9a-f]*"))


def test_the_environment_is_the_image_s_under_the_flags(config_image) -> None:
    image, env = config_image
    script = ["-c", "env | grep -v ^HOSTNAME= | sort"]
    for flags in ((), ("-e", "X=2", "-e", "Y=3", "-u", "0", "-t")):
        ours, theirs = _compare(image, env, ("--entrypoint", "sh", *flags), script)
        assert ours.stdout == theirs.stdout and ours.returncode == 0, ours.stderr


def test_an_image_from_the_store_runs_in_a_user_namespace(busybox_rootfs: Path) -> None:
    """With --ns user the namespace's root (host uid 100000) mounts the overlay: it must be
    able to walk into the layer store, which host users cannot (mode 0710, its group).
    (The state dir is under /var/tmp: pytest's own tmp dirs are 0700, unlike /var/lib.)"""
    state = Path(tempfile.mkdtemp(prefix="test-userns-state-", dir="/var/tmp"))
    try:
        state.chmod(0o755)
        (state / "images").mkdir()
        shutil.copytree(busybox_rootfs.parent, state / "images" / "busybox", symlinks=True)
        env = {"LABKIT_STATE_DIR": str(state)}
        assert _labkit("tag", "busybox", "local/userns:1", env=env).returncode == 0
        layers = state / "layers"
        assert oct(layers.stat().st_mode & 0o777) == "0o710" and layers.stat().st_gid == 100000
        done = _labkit(
            "run", "--ns", "all", "local/userns:1", "sh", "-c",
            "echo mine > /file && cat /file && cat /proc/self/uid_map", env=env,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert done.stdout.split()[:4] == ["mine", "0", "100000", "65536"], done.stdout
    finally:
        shutil.rmtree(state)


def test_the_top_layer_s_whiteout_and_opaque_directory_hide_what_is_below(config_image) -> None:
    """Without a mount namespace the container runs on a flattened copy: the same view."""
    image, env = config_image
    command = ["--entrypoint", "sh", "-u", "0", image, "-c", "ls /usr/sbin; ls /bin/ls"]
    for flags in ((), ("--ns", "none", "--isolation", "chroot")):
        done = _labkit("run", *flags, *command, env=env)
        assert done.stdout == "new\n" and "/bin/ls: No such file" in done.stderr, done


# -- a layer of each container's own ----------------------------------------------------------


def _background(*args: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    """``labkit run --name N ARGS`` left running; (its supervisor, N)."""
    name = f"labkit-test-{secrets.token_hex(4)}"
    proc = subprocess.Popen(
        [PYTHON, "-m", "labkit.cli", "run", "--name", name, *args],
        cwd=REPO, env=_env(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    return proc, name


def _container_pid(name: str) -> int | None:
    from labkit.runtime import records

    try:
        return records.find(name).pid
    except Exception:
        return None


def _stop(proc: subprocess.Popen, name: str) -> None:
    pid = _container_pid(name)
    if pid is not None:
        os.kill(pid, signal.SIGKILL)
    proc.communicate(timeout=30)


CHANGES = (
    "echo x > /etc/x; rm /bin/ls; mkdir -p /newd/sub; echo >> /etc/passwd; "
    "rm -r /usr/sbin; mkdir /usr/sbin; ln -s /x /lnk; mv /etc/group /etc/group2; touch /tmp/t"
)


def _wait_ready(proc: subprocess.Popen, name: str) -> int:
    assert wait_until(
        lambda: (
            (pid := _container_pid(name)) is not None and Path(f"/proc/{pid}/root/ready").exists()
        ),
        timeout=30,
    ), proc.stderr
    pid = _container_pid(name)
    assert pid is not None
    return pid


def test_two_containers_of_one_image_see_only_their_own_changes(busybox_rootfs: Path) -> None:
    before = _tree(busybox_rootfs)
    proc, name = _background(
        "busybox", "sh", "-c", f"{CHANGES}; echo a > /etc/a; touch /ready; exec sleep 1000"
    )
    try:
        pid = _wait_ready(proc, name)
        other = _labkit(
            "run", "busybox", "sh", "-c",
            "echo b > /etc/b; ls /etc/a /etc/x /lnk 2>&1; ls /bin/ls /usr/sbin | head -3",
        )  # fmt: skip
        assert "/etc/a: No such file" in other.stdout and "/etc/x: No such file" in other.stdout
        assert "/bin/ls\n" in other.stdout and other.returncode == 0
        root = Path(f"/proc/{pid}/root")
        assert (root / "etc/a").read_text() == "a\n" and not (root / "etc/b").exists()
        assert sorted(os.listdir(root / "usr/sbin")) == []
        layer = _layer_dir(name)
        assert (layer / "upper/etc/a").read_text() == "a\n"
        assert str(layer) not in Path("/proc/self/mountinfo").read_text(), "a mount on the host"
    finally:
        _stop(proc, name)
    assert _tree(busybox_rootfs) == before, "the image changed"
    assert not layer.exists(), "the container's layer outlived its record"


def _layer_dir(name: str) -> Path:
    from labkit.runtime import records

    return records.find(name).directory


def test_labkit_diff_equals_docker_diff(docker_busybox: str) -> None:
    script = f"{CHANGES}; mkdir -p /w/x; touch /ready"
    box = f"labkit-test-diff-{secrets.token_hex(4)}"
    docker.run("run", "--name", box, "-w", "/w/x", docker_busybox, "sh", "-c", script)
    try:
        theirs = docker.run("diff", box).stdout
    finally:
        docker.run("rm", "-f", box, check=False)
    proc, name = _background("-w", "/w/x", "busybox", "sh", "-c", f"{script}; exec sleep 1000")
    try:
        _wait_ready(proc, name)
        ours = _labkit("diff", name)
    finally:
        _stop(proc, name)
    assert ours.returncode == 0, ours.stderr
    # Docker prints the top level in no fixed order; labkit parents first, names in order
    assert ours.stdout == "".join(
        sorted(theirs.splitlines(True), key=lambda x: x[2:].rstrip().split("/"))
    )


def test_diff_of_a_container_without_a_layer_says_why(rootfs_copy: Path) -> None:
    proc, name = _background(
        "--rootfs", str(rootfs_copy), "--", "sh", "-c", "touch /ready; exec sleep 1000"
    )
    try:
        _wait_ready(proc, name)
        done = _labkit("diff", name)
    finally:
        _stop(proc, name)
    assert done.returncode == 125 and "has no layer of its own" in done.stderr


def test_read_only_refuses_writes_and_keeps_tmp(busybox_rootfs: Path) -> None:
    done = _labkit(
        "run", "--read-only", "busybox", "sh", "-c", "echo x > /tmp/t && cat /tmp/t; : > /etc/x"
    )
    assert done.returncode == 1 and done.stdout == "x\n"
    assert "Read-only file system" in done.stderr
    assert not (busybox_rootfs / "etc/x").exists()


def test_a_killed_supervisor_leaves_no_mount_and_reset_removes_the_layer(tmp_path: Path) -> None:
    """The overlay lives only in the container's mount namespace: the host never has it.
    A supervisor killed mid-run leaves a record and a layer, which reset removes."""
    state = tmp_path / "state"
    images = state / "images"
    images.mkdir(parents=True)
    from labkit import paths

    (images / "busybox").symlink_to(paths.IMAGES_DIR / "busybox")
    env = {"LABKIT_STATE_DIR": str(state), "LABKIT_RUN_DIR": str(tmp_path / "run")}
    proc, name = _background("busybox", "sh", "-c", "echo x > /etc/x; exec sleep 1000", env=env)
    try:
        assert wait_until(lambda: list(state.glob("containers/*/upper/etc/x")), timeout=30)
        proc.kill()  # the supervisor; the container runs on, re-parented
        proc.communicate(timeout=30)
        assert str(state) not in Path("/proc/self/mountinfo").read_text()
        done = _labkit("reset", env=env)
        assert done.returncode == 0, done.stderr
        assert not list(state.glob("containers/[0-9a-f]*")), "reset left a container's layer"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=30)


# -- the command line --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("busybox", "echo", "hi"),
        ("--image", "busybox", "--", "echo", "hi"),
        ("--image", "busybox", "echo", "hi"),
        ("--", "echo", "hi"),
        ("-e", "A=1", "busybox", "echo", "hi"),
    ],
)
def test_run_takes_the_image_as_docker_does_and_the_old_spellings(args) -> None:
    done = _labkit("run", *args)
    assert (done.returncode, done.stdout) == (0, "hi\n"), done.stderr


def test_run_without_an_image_says_how() -> None:
    done = _labkit("run")
    assert done.returncode == 125 and "requires at least 1 argument" in done.stderr


def test_an_image_without_mount_points_gets_them_in_a_layer_of_the_container_s(
    tmp_path: Path, busybox_rootfs: Path
) -> None:
    """An image of one file (``docker import``): /proc, /sys and /dev are made in the
    container's init layer (Docker's "-init" layer), never in the image, and `diff` omits them."""
    (tmp_path / "tree/bin").mkdir(parents=True)
    (tmp_path / "tree/bin/busybox").write_bytes((busybox_rootfs / "bin/busybox").read_bytes())
    (tmp_path / "tree/bin/busybox").chmod(0o755)
    tag = f"labkit/test-bare-{secrets.token_hex(4)}:1"
    tar = subprocess.Popen(
        ["tar", "-C", str(tmp_path / "tree"), "-cf", "-", "."], stdout=subprocess.PIPE
    )
    try:
        docker.run("import", "-", tag, stdin=tar.stdout)
        docker.run("save", "-o", str(tmp_path / "bare.tar"), tag)
    finally:
        assert tar.stdout is not None
        tar.stdout.close()
        tar.wait()
        docker.run("rmi", "-f", tag, check=False)
    env = {"LABKIT_STATE_DIR": str(tmp_path / "state")}
    load = "import sys; from labkit.images import archive; archive.load(open(sys.argv[1], 'rb'))"
    subprocess.run(
        [PYTHON, "-c", load, str(tmp_path / "bare.tar")], cwd=REPO, env=_env(env), check=True
    )
    script = "/bin/busybox ls / && /bin/busybox touch /ready && exec /bin/busybox sleep 1000"
    proc, name = _background(tag, "/bin/busybox", "sh", "-c", script, env=env)
    try:
        assert wait_until(
            lambda: list((tmp_path / "state").glob("containers/*/upper/ready")), timeout=30
        )
        diff = _labkit("diff", name, env=env)
    finally:
        for record in (tmp_path / "state").glob("containers/*/record.json"):
            os.kill(json.loads(record.read_text())["process"][0], signal.SIGKILL)
        out, _ = proc.communicate(timeout=30)
    # etc/ holds the empty hosts, resolv.conf and hostname the network's files are bound
    # over: Docker's init layer has them too (`docker run` of this image lists the same five)
    assert out.split() == ["bin", "dev", "etc", "proc", "sys"], out
    assert diff.stdout == "A /ready\n", diff.stderr

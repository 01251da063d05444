"""Learners' answers for every exercise, as test data: typical wrong ones (with the reason the
checker must give) and right ones other than the reference solution.

``tests/test_lab_exercises.py`` feeds them all to the checkers; ``tests/test_notebooks.py``
pastes ``VARIANT_WRONG[notebook]`` into that notebook to run it as a learner who got one
exercise wrong. A new exercise needs at least three wrong answers here, or its test fails.
"""

from __future__ import annotations

from typing import NamedTuple


class Answer(NamedTuple):
    reason: str  # what the checker must say: "ok", or the reason key of the mistake
    source: str  # the learner's cell (function and code exercises) or a value


ANSWERS: dict[str, list[Answer]] = {
    "00-image-size": [
        Answer(
            "follows-links",
            """\
def image_size(path):
    total = 0
    for root, dirs, files in os.walk(path):
        for name in files:
            p = os.path.join(root, name)
            if os.path.exists(p):
                total += os.path.getsize(p)
    return total
""",
        ),
        Answer(
            "dangling-link",
            """\
def image_size(path):
    total = 0
    for root, dirs, files in os.walk(path):
        for name in files:
            total += os.path.getsize(os.path.join(root, name))
    return total
""",
        ),
        Answer(
            "counted-directories",
            """\
def image_size(path):
    total = 0
    for root, dirs, files in os.walk(path):
        for name in files + dirs:
            total += os.lstat(os.path.join(root, name)).st_size
    return total
""",
        ),
        Answer(
            "in-kib",
            """\
def image_size(path):
    sizes = [os.lstat(os.path.join(r, f)).st_size for r, _, fs in os.walk(path) for f in fs]
    return sum(sizes) / 1024
""",
        ),
        Answer(
            "counted-files",
            """\
def image_size(path):
    return sum(len(files) for _, _, files in os.walk(path))
""",
        ),
        Answer(
            "not-recursive",
            """\
def image_size(path):
    names = [os.path.join(path, n) for n in os.listdir(path)]
    return sum(os.lstat(p).st_size for p in names if not os.path.isdir(p))
""",
        ),
        Answer(
            "returned-none",
            """\
def image_size(path):
    total = 0
    for root, dirs, files in os.walk(path):
        total += sum(os.lstat(os.path.join(root, f)).st_size for f in files)
""",
        ),
        Answer(
            "ok",
            """\
def image_size(path):
    paths = Path(path).rglob("*")
    return sum(p.lstat().st_size for p in paths if p.is_symlink() or not p.is_dir())
""",
        ),
    ],
    "00-start-seconds": [
        Answer(
            "milliseconds",
            """\
def start_seconds(argv):
    start = time.perf_counter()
    subprocess.run(argv)
    return (time.perf_counter() - start) * 1000
""",
        ),
        Answer(
            "no-wait",
            """\
def start_seconds(argv):
    start = time.perf_counter()
    subprocess.Popen(argv)
    return time.perf_counter() - start
""",
        ),
        Answer(
            "cpu-time",
            """\
def start_seconds(argv):
    start = time.process_time()
    subprocess.run(argv)
    return time.process_time() - start
""",
        ),
        Answer(
            "did-not-run",
            """\
def start_seconds(argv):
    start = time.perf_counter()
    subprocess.run(argv, shell=True)
    return time.perf_counter() - start
""",
        ),
        Answer(
            "raised",
            """\
def start_seconds(argv):
    start = time.perf_counter()
    subprocess.run(" ".join(argv))
    return time.perf_counter() - start
""",
        ),
        Answer(
            "ok",
            """\
def start_seconds(argv):
    before = time.time()
    proc = subprocess.Popen(argv)
    proc.wait()
    return time.time() - before
""",
        ),
    ],
    "00-by-hand": [
        Answer("host-files", 'print(open("/etc/os-release").read(), os.uname().release)\n'),
        Answer(
            "host-files",
            'text = open("/etc/os-release").read()\nos.chroot(BUSYBOX)\nprint(text)\n',
        ),
        Answer(
            "wrong-root",
            'os.chroot(os.path.dirname(BUSYBOX))\nprint(open("/etc/os-release").read())\n',
        ),
        Answer(
            "read-through-host", 'print(open(BUSYBOX + "/etc/os-release").read(), os.uname())\n'
        ),
        Answer("no-release", 'os.chroot(BUSYBOX)\nprint(open("/etc/os-release").read())\n'),
        Answer("name", 'os.chroot(busybox)\nprint(open("/etc/os-release").read())\n'),
        Answer("syntax", 'os.chroot(BUSYBOX\nprint(open("/etc/os-release").read())\n'),
        Answer(
            "ok",  # chroot(8) in a child of the child: a process still sees the image as /
            'subprocess.run(["chroot", BUSYBOX, "sh", "-c", "cat /etc/os-release; uname -r"])\n',
        ),
        Answer(
            "ok",  # exec after chroot: nothing of the cell's Python is left, the output says it
            'os.chroot(BUSYBOX)\nos.chdir("/")\n'
            'os.execv("/bin/sh", ["sh", "-c", "cat /etc/os-release; uname -r"])\n',
        ),
    ],
}

#: Per notebook, the exercise whose wrong answer the "wrong" variant uses: (id, index above).
VARIANT_WRONG: dict[str, tuple[str, int]] = {
    "00_why_containers": ("00-image-size", 0),
}

# -- notebook 01 (chroot) ------------------------------------------------------------------------

ANSWERS["01-run-chrooted"] = [
    Answer("not-chrooted", "subprocess.run(COMMAND)\n"),
    Answer("cwd-outside", "os.chroot(ROOTFS)\nsubprocess.run(COMMAND)\n"),
    Answer("cwd-outside", "os.chroot(ROOTFS)\nos.execvp(COMMAND[0], COMMAND)\n"),
    Answer(
        "not-chrooted",  # the host's sh, started in the image's directory: ls looks right
        "subprocess.run(COMMAND, cwd=ROOTFS)\n",
    ),
    Answer(
        "wrong-root",
        "os.chroot(os.path.dirname(ROOTFS))\nos.chdir('/')\nsubprocess.run(COMMAND)\n",
    ),
    Answer("host-path", "os.chroot(ROOTFS)\nos.chdir(ROOTFS)\nsubprocess.run(COMMAND)\n"),
    Answer("host-path", "os.chroot(ROOTFS)\nsubprocess.run(COMMAND, cwd=ROOTFS)\n"),
    Answer(
        "did-not-run", "os.chroot(ROOTFS)\nos.chdir('/')\nprint(open('/etc/os-release').read())\n"
    ),
    Answer("import", "os.chroot(ROOTFS)\nos.chdir('/')\nimport tarfile\nsubprocess.run(COMMAND)\n"),
    Answer("name", "os.chroot(rootfs)\nos.chdir('/')\nsubprocess.run(COMMAND)\n"),
    Answer(
        "ok",  # chroot(8) does chroot and chdir("/") in a child of the cell's process
        "subprocess.run(['chroot', ROOTFS, *COMMAND])\n",
    ),
    Answer(
        "ok",  # into the directory first, then chroot("."): the cwd is the new root
        "os.chdir(ROOTFS)\nos.chroot('.')\nos.execvp(COMMAND[0], COMMAND)\n",
    ),
    Answer(
        "ok",  # in the child only, between fork and exec
        "def enter():\n    os.chroot(ROOTFS)\n    os.chdir('/')\n\n"
        "subprocess.run(COMMAND, preexec_fn=enter)\n",
    ),
]

_CLIMB = "for _ in range(100):\n    os.chdir('..')\n"
_PRINT = "print(open('/etc/os-release').readline())\n"

ANSWERS["01-escape"] = [
    Answer("stopped-at-root", _CLIMB + "os.chroot('.')\n" + _PRINT),
    Answer("stopped-at-root", "os.chroot('/..')\n" + _PRINT),
    Answer(
        "entered-hideout",
        "os.makedirs('hideout', exist_ok=True)\nos.chroot('hideout')\nos.chdir('/')\n"
        + _CLIMB
        + "os.chroot('.')\n"
        + _PRINT,
    ),
    Answer(
        "no-final-chroot",
        "os.makedirs('hideout', exist_ok=True)\nos.chroot('hideout')\n" + _CLIMB + _PRINT,
    ),
    Answer(
        "not-far-enough",
        "os.makedirs('hideout', exist_ok=True)\nos.chroot('hideout')\n"
        "os.chdir('..')\nos.chdir('..')\nos.chroot('.')\n" + _PRINT,
    ),
    Answer("no-hideout", "os.chroot('hideout')\n" + _CLIMB + "os.chroot('.')\n" + _PRINT),
    Answer(
        "no-print",
        "os.makedirs('hideout', exist_ok=True)\nos.chroot('hideout')\n"
        + _CLIMB
        + "os.chroot('.')\n",
    ),
    Answer("import", "import tarfile\nos.chroot('tmp')\n" + _CLIMB + "os.chroot('.')\n" + _PRINT),
    Answer(
        "ok",  # the image's own /tmp as the hideout, and cat of the host to print
        "os.chroot('tmp')\n"
        + _CLIMB
        + "os.chroot('.')\nsubprocess.run(['head', '-n', '1', '/etc/os-release'])\n",
    ),
    Answer(
        "ok",  # keep a descriptor of where we were, chroot anywhere, go back with fchdir
        "here = os.open('.', os.O_RDONLY)\nos.chroot('/tmp')\nos.fchdir(here)\n"
        + _CLIMB
        + "os.chroot('.')\nos.execv('/bin/cat', ['cat', '/etc/os-release'])\n",
    ),
]

VARIANT_WRONG["01_chroot"] = ("01-run-chrooted", 1)

# -- notebook 02a (namespaces) ---------------------------------------------------------------------

_NS = "from labkit.kernel import namespaces, syscalls\n"

ANSWERS["02a-hostname"] = [
    Answer("no-unshare", _NS + "syscalls.sethostname(HOSTNAME)\nprint(os.uname().nodename)\n"),
    Answer(
        "before-unshare",
        _NS + 'syscalls.sethostname(HOSTNAME)\nnamespaces.unshare({"uts"})\n'
        "print(os.uname().nodename)\n",
    ),
    Answer(
        "wrong-kind",  # a namespace of its own, but not the one the hostname lives in
        _NS + 'namespaces.unshare({"net"})\nsyscalls.sethostname(HOSTNAME)\n',
    ),
    Answer("no-hostname", _NS + 'namespaces.unshare({"uts"})\nprint(os.uname().nodename)\n'),
    Answer(
        "other-process",  # util-linux unshare(1): right idea, but in a process of its own
        'subprocess.run(["unshare", "--uts", "sh", "-c", f"hostname {HOSTNAME}; hostname"])\n',
    ),
    Answer("name", 'namespaces.unshare({"uts"})\nsyscalls.sethostname(HOSTNAME)\n'),
    Answer(
        "ok",  # labkit's own stages, and another name: any name of its own will do
        _NS + 'namespaces.unshare({"uts"})\nnamespaces.set_hostname("my-box")\n'
        "print(os.uname().nodename)\n",
    ),
    Answer(
        "ok",  # the raw flag, as unshare(2) takes it
        _NS + "syscalls.unshare(syscalls.CLONE_NEWUTS)\nsyscalls.sethostname(HOSTNAME)\n",
    ),
]

_MAPS = 'def write_id_maps(pid):\n    for name in ("uid_map", "gid_map"):\n'

ANSWERS["02a-uid-map"] = [
    Answer(
        "inverted", _MAPS + '        Path(f"/proc/{pid}/{name}").write_text("100000 0 65536\\n")\n'
    ),
    Answer(
        "root-is-root", _MAPS + '        Path(f"/proc/{pid}/{name}").write_text("0 0 65536\\n")\n'
    ),
    Answer("too-few", _MAPS + '        Path(f"/proc/{pid}/{name}").write_text("0 100000 1\\n")\n'),
    Answer(
        "no-gid-map",
        'def write_id_maps(pid):\n    Path(f"/proc/{pid}/uid_map").write_text("0 100000 65536")\n',
    ),
    Answer(
        "not-the-child",
        _MAPS + '        Path(f"/proc/self/{name}").write_text("0 100000 65536\\n")\n',
    ),
    Answer(
        "written-twice",  # one write per line: the second one is refused
        _MAPS + '        for line in ("0 100000 1", "1 100001 65535"):\n'
        '            Path(f"/proc/{pid}/{name}").write_text(line)\n',
    ),
    Answer("bad-line", _MAPS + '        Path(f"/proc/{pid}/{name}").write_text("0 100000\\n")\n'),
    Answer("nothing-written", 'def write_id_maps(pid):\n    print("maps for", pid)\n'),
    Answer(
        "ok",  # the shell's echo: one write each, as the kernel wants
        'def write_id_maps(pid):\n    for name in ("uid_map", "gid_map"):\n'
        '        subprocess.run(["sh", "-c", f"echo 0 100000 65536 > /proc/{pid}/{name}"],\n'
        "                       check=True)\n",
    ),
]

_KINDS = {
    "hostname": "uts",
    "processes": "pid",
    "shared_memory": "ipc",
    "interfaces": "net",
    "root": "user",
    "mounts": "mnt",
}

ANSWERS["02a-which-kind"] = [
    Answer("processes", {**_KINDS, "processes": "mnt"}),  # "ps reads /proc, a mount"
    Answer("hostname", {**_KINDS, "hostname": "net"}),  # "the host's name is on the network"
    Answer("mounts", {**_KINDS, "mounts": "user"}),
    Answer("root", {**_KINDS, "root": "pid"}),  # "PID 1 is root"
    Answer("interfaces", {**_KINDS, "interfaces": "cgroup"}),
    Answer("shared_memory", {**_KINDS, "shared_memory": "mnt"}),
    Answer("not-a-kind", {**_KINDS, "hostname": "hostname"}),
    Answer("unanswered", {**_KINDS, "root": ...}),
    Answer("ok", {**_KINDS, "mounts": "mount", "interfaces": "network"}),  # aliases are fine
]

VARIANT_WRONG["02a_namespaces"] = ("02a-uid-map", 0)

# -- notebook 02b (mounts and pivot_root) ----------------------------------------------------------

_PRIVATE = 'syscalls.mount(None, "/", None, syscalls.MS_REC | syscalls.MS_PRIVATE)\n'
_MINE = 'syscalls.mount("labkit-mine", SPOT, "tmpfs")\n'

ANSWERS["02b-private-mount"] = [
    Answer("no-namespace", _NS + _MINE),
    Answer("propagated", _NS + 'namespaces.unshare({"mnt"})\n' + _MINE),
    Answer("changed-host", _NS + _PRIVATE + 'namespaces.unshare({"mnt"})\n' + _MINE),
    Answer("no-mount", _NS + 'namespaces.unshare({"mnt"})\n' + _PRIVATE),
    Answer("nothing", 'print(open("/proc/self/mounts").read())\n'),
    Answer("name", 'namespaces.unshare({"mnt"})\n' + _PRIVATE + _MINE),
    Answer(
        "ok",  # slave: events from the host still come in, none go out
        _NS + 'namespaces.unshare({"mnt"})\n'
        'syscalls.mount(None, "/", None, syscalls.MS_REC | syscalls.MS_SLAVE)\n' + _MINE,
    ),
    Answer(
        "ok",  # labkit's own stage for the private step
        "from labkit.kernel import namespaces, rootfs, syscalls\n"
        'namespaces.unshare({"mnt"})\nrootfs.make_mounts_private()\n' + _MINE,
    ),
]

_BIND = "syscalls.mount(IMAGE, IMAGE, None, syscalls.MS_BIND | syscalls.MS_REC)\n"
_PIVOT = 'os.chdir(IMAGE)\nsyscalls.pivot_root(".", ".")\n'
_DETACH = 'syscalls.umount2(".", syscalls.MNT_DETACH)\nos.chdir("/")\n'
_UNSHARE = 'namespaces.unshare({"mnt"})\n'

ANSWERS["02b-pivot-root"] = [
    Answer("not-a-mount-point", _NS + _UNSHARE + _PRIVATE + _PIVOT + _DETACH),
    Answer("shared", _NS + _UNSHARE + _BIND + _PIVOT + _DETACH),
    Answer("old-root", _NS + _UNSHARE + _PRIVATE + _BIND + _PIVOT + 'os.chdir("/")\n'),
    Answer(
        "old-root",  # the old root kept under a directory of the image
        _NS + _UNSHARE + _PRIVATE + _BIND + 'os.makedirs(IMAGE + "/old", exist_ok=True)\n'
        'syscalls.pivot_root(IMAGE, IMAGE + "/old")\nos.chdir("/")\n',
    ),
    Answer("chroot", 'os.chroot(IMAGE)\nos.chdir("/")\nprint(open("/etc/os-release").read())\n'),
    Answer("no-namespace", _NS + _PRIVATE + _BIND + _PIVOT + _DETACH),
    Answer("not-in-image", 'print(open("/etc/os-release").read())\n'),
    Answer("name", _UNSHARE + _PRIVATE + _BIND + _PIVOT + _DETACH),
    Answer(
        "ok",  # labkit's own stages
        "from labkit.kernel import namespaces, rootfs\n"
        + _UNSHARE
        + "rootfs.make_mounts_private()\nrootfs.bind_onto_itself(IMAGE)\n"
        + "rootfs.pivot_into(IMAGE)\n",
    ),
    Answer(
        "ok",  # put_old as a directory, then detached and removed
        _NS + _UNSHARE + _PRIVATE + _BIND + 'os.makedirs(IMAGE + "/old", exist_ok=True)\n'
        'syscalls.pivot_root(IMAGE, IMAGE + "/old")\nos.chdir("/")\n'
        'syscalls.umount2("/old", syscalls.MNT_DETACH)\nos.rmdir("/old")\n',
    ),
]

VARIANT_WRONG["02b_pivot_root"] = ("02b-pivot-root", 0)

# -- notebook 08 (the escape gallery) --------------------------------------------------------------

_DEFENCES = {
    "device": "devices",
    "core_pattern": "masks",
    "shocker": "capabilities",
    "keyring": "seccomp",
}
_OTHER_WORDS = {"device": "device controller", "core_pattern": "masked paths", "shocker": "caps"}

ANSWERS["08-which-defence"] = [
    Answer("seccomp-follows-caps", {**_DEFENCES, "shocker": "seccomp"}),  # "it's a syscall"
    Answer("mknod-is-allowed", {**_DEFENCES, "device": "capabilities"}),  # "mknod needs a cap"
    Answer("root-owns-the-file", {**_DEFENCES, "core_pattern": "capabilities"}),
    Answer("no-capability-needed", {**_DEFENCES, "keyring": "capabilities"}),
    Answer("not-stopped", {**_DEFENCES, "keyring": "masks"}),  # "/proc/keys is masked"
    Answer("unknown-defence", {**_DEFENCES, "shocker": "apparmor"}),
    Answer("unanswered", {**_DEFENCES, "core_pattern": ...}),
    Answer("not-a-dict", "capabilities"),
    Answer("ok", {**_DEFENCES, **_OTHER_WORDS}),  # other words for the same defences
]

ANSWERS["08-cap-drop"] = [
    Answer("add-wins", ["SYS_ADMIN"]),  # the added capability stays: nothing changes
    Answer("still-escapes", []),
    Answer("still-escapes", ["DAC_OVERRIDE", "NET_RAW"]),  # "root reads any file"
    Answer("unknown-capability", ["MKNODE"]),
    Answer("not-a-list", "MKNOD"),
    Answer("ok", ["ALL"]),  # --cap-drop ALL keeps only the added SYS_ADMIN: least privilege
    Answer("ok", ["cap_mknod", "NET_RAW"]),  # any spelling of the name; extra drops are fine
]

VARIANT_WRONG["08_escapes"] = ("08-which-defence", 0)


# -- notebook 03 (cgroups) -----------------------------------------------------------------------
# Kept beside the checkers' own tests (tests/test_lab_nb03.py, which also checks that a by-hand
# cgroup leaves nothing behind and that the notebook's process is never left in one).

from test_lab_nb03 import NB03_ANSWERS  # noqa: E402

ANSWERS.update(NB03_ANSWERS)
VARIANT_WRONG["03_cgroups"] = ("03-pids-by-hand", 1)  # not-joined: the limit, but not the process


# -- notebook 04 (images and overlayfs) ------------------------------------------------------------
# Kept beside the checkers' own tests (tests/test_lab_nb04.py, which also checks that an overlay
# by hand leaves no mount and no scratch directory behind).

from test_lab_nb04 import NB04_ANSWERS  # noqa: E402

ANSWERS.update(NB04_ANSWERS)
VARIANT_WRONG["04_images"] = ("04-overlay-by-hand", 3)  # swapped: lowerdir and upperdir


# -- notebook 05 (container networking) ----------------------------------------------------------
# Kept beside the checkers' own tests (tests/test_lab_nb05.py, which also checks that the scratch
# namespaces go and that the host's links, rules and forwarding setting are never touched).

from test_lab_nb05 import NB05_ANSWERS  # noqa: E402

ANSWERS.update(NB05_ANSWERS)
VARIANT_WRONG["05_network"] = ("05-masquerade", 6)  # no-masquerade: the outside cannot answer


# -- notebook 06 (publishing a port) ---------------------------------------------------------------
# Kept beside the checkers' own tests (tests/test_lab_nb06.py, which also checks that the scratch
# namespaces, the web server in them and the client outside go, and that the host's links, rules
# and settings are never touched).

from test_lab_nb06 import NB06_ANSWERS  # noqa: E402

ANSWERS.update(NB06_ANSWERS)
VARIANT_WRONG["06_ports"] = ("06-dnat", 2)  # wrong-chain: DNAT in OUTPUT, the router's own only

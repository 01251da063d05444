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

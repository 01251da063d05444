"""Notebook 04's checkers (images and overlayfs), fed right answers and typical wrong ones, and
the lab helpers the notebook stands on (an overlay in a scratch mount namespace, the layered
image in Docker, Docker's overlay2 directories, a local registry, the pull's progress bar).

The overlay checker mounts for real, in a child's scratch mount namespace: every test also
checks that no mount and no scratch directory is left. ``NB04_ANSWERS`` is in
tests/lab_answers.py's format; that file adds them to its ``ANSWERS``.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import NamedTuple

import pytest

from labkit.lab import exercises, i18n, image_plots, layer_demo, overlay_demo, registry_demo
from labkit.lab.i18n import pick

pytestmark = pytest.mark.usefixtures("needs_root")

HANGUL = re.compile(r"[\uac00-\ud7a3]")


class Answer(NamedTuple):
    reason: str
    source: str


_IMPORT = "from labkit.kernel import syscalls\n"
_MOUNT = 'syscalls.mount("overlay", MERGED, "overlay", 0, ' + (
    'f"lowerdir={LOWER},upperdir={UPPER},workdir={WORK}")\n'
)
_WRITE = 'open(MERGED + "/hello.txt", "a").write("more\\n")\n'
_DELETE = 'os.remove(MERGED + "/notes.txt")\n'

_SPLIT_OK = """\
def split_reference(name):
    first, slash, rest = name.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        domain, remainder = first, rest
    else:
        domain, remainder = "docker.io", name
    if domain == "docker.io" and "/" not in remainder:
        remainder = "library/" + remainder
    path, colon, tag = remainder.partition(":")
    return domain, path, tag if colon else "latest"
"""


def _split(old: str, new: str) -> str:
    assert old in _SPLIT_OK, old
    return _SPLIT_OK.replace(old, new)


NB04_ANSWERS: dict[str, list[Answer]] = {
    "04-overlay-by-hand": [
        Answer(
            "mount-failed",  # no workdir: overlayfs needs one with an upper layer
            _IMPORT + 'syscalls.mount("overlay", MERGED, "overlay", 0, '
            'f"lowerdir={LOWER},upperdir={UPPER}")\n' + _WRITE + _DELETE,
        ),
        Answer("not-mounted", _WRITE + "print(os.listdir(MERGED))\n"),
        Answer("no-such-file", _WRITE + _DELETE),  # no mount: MERGED has no notes.txt
        Answer(
            "swapped",
            _IMPORT + 'syscalls.mount("overlay", MERGED, "overlay", 0, '
            'f"lowerdir={UPPER},upperdir={LOWER},workdir={WORK}")\n' + _WRITE + _DELETE,
        ),
        Answer(
            "wrote-lower",
            'open(LOWER + "/hello.txt", "a").write("more\\n")\nos.remove(LOWER + "/notes.txt")\n',
        ),
        Answer("no-write", _IMPORT + _MOUNT + _DELETE),
        Answer("no-delete", _IMPORT + _MOUNT + _WRITE),
        Answer("name", _MOUNT + _WRITE + _DELETE),  # syscalls not imported
        Answer(
            "ok",  # the mount command and a shell, instead of Python
            'subprocess.run(["mount", "-t", "overlay", "overlay", "-o", '
            'f"lowerdir={LOWER},upperdir={UPPER},workdir={WORK}", MERGED], check=True)\n'
            'subprocess.run(["sh", "-c", f"echo more >> {MERGED}/hello.txt; '
            'rm {MERGED}/notes.txt"], check=True)\n',
        ),
        Answer(
            "ok",  # a whole new content: still a copy-up, then a write
            _IMPORT + _MOUNT + 'Path(MERGED, "hello.txt").write_text("new\\n")\n'
            'Path(MERGED, "notes.txt").unlink()\n',
        ),
    ],
    "04-split-reference": [
        Answer("no-library", _split('remainder = "library/" + remainder', "pass")),
        Answer(
            "no-default-domain",
            _split('domain, remainder = "docker.io", name', 'domain, remainder = "", name'),
        ),
        Answer("no-default-tag", _split('tag if colon else "latest"', "tag")),
        Answer(
            "user-as-domain",
            _split('slash and ("." in first or ":" in first or first == "localhost")', "slash"),
        ),
        Answer(
            "port-as-tag",
            """\
def split_reference(name):
    rest, colon, tag = name.partition(":")
    first, slash, more = rest.partition("/")
    if slash and ("." in first or first == "localhost"):
        domain, path = first, more
    else:
        domain, path = "docker.io", rest
    if domain == "docker.io" and "/" not in path:
        path = "library/" + path
    return domain, path, tag if colon else "latest"
""",
        ),
        Answer(
            "library-elsewhere",
            _split(
                'if domain == "docker.io" and "/" not in remainder:', 'if "/" not in remainder:'
            ),
        ),
        Answer("localhost", _split(' or first == "localhost"', "")),
        Answer(
            "not-a-triple",
            _split(
                'return domain, path, tag if colon else "latest"', 'return f"{domain}/{path}:{tag}"'
            ),
        ),
        Answer("raised", "def split_reference(name):\n    return name.split(':')[1]\n"),
        Answer(
            "ok",  # a regular expression instead of partitions
            """\
import re


def split_reference(name):
    m = re.fullmatch(r"(?:([^/]*[.:][^/]*|localhost)/)?([^:]+)(?::(.+))?", name)
    domain = m[1] or "docker.io"
    path = m[2] if m[1] or "/" in m[2] else "library/" + m[2]
    return domain, path, m[3] or "latest"
""",
        ),
    ],
}

CASES = [(i, n, a) for i in NB04_ANSWERS for n, a in enumerate(NB04_ANSWERS[i])]


@pytest.fixture(autouse=True)
def english(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(i18n, "_chosen", None)
    monkeypatch.setenv(i18n.ENV, "en")


def _leftovers() -> list[str]:
    tmp = Path(tempfile.gettempdir())
    dirs = sorted(p.name for p in tmp.glob("labkit-nb04-*"))
    mounts = [
        line
        for line in Path("/proc/self/mountinfo").read_text().splitlines()
        if "labkit-nb04" in line
    ]
    return dirs + mounts


@pytest.mark.parametrize(("ex_id", "n", "answer"), CASES, ids=[f"{i}-{n}" for i, n, _ in CASES])
def test_checker_on_a_learners_answer(ex_id: str, n: int, answer: Answer) -> None:
    before = _leftovers()
    verdict = exercises.evaluate(ex_id, answer.source)
    assert verdict.reason == answer.reason, pick(verdict.message)
    assert verdict.ok == (answer.reason == "ok")
    for lang in ("en", "ko"):
        message = pick(verdict.message, lang)
        assert message and "Traceback" not in message and "_child.py" not in message
        if not verdict.ok:
            assert verdict.hint and pick(verdict.hint, lang)
    assert HANGUL.search(verdict.message["ko"])
    if not verdict.ok:
        assert HANGUL.search(verdict.hint["ko"])
    assert _leftovers() == before, "a scratch directory or a mount was left"


def test_every_nb04_exercise_has_three_wrong_answers() -> None:
    for ex_id in exercises.all_ids("04"):
        wrong = [a for a in NB04_ANSWERS[ex_id] if a.reason != "ok"]
        assert len(wrong) >= 3, ex_id


@pytest.mark.parametrize("ex_id", ["04-overlay-by-hand", "04-split-reference"])
def test_the_reference_passes_and_says_why_in_both_languages(ex_id: str) -> None:
    ex = exercises.get(ex_id)
    assert ex.title["en"] and HANGUL.search(ex.title["ko"]) and HANGUL.search(ex.instructions["ko"])
    verdict = exercises.evaluate(ex_id, exercises.solution(ex_id))
    assert verdict.ok, pick(verdict.message)
    assert re.search(r"\d", pick(verdict.message, "en")) and HANGUL.search(verdict.message["ko"])


def test_the_by_hand_reference_gives_the_notebook_the_layers() -> None:
    verdict = exercises.evaluate("04-overlay-by-hand", exercises.solution("04-overlay-by-hand"))
    assert verdict.value["upper"] == [("hello.txt", "file"), ("notes.txt", "whiteout")]
    assert verdict.value["lower"] == [("hello.txt", "file"), ("notes.txt", "file")]
    assert verdict.value["merged"] == ["hello.txt"]


def test_a_wrong_answer_is_told_in_korean(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(i18n.ENV, "ko")
    wrong = NB04_ANSWERS["04-split-reference"][4]
    verdict = exercises.evaluate("04-split-reference", wrong.source)
    assert verdict.reason == "port-as-tag"
    assert "localhost:5000" in pick(verdict.hint) and HANGUL.search(pick(verdict.hint))


# -- the helpers the notebook stands on ---------------------------------------------------------


def test_an_overlay_in_a_scratch_namespace_leaves_its_upper_layer_and_no_mount() -> None:
    with layer_demo.scratch_dir("nb04-test") as root:
        layers = overlay_demo.make(root)
        run = overlay_demo.shell(
            layers,
            [
                "echo more >> merged/hello.txt",
                "rm merged/notes.txt",
                "grep -c overlay /proc/self/mountinfo",
            ],
        )
        assert "$ rm merged/notes.txt" in run.stdout
        assert overlay_demo.entries(layers.upper) == [
            ("hello.txt", "file"),
            ("notes.txt", "whiteout"),
        ]
        assert list(layers.merged.iterdir()) == []  # seen from the host: no overlay here
        stack = [("upper", layers.upper), ("lower", layers.lower)]
        assert image_plots.merged_view(image_plots.read_stack(stack)) == {
            "hello.txt": 0,
            "notes.txt": None,
        }
    assert not root.exists()


def test_a_docker_layer_whiteout_is_read_as_one(tmp_path: Path) -> None:
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / ".wh.notes.txt").write_text("")
    (tmp_path / "app" / "hello.txt").write_text("hi\n")
    assert overlay_demo.entries(tmp_path, "app") == [
        ("app/hello.txt", "file"),
        ("app/notes.txt", "whiteout"),
    ]


def _docker() -> None:
    from labkit import docker

    if not docker.reachable():
        pytest.skip("no Docker daemon here")


def test_the_layered_image_and_its_saved_layers(tmp_path: Path) -> None:
    _docker()
    import subprocess

    image = layer_demo.layered_image()
    assert layer_demo.layered_image() == image  # built once
    subprocess.run(["docker", "save", image, "-o", str(tmp_path / "i.tar")], check=True)
    (tmp_path / "x").mkdir()
    subprocess.run(["tar", "-xf", str(tmp_path / "i.tar"), "-C", str(tmp_path / "x")], check=True)
    layers = layer_demo.saved_layers(tmp_path / "x")
    assert len(layers) == 3
    listing = subprocess.run(["tar", "-tf", str(layers[-1])], capture_output=True, text=True)
    assert "app/.wh.notes.txt" in listing.stdout.split()


def test_docker_overlay2_directories_of_a_running_container() -> None:
    _docker()
    with layer_demo.docker_container("labkit-nb04-test", layer_demo.layered_image()) as name:
        data = layer_demo.graph_driver(name)
        stack = layer_demo.stack_of(data)
        assert stack[0][1] == Path(data["UpperDir"]) and stack[1][0] == "init layer"
        assert [label for label, _ in stack[2:]] == [
            "image layer 3",
            "image layer 2",
            "image layer 1",
        ]
    from labkit import docker

    assert docker.run("inspect", "labkit-nb04-test", check=False).returncode != 0


def test_a_local_registry_answers_and_goes() -> None:
    import urllib.request

    with registry_demo.local_registry() as registry:
        with urllib.request.urlopen(f"http://{registry.host}/v2/_catalog", timeout=5) as answer:
            assert answer.status == 200
        where = registry.dir
    assert not where.exists() and registry_demo._running == []


def test_the_progress_lines_look_like_dockers() -> None:
    progress = registry_demo.NotebookProgress()
    progress.start("sha256:" + "ab" * 32, 3_000_000)
    progress.advance("sha256:" + "ab" * 32, 1_500_000)
    line = progress._line("abababababab", progress.rows["abababababab"])
    assert line.startswith("abababababab: Downloading [") and line.endswith("1.5MB/3.0MB")
    progress.done("sha256:" + "ab" * 32, "Pull complete")
    assert progress._line("abababababab", progress.rows["abababababab"]).endswith("Pull complete")
    assert os.environ.get(i18n.ENV) == "en"

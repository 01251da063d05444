"""The lesson helpers (labkit.lab.teach, shell.keep_running), the learner's working copies
(labkit.lab.workcopy and ``labkit lab``) and the language setting (labkit.lab.i18n)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import PYTHON, REPO, _env

from labkit.kernel import namespaces
from labkit.lab import i18n, teach, workcopy
from labkit.lab.shell import keep_running


@pytest.fixture(autouse=True)
def english(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(i18n, "_chosen", None)
    monkeypatch.setenv(i18n.ENV, "en")


def test_expect_says_the_claim_or_what_the_kernel_showed(capsys) -> None:
    teach.expect(3, 3, "three is three")
    teach.expect(25, teach.at_least(20), "big enough")
    assert capsys.readouterr().out == "✓ three is three\n✓ big enough\n"
    with pytest.raises(teach.LessonMismatch) as raised:
        teach.expect("my-box", "labkit-nb02", "the container has the hostname we gave it")
    text = str(raised.value)
    assert "the kernel showed:   'my-box'" in text
    assert "the lesson expected: 'labkit-nb02'" in text
    rendered = raised.value._render_traceback_()
    assert "the container has the hostname" in rendered[0] and "Traceback" not in "".join(rendered)


def test_terminal_prints_the_command_and_its_raw_output(capsys) -> None:
    out = teach.terminal("echo one; labkit --version")
    shown = capsys.readouterr().out
    assert shown.startswith("$ echo one; labkit --version\none\nlabkit ")
    assert out.startswith("one\n")
    with pytest.raises(teach.LessonMismatch, match="exited 3"):
        teach.terminal("exit 3")
    teach.terminal("exit 3", check=False)


def test_reveal_answers_a_prediction(capsys) -> None:
    teach.reveal(..., 283.4, "x")
    teach.reveal(10, 283.4, "x")
    teach.reveal(250, 283.4, "x")
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        "measured: 283x (no guess made)",
        "you guessed 10x; measured: 283x · off by 28x",
        "you guessed 250x; measured: 283x · close!",
    ]


def test_keep_running_until_stopped() -> None:
    with keep_running("--hostname", "lab-test-box", minutes=1) as box:
        assert Path(f"/proc/{box.pid}").exists()
        assert not namespaces.shared_with(box.pid)["uts"]
        assert Path(f"/proc/{box.pid}/cmdline").read_bytes().split(b"\0")[:2] == [b"sleep", b"60"]
    assert not Path(f"/proc/{box.pid}").exists()
    box.stop()  # a second stop does nothing


def _fake_repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    (repo / "notebooks").mkdir(parents=True)
    for name in ("00_why_containers", "01_chroot"):
        (repo / "notebooks" / f"{name}.ipynb").write_text(json.dumps({"name": name}))
    return repo


def test_working_copies_and_restore(tmp_path: Path) -> None:
    repo = _fake_repo(tmp_path)
    made = workcopy.init(repo)
    assert [p.name for p in made] == ["00_why_containers.ipynb", "01_chroot.ipynb"]
    mine = repo / "work/01_chroot.ipynb"
    mine.write_text("my notes")
    assert workcopy.init(repo) == [] and mine.read_text() == "my notes"  # never overwritten
    copy, backup = workcopy.restore("1", repo)
    assert copy == mine and "01_chroot" in copy.read_text()
    assert backup.parent == repo / "work/backup" and backup.read_text() == "my notes"
    _, second = workcopy.restore("01_chroot", repo)
    assert second != backup and second.exists() and backup.exists()


def test_the_cli_restores_a_notebook(tmp_path: Path) -> None:
    repo = _fake_repo(tmp_path)
    argv = [PYTHON, "-m", "labkit.cli", "lab", "--repo", str(repo)]
    run = subprocess.run([*argv, "init"], capture_output=True, text=True, env=_env(None), cwd=REPO)
    assert run.returncode == 0 and "2 new working copies" in run.stdout
    (repo / "work/00_why_containers.ipynb").write_text("changed")
    run = subprocess.run([*argv, "ls"], capture_output=True, text=True, env=_env(None))
    assert "00_why_containers        changed" in run.stdout, run.stdout
    run = subprocess.run([*argv, "restore", "00"], capture_output=True, text=True, env=_env(None))
    assert run.returncode == 0 and "your copy is kept as" in run.stdout
    bad = subprocess.run([*argv, "restore", "07"], capture_output=True, text=True, env=_env(None))
    assert bad.returncode == 125 and "no notebook '07'" in bad.stderr
    assert "00_why_containers, 01_chroot" in bad.stderr


def test_the_language_is_the_learners_choice(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.delenv(i18n.ENV)
    assert i18n.current() == "en"
    assert i18n.use("ko") == "ko" and i18n.pick(i18n.t("hint", "힌트")) == "힌트"
    assert json.loads((tmp_path / "labkit/lab.json").read_text()) == {"language": "ko"}
    monkeypatch.setattr(i18n, "_chosen", None)
    assert i18n.current() == "ko"  # a new kernel reads the saved choice
    monkeypatch.setenv(i18n.ENV, "en")
    assert i18n.current() == "en"  # the environment wins over the file
    with pytest.raises(ValueError, match="en, ko"):
        i18n.use("fr")


def test_the_working_copies_are_ignored_by_git() -> None:
    if not shutil.which("git") or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    ignored = subprocess.run(
        ["git", "-C", str(REPO), "check-ignore", "-q", "work/00_why_containers.ipynb"],
        env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"},
    )
    assert ignored.returncode == 0, "add /work/ to .gitignore"

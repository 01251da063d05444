"""Which language the lab speaks to the learner: English (``en``, the default) or Korean (``ko``).

The notebooks' prose is English, but the article the lab follows and most workshops are
Korean, so everything the lab *says to a learner at run time* (exercise instructions, checker
feedback, hints) exists in both languages. The choice is the learner's, and it has to survive a
kernel restart and carry over to the next notebook, so it is kept in a small file:

* ``lab.language("ko")`` switches this kernel and saves the choice in
  ``~/.config/labkit/lab.json`` (``$XDG_CONFIG_HOME`` if set) for the next notebooks;
* the environment variable ``LABKIT_LANG=ko`` wins over that file (a workshop can set it for
  everybody);
* with neither, it is English.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

LANGUAGES = ("en", "ko")
DEFAULT = "en"
ENV = "LABKIT_LANG"

#: A piece of text the lab shows, in every language it has: {"en": ..., "ko": ...}.
Text = Mapping[str, str]

_chosen: str | None = None  # set by use() in this process; wins over env and file


def t(en: str, ko: str) -> dict[str, str]:
    """One text in both languages (``t("Hint", "힌트")``): the only way lab text is written."""
    return {"en": en, "ko": ko}


def config_file() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "labkit" / "lab.json"


def current() -> str:
    """The language to speak now: this kernel's choice, else ``$LABKIT_LANG``, else the file."""
    if _chosen:
        return _chosen
    env = os.environ.get(ENV, "").strip().lower()[:2]
    if env in LANGUAGES:
        return env
    try:
        saved = json.loads(config_file().read_text()).get("language")
    except (OSError, ValueError, AttributeError):
        saved = None
    return saved if saved in LANGUAGES else DEFAULT


def use(code: str | None = None, persist: bool = True) -> str:
    """Switch to ``code`` ("en" or "ko"; without it, just say which is in use) and return it.

    ``persist`` saves the choice for later kernels and notebooks. A code the lab does not
    know is refused with the list of known ones, in both languages, since we cannot know
    which one the learner reads.
    """
    global _chosen
    if code is None:
        return current()
    code = code.strip().lower()
    if code not in LANGUAGES:
        raise ValueError(
            f"unknown language {code!r}: choose one of {', '.join(LANGUAGES)} / "
            f"지원하는 언어: {', '.join(LANGUAGES)}"
        )
    _chosen = code
    if persist:
        path = config_file()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"language": code}) + "\n")
        os.replace(tmp, path)
    return code


def pick(text: Text | str, lang: str | None = None) -> str:
    """The text in the current language (English if that one is missing)."""
    if isinstance(text, str):
        return text
    lang = lang or current()
    return text.get(lang) or text.get(DEFAULT) or next(iter(text.values()), "")


#: Labels the machinery itself prints, in both languages.
LABELS: dict[str, dict[str, str]] = {
    "hint": t("hint", "힌트"),
    "fix": t("fix", "해결 방법"),
    "your_line": t("in your line", "작성한 코드의 줄"),
    "skipped": t(
        "skipped: the notebook goes on with the reference solution ({where}). "
        "Try it any time: replace the `...` and run the cell again.",
        "건너뜀: 노트북은 참고 답안({where})으로 계속 진행합니다. "
        "언제든 `...` 부분을 채우고 셀을 다시 실행해 보세요.",
    ),
    "using_reference": t(
        "The rest of the notebook uses the reference solution until yours passes; "
        "fix it and run this cell again.",
        "답이 통과할 때까지 노트북의 나머지 부분은 참고 답안을 사용합니다. "
        "고친 뒤 이 셀을 다시 실행하세요.",
    ),
    "timeout": t(
        "did not finish within {seconds:.0f} s, so it was stopped",
        "{seconds:.0f}초 안에 끝나지 않아 중단했습니다",
    ),
    "raised": t("your code raised", "작성한 코드에서 오류 발생"),
    "child_failed": t("the child process failed", "자식 프로세스가 실패했습니다"),
}


def label(key: str, **fields: object) -> str:
    return pick(LABELS[key]).format(**fields)

"""04-split-reference: an image name split into registry (domain), repository path and tag, as
Docker splits it, checked against labkit's own parser (``labkit.images.reference.parse``).

The learner's function runs in a fresh child on a list of names chosen so that each usual
mistake gives a wrong answer on a name of its own: no default registry, no ``library/`` for an
official image, no default tag, the user name taken for a registry, ``library/`` added where it
does not belong, a registry's port taken for a tag, and ``localhost`` (a registry with neither
a dot nor a port).
"""

from __future__ import annotations

from labkit.lab.checks.common import failed, run_function
from labkit.lab.exercises import Verdict, define, right, wrong
from labkit.lab.i18n import t

#: In the order they are judged: the first wrong one names the mistake.
NAMES = [
    "alpine",
    "ubuntu:22.04",
    "me/app:1.0",
    "ghcr.io/org/tool",
    "localhost:5000/app:dev",
    "localhost/app",
    "registry.example.com:8443/team/web/api:v2",
]

HARNESS = """
_out = {}
for _name in NAMES:
    try:
        _v = split_reference(_name)
        _ok = isinstance(_v, (tuple, list)) and len(_v) == 3
        _out[_name] = {"value": [None if _x is None else str(_x) for _x in _v] if _ok
                       else repr(_v), "triple": _ok}
    except Exception as _e:
        _out[_name] = {"error": type(_e).__name__, "message": str(_e)}
report(cases=_out)
"""


def expected(name: str) -> list[str]:
    """What Docker makes of ``name``: [domain, path, tag], by labkit's parser."""
    from labkit.images.reference import parse

    ref = parse(name)
    return [ref.domain, ref.path, ref.tag or ""]


@define(
    "04-split-reference",
    kind="function",
    name="split_reference",
    title=t("Split an image name", "이미지 이름 나누기"),
    instructions=t(
        "Complete `split_reference(name)`: return `(domain, path, tag)` for an image name as "
        'Docker reads it, e.g. `split_reference("alpine")` is '
        '`("docker.io", "library/alpine", "latest")`. The rules:'
        "\n\n- the part before the first `/` is a registry (the *domain*) only if it has a `.` "
        "or a `:` (a port), or is `localhost`; otherwise the registry is `docker.io` and the "
        "whole name is the path;"
        "\n- on `docker.io`, a path of one part is an official image: it gets `library/` in front;"
        "\n- after the domain, a `:` starts the tag; with no tag, the tag is `latest`."
        "\n\nNames with a digest (`@sha256:...`) are not asked for here.",
        "`split_reference(name)`을 완성하세요: Docker가 읽는 대로 이미지 이름을 "
        '`(domain, path, tag)`로 나누어 반환합니다. 예: `split_reference("alpine")`은 '
        '`("docker.io", "library/alpine", "latest")`입니다. 규칙:'
        "\n\n- 첫 `/` 앞부분은 `.`이나 `:`(포트)가 있거나 `localhost`일 때만 레지스트리"
        "(*domain*)입니다. 아니면 레지스트리는 `docker.io`이고 이름 전체가 경로(path)입니다;"
        "\n- `docker.io`에서 한 부분짜리 경로는 공식 이미지입니다: 앞에 `library/`가 붙습니다;"
        "\n- domain 뒤에서 `:`는 태그의 시작입니다. 태그가 없으면 `latest`입니다."
        "\n\ndigest(`@sha256:...`)가 붙은 이름은 여기서 다루지 않습니다.",
    ),
)
def check_split_reference(source: str) -> Verdict:
    run = run_function(source, HARNESS, {"NAMES": NAMES})
    verdict = failed(run)
    if verdict:
        return verdict
    got = run.value("cases") or {}
    for name in NAMES:
        case = got.get(name, {})
        want = expected(name)
        if "error" in case:
            return wrong(
                "raised",
                t(
                    f"for {name!r} your function raised {case['error']}: {case['message']}",
                    f"{name!r}에 대해 함수에서 {case['error']} 오류가 났습니다: {case['message']}",
                ),
                t(
                    "str.partition('/') and str.partition(':') never raise: they give '' for a "
                    "part that is not there",
                    "str.partition('/')과 str.partition(':')은 오류를 내지 않습니다: 없는 "
                    "부분은 ''로 줍니다",
                ),
            )
        if not case.get("triple"):
            return wrong(
                "not-a-triple",
                t(
                    f"for {name!r} your function returned {case.get('value')}",
                    f"{name!r}에 대해 함수가 {case.get('value')}를 반환했습니다",
                ),
                t(
                    'return three strings: return domain, path, tag ("docker.io", '
                    '"library/alpine", "latest")',
                    'return domain, path, tag처럼 문자열 세 개를 반환하세요 ("docker.io", '
                    '"library/alpine", "latest")',
                ),
            )
        value = case["value"]
        if value != want:
            return _mistake(name, value, want)
    return right(
        t(
            f"all {len(NAMES)} names split as Docker splits them, from 'alpine' "
            "(docker.io, library/alpine, latest) to a registry with a port and a path of three "
            "parts.",
            f"{len(NAMES)}개 이름 모두 Docker와 똑같이 나눴습니다: 'alpine'(docker.io, "
            "library/alpine, latest)부터 포트가 있는 레지스트리와 세 부분짜리 경로까지.",
        )
    )


def _mistake(name: str, value: list, want: list[str]) -> Verdict:
    domain, path, tag = value
    said = t(
        f"for {name!r} yours gives {tuple(value)}, Docker {tuple(want)}",
        f"{name!r}에 대해 {tuple(value)}를 반환했습니다. Docker는 {tuple(want)}",
    )
    if domain != want[0] and name.startswith("localhost/"):
        reason, hint = "localhost", _HINTS["localhost"]
    elif domain != want[0] and "/" in name and name.split("/")[0] == domain:
        reason, hint = "user-as-domain", _HINTS["user-as-domain"]
    elif domain != want[0] and (":" in (tag or "") or "/" in (tag or "")):
        reason, hint = "port-as-tag", _HINTS["port-as-tag"]
    elif domain != want[0] and want[0] == "docker.io":
        reason, hint = "no-default-domain", _HINTS["no-default-domain"]
    elif path == want[1].removeprefix("library/") and want[1].startswith("library/"):
        reason, hint = "no-library", _HINTS["no-library"]
    elif path == "library/" + want[1]:
        reason, hint = "library-elsewhere", _HINTS["library-elsewhere"]
    elif tag != want[2] and not tag and want[2] == "latest":
        reason, hint = "no-default-tag", _HINTS["no-default-tag"]
    elif tag != want[2] and ("/" in (tag or "") or ":" in (path or "")):
        reason, hint = "port-as-tag", _HINTS["port-as-tag"]
    else:
        reason, hint = "other", _HINTS["other"]
    return wrong(reason, said, hint)


_HINTS = {
    "localhost": t(
        "localhost is a registry even without a dot or a port: check first == 'localhost'",
        "localhost는 점이나 포트가 없어도 레지스트리입니다: first == 'localhost'도 확인하세요",
    ),
    "user-as-domain": t(
        "the first part is a registry only if it has a '.' or a ':' or is localhost; "
        "'me' in me/app is a user on docker.io",
        "첫 부분은 '.'이나 ':'가 있거나 localhost일 때만 레지스트리입니다. me/app의 'me'는 "
        "docker.io의 사용자 이름입니다",
    ),
    "port-as-tag": t(
        "split off the domain first (at the first '/'), then look for ':' in the rest: the "
        "':' in localhost:5000 is a port, not a tag",
        "먼저 첫 '/'에서 domain을 떼어 낸 다음, 나머지에서 ':'를 찾으세요: localhost:5000의 "
        "':'는 태그가 아니라 포트입니다",
    ),
    "no-default-domain": t(
        "a name without a registry is on Docker Hub: the domain is 'docker.io'",
        "레지스트리가 없는 이름은 Docker Hub에 있습니다: domain은 'docker.io'입니다",
    ),
    "no-library": t(
        "an official image has library/ in front of its one-part name: 'library/alpine'",
        "공식 이미지는 한 부분짜리 이름 앞에 library/가 붙습니다: 'library/alpine'",
    ),
    "library-elsewhere": t(
        "library/ goes only in front of a one-part path on docker.io, not on other registries "
        "and not in front of me/app",
        "library/는 docker.io의 한 부분짜리 경로 앞에만 붙습니다. 다른 레지스트리나 me/app "
        "앞에는 붙지 않습니다",
    ),
    "no-default-tag": t(
        "a name without a tag means the tag 'latest'",
        "태그가 없는 이름은 'latest' 태그를 뜻합니다",
    ),
    "other": t(
        "domain: the first part if it has '.' or ':' or is localhost, else docker.io; then "
        "library/ for a one-part docker.io path; then the tag after ':', else latest",
        "domain: 첫 부분에 '.'이나 ':'가 있거나 localhost이면 그것, 아니면 docker.io. 그다음 "
        "docker.io의 한 부분짜리 경로에는 library/. 마지막으로 ':' 뒤가 태그, 없으면 latest",
    ),
}

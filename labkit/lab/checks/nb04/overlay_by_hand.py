"""04-overlay-by-hand: an overlay mounted by hand from two directories, then a write and a
delete through it, judged by what the kernel left in each directory.

The learner's cell runs as root in a fresh child in a scratch mount namespace (the checker
asks for one: the mount never reaches the host, and goes with the child). It gets ``LOWER``
(``hello.txt`` and ``notes.txt``), empty ``UPPER``, ``WORK`` and ``MERGED``. After it, the
harness looks at the mount table of that namespace; after the child is gone the checker reads
the directories from the host, where overlayfs's work stays:

* the mount failed: the kernel's errno and the options' shape as the hint;
* no overlay on MERGED, but files there: written into a plain directory;
* LOWER changed: with an overlay, the two directories were given the other way round; without
  one, the files were changed in the lower layer itself;
* no copy of hello.txt in UPPER: nothing was written through MERGED;
* no whiteout for notes.txt in UPPER: nothing was deleted through MERGED.
"""

from __future__ import annotations

from labkit.lab import layer_demo, overlay_demo
from labkit.lab.checks.common import failed, run_code
from labkit.lab.exercises import Verdict, define, right, wrong
from labkit.lab.i18n import t

HARNESS = """
_mounted = False
for _line in open("/proc/self/mountinfo"):
    _fields = _line.split()
    if _fields[4] == MERGED and _line.split(" - ")[1].startswith("overlay "):
        _mounted = True
report(mounted=_mounted, merged=sorted(os.listdir(MERGED)))
"""


@define(
    "04-overlay-by-hand",
    kind="code",
    title=t("An overlay, by hand", "overlay를 손으로 마운트하기"),
    instructions=t(
        "Stack two directories with overlayfs, then change the merged view:"
        '\n\n1. mount an overlay on `MERGED`: `syscalls.mount("overlay", MERGED, "overlay", 0, '
        "options)`, where `options` is the text `lowerdir=...,upperdir=...,workdir=...` with "
        "`LOWER` as the read-only lower layer, `UPPER` as the writable upper layer and `WORK` "
        "as overlayfs's own scratch directory (empty, on the same filesystem as `UPPER`);"
        '\n2. through `MERGED`, add a line to `hello.txt` (open it with `"a"`);'
        "\n3. through `MERGED`, delete `notes.txt` (`os.remove`);"
        "\n4. print what `MERGED` shows (`os.listdir`)."
        "\n\n`from labkit.kernel import syscalls` gives the mount call. Your cell runs in a "
        "scratch mount namespace of its own: the mount is gone when the cell ends, but what "
        "the kernel wrote into `UPPER` stays, and the next cells look at it.",
        "overlayfs로 두 디렉터리를 겹친 다음, 합쳐진 화면(merged)을 바꿔 보세요:"
        '\n\n1. `MERGED`에 overlay를 마운트합니다: `syscalls.mount("overlay", MERGED, '
        '"overlay", 0, options)`. `options`는 `lowerdir=...,upperdir=...,workdir=...` 형식의 '
        "문자열로, `LOWER`는 읽기 전용 아래 레이어, `UPPER`는 쓰기 가능한 위 레이어, `WORK`는 "
        "overlayfs가 쓰는 작업 디렉터리입니다 (비어 있고, `UPPER`와 같은 파일 시스템에 있어야 "
        "합니다);"
        '\n2. `MERGED`를 통해 `hello.txt`에 한 줄을 덧붙입니다 (`"a"` 모드로 열기);'
        "\n3. `MERGED`를 통해 `notes.txt`를 지웁니다 (`os.remove`);"
        "\n4. `MERGED`에 무엇이 보이는지 출력합니다 (`os.listdir`)."
        "\n\n마운트 함수는 `from labkit.kernel import syscalls`로 가져옵니다. 이 셀은 자기만의 "
        "마운트 namespace에서 실행되므로 셀이 끝나면 마운트는 사라지지만, 커널이 `UPPER`에 "
        "써 둔 것은 남고, 다음 셀들이 그것을 살펴봅니다.",
    ),
)
def check_overlay_by_hand(source: str) -> Verdict:
    with layer_demo.scratch_dir("nb04-check") as root:
        layers = overlay_demo.make(root)
        before = overlay_demo.tree_digest(layers.lower)
        run = run_code(source, HARNESS, values=layers.values(), sandbox={"mnt"})
        facts = {
            "lower_changed": overlay_demo.tree_digest(layers.lower) != before,
            "copied_up": overlay_demo.kind(layers.upper / "hello.txt") == "file",
            "whiteout": overlay_demo.kind(layers.upper / "notes.txt") == "whiteout",
            "in_merged": bool(list(layers.merged.iterdir())),
            "upper": overlay_demo.entries(layers.upper),
            "lower": overlay_demo.entries(layers.lower),
        }
        appended = facts["copied_up"] and (layers.upper / "hello.txt").read_text()
    return _judge(run, facts, appended or "")


def _judge(run, facts: dict, appended: str) -> Verdict:
    mounted = bool(run.value("mounted"))
    if not mounted and not facts["copied_up"]:
        verdict = failed(run, _BY_TYPE)
        if verdict:
            return verdict
    if facts["lower_changed"]:
        if mounted:
            return wrong("swapped", _SWAPPED, _SWAPPED_HINT)
        return wrong(
            "wrote-lower",
            t(
                "the files in LOWER itself changed: in an image, that would change it for every "
                "container made from it",
                "LOWER 안의 파일이 직접 바뀌었습니다: 이미지라면 그 이미지로 만든 모든 컨테이너가 "
                "바뀌는 셈입니다",
            ),
            t(
                "mount the overlay first, then make every change through MERGED",
                "먼저 overlay를 마운트하고, 모든 변경은 MERGED를 통해 하세요",
            ),
        )
    if not mounted and not facts["copied_up"]:
        said = (
            t(
                "there was no overlay on MERGED: your files went into a plain, empty directory",
                "MERGED에 overlay가 없었습니다: 파일이 그냥 빈 디렉터리에 들어갔습니다",
            )
            if facts["in_merged"]
            else t("there was no overlay on MERGED", "MERGED에 overlay가 없었습니다")
        )
        return wrong("not-mounted", said, _MOUNT_HINT)
    if not facts["copied_up"]:
        return wrong(
            "no-write",
            t(
                "UPPER has no hello.txt: nothing was written to it through MERGED",
                "UPPER에 hello.txt가 없습니다: MERGED를 통해 아무것도 쓰지 않았습니다",
            ),
            t(
                "open(MERGED + '/hello.txt', 'a').write('one more line\\n')",
                "open(MERGED + '/hello.txt', 'a').write('one more line\\n')처럼 덧붙이세요",
            ),
        )
    if not facts["whiteout"]:
        return wrong(
            "no-delete",
            t(
                "UPPER has no whiteout for notes.txt: it was not deleted through MERGED",
                "UPPER에 notes.txt의 whiteout이 없습니다: MERGED를 통해 지우지 않았습니다",
            ),
            t("os.remove(MERGED + '/notes.txt')", "os.remove(MERGED + '/notes.txt')로 지우세요"),
        )
    kept = "hello from the lower layer" in appended
    return right(
        t(
            "the lower layer is untouched; UPPER now holds a copy of hello.txt "
            f"({len(appended)} bytes, {'with' if kept else 'without'} the lower layer's line: "
            "copied up on the first write) and notes.txt as a character device 0/0, a whiteout "
            "that hides the lower layer's file.",
            "아래 레이어는 그대로입니다. UPPER에는 hello.txt의 복사본"
            f"({len(appended)}바이트, 아래 레이어의 줄이 "
            f"{'들어 있음' if kept else '없음'}: 처음 쓸 때 복사됨, copy-up)과, "
            "아래 레이어의 파일을 가리는 whiteout인 문자 장치 0/0 "
            "notes.txt가 생겼습니다.",
        ),
        value={"upper": facts["upper"], "lower": facts["lower"], "merged": run.value("merged")},
    )


_MOUNT_HINT = t(
    'syscalls.mount("overlay", MERGED, "overlay", 0, '
    'f"lowerdir={LOWER},upperdir={UPPER},workdir={WORK}")',
    'syscalls.mount("overlay", MERGED, "overlay", 0, '
    'f"lowerdir={LOWER},upperdir={UPPER},workdir={WORK}")로 마운트하세요',
)
_SWAPPED = t(
    "your write and delete changed LOWER: the overlay used it as its writable layer",
    "쓰기와 삭제가 LOWER를 바꿨습니다: overlay가 LOWER를 쓰기 가능한 레이어로 썼습니다",
)
_SWAPPED_HINT = t(
    "lowerdir= is the read-only layer (LOWER), upperdir= the writable one (UPPER)",
    "lowerdir=가 읽기 전용 레이어(LOWER), upperdir=가 쓰기 가능한 레이어(UPPER)입니다",
)
_BY_TYPE = {
    "OSError": (
        "mount-failed",
        t(
            "the kernel refused the mount: check the options, "
            "lowerdir=LOWER,upperdir=UPPER,workdir=WORK, separated by commas, no spaces",
            "커널이 마운트를 거부했습니다: 옵션을 확인하세요. "
            "lowerdir=LOWER,upperdir=UPPER,workdir=WORK를 쉼표로, 공백 없이 씁니다",
        ),
    ),
    "FileNotFoundError": (
        "no-such-file",
        t(
            "hello.txt and notes.txt are in LOWER, so MERGED shows them once the overlay is "
            "mounted: mount first, then use MERGED + '/hello.txt'",
            "hello.txt와 notes.txt는 LOWER에 있으므로, overlay를 마운트한 뒤에야 MERGED에 "
            "보입니다: 먼저 마운트하고 MERGED + '/hello.txt'를 쓰세요",
        ),
    ),
    "NameError": (
        "name",
        t(
            "your cell can use LOWER, UPPER, WORK, MERGED, os and Path; "
            "import syscalls with from labkit.kernel import syscalls",
            "셀에서는 LOWER, UPPER, WORK, MERGED, os, Path를 쓸 수 있습니다. syscalls는 "
            "from labkit.kernel import syscalls로 가져오세요",
        ),
    ),
}

"""00-image-size: an image is a set of files; how many bytes is it?

The learner's function runs in a fresh child on a real test tree with the three kinds of link
images are full of, then on the busybox image; each typical mistake (following links, adding
directories, crashing on a dangling link, KiB, counting files) leaves its own sum.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from labkit.lab.checks.common import failed, not_a_number, run_function
from labkit.lab.exercises import Verdict, define, right, wrong
from labkit.lab.i18n import t
from labkit.lab.measure import dir_size, human

BIG = 5 * 2**20 + 12345  # bin/app: big enough that counting it twice, or in MiB, shows


def make_tree(root: Path) -> dict[str, int]:
    """The test tree: files in subdirectories, a link to a file, a link to a directory and a link
    to nothing (images have all three). Returns the sums a right or wrong answer would give."""
    for d in ("bin", "etc/deep/dir", "empty"):
        (root / d).mkdir(parents=True)
    with open(root / "bin/app", "wb") as f:
        f.truncate(BIG)  # sparse: st_size is what counts, not the disk blocks
    (root / "bin/app-link").symlink_to("app")
    (root / "bin/tool").symlink_to("/nonexistent/labkit-tool")
    (root / "lib").symlink_to("bin")
    (root / "etc/motd").write_bytes(b"m" * 678)
    (root / "etc/deep/dir/conf").write_bytes(b"c" * 90)
    (root / "README").write_bytes(b"r" * 1000)
    dirs = [root, root / "bin", root / "etc", root / "etc/deep", root / "etc/deep/dir"]
    dirs.append(root / "empty")
    top_dirs = sum(os.lstat(root / d).st_size for d in ("bin", "etc", "empty"))
    return {
        "files": BIG + 678 + 90 + 1000,  # regular files only
        "links": len("app") + len("/nonexistent/labkit-tool") + len("bin"),
        "dirs": sum(os.lstat(d).st_size for d in dirs),
        "root_dir": os.lstat(root).st_size,
        "top": 1000 + len("bin"),
        "top_dirs": top_dirs,
        "entries": 7,
    }


SIZE_HARNESS = """
_v = image_size(TREE)
report(tree=_v, kind=type(_v).__name__)
if type(_v) in (int, float):
    report(busybox=image_size(BUSYBOX))
"""


@define(
    "00-image-size",
    kind="function",
    name="image_size",
    title=t("How big is an image?", "이미지의 크기는?"),
    instructions=t(
        "An image is a set of files. Complete `image_size(path)`: return the total size in "
        "**bytes** of everything under `path` that is not a directory, each file once. "
        "Do **not follow symbolic links**: a link counts as itself (`os.lstat`), since the "
        "image stores the link, not a second copy of what it points to.\n\n"
        "Useful: `os.walk(path)` visits every directory; `os.lstat(p).st_size` is the size "
        "of `p` itself. The checker runs your function in a fresh process on a small test "
        "tree (with a link to a file, a link to a directory and a link to nothing), then on "
        "the busybox image.",
        "이미지는 파일의 집합입니다. `image_size(path)`를 완성하세요: `path` 아래에 있는 "
        "디렉터리가 아닌 모든 것의 크기를 **바이트** 단위로 더해서, 파일마다 한 번씩만 세어 "
        "반환합니다. **심볼릭 링크는 따라가지 마세요**: 링크는 링크 자체의 크기(`os.lstat`)로 "
        "셉니다. 이미지에는 링크가 저장될 뿐, 가리키는 파일의 복사본이 또 들어 있지 않기 "
        "때문입니다.\n\n"
        "도움말: `os.walk(path)`는 모든 하위 디렉터리를 방문하고, `os.lstat(p).st_size`는 "
        "`p` 자체의 크기입니다. 검사기는 새 프로세스에서 작은 테스트 트리(파일을 가리키는 "
        "링크, 디렉터리를 가리키는 링크, 아무것도 가리키지 않는 링크 포함)와 busybox "
        "이미지에 대해 함수를 실행합니다.",
    ),
)
def check_image_size(source: str) -> Verdict:
    from labkit.images.store import image_rootfs

    busybox = image_rootfs("busybox")
    tmp = Path(tempfile.mkdtemp(prefix="labkit-check-"))
    try:
        sums = make_tree(tmp / "tree")
        run = run_function(source, SIZE_HARNESS, {"TREE": tmp / "tree", "BUSYBOX": busybox})
    finally:
        shutil.rmtree(tmp)
    dangling = t(
        "`bin/tool` is a link to a path that does not exist (images have many: they point "
        "into the container's own `/`). os.stat and os.path.getsize follow links; "
        "os.lstat reads the link itself",
        "`bin/tool`은 존재하지 않는 경로를 가리키는 링크입니다 (이미지에는 이런 링크가 많습니다. "
        "컨테이너 자신의 `/`를 기준으로 가리키기 때문입니다). os.stat과 os.path.getsize는 "
        "링크를 따라가고, os.lstat은 링크 자체를 읽습니다",
    )
    verdict = failed(run, {"FileNotFoundError": ("dangling-link", dangling)})
    if verdict:
        return verdict
    value, kind = run.value("tree"), run.value("kind")
    verdict = not_a_number(value, kind, t("the bytes", "바이트 수"))
    if verdict:
        return verdict
    return _judge_size(value, sums, run.value("busybox"), busybox)


def _judge_size(v: float, s: dict[str, int], busybox_v: float, busybox: Path) -> Verdict:
    files, full = s["files"], s["files"] + s["links"]
    shown = t(f"you returned {v!r}; the files hold {full}", f"반환값 {v!r}, 실제 합계 {full}")
    if files <= v <= full:
        labkit_size = human(dir_size(busybox)[0])
        return right(
            t(
                f"each file counted once, no link followed. By your function the busybox image "
                f"is {human(busybox_v)} (labkit's measure.dir_size: {labkit_size}).",
                f"파일마다 한 번씩 세고 링크는 따라가지 않았습니다. 작성한 함수로 잰 busybox "
                f"이미지는 {human(busybox_v)} 입니다 (labkit의 measure.dir_size: {labkit_size}).",
            )
        )
    if v >= files + BIG:
        return wrong(
            "follows-links",
            t(
                f"a file was counted twice: `bin/app-link` is a link to `bin/app` (5 MiB) and "
                f"the 5 MiB were added again ({shown['en']})",
                f"같은 파일을 두 번 셌습니다: `bin/app-link`는 `bin/app`(5 MiB)을 가리키는 "
                f"링크인데 5 MiB를 한 번 더 더했습니다 ({shown['ko']})",
            ),
            t(
                "use os.lstat(p).st_size, and os.walk without followlinks=True. The busybox "
                "image has hundreds of links to one binary: followed, they make it look "
                "hundreds of times bigger",
                "os.lstat(p).st_size를 쓰고, os.walk에 followlinks=True를 주지 마세요. busybox "
                "이미지에는 바이너리 하나를 가리키는 링크가 수백 개 있어서, 따라가면 실제보다 "
                "수백 배 커 보입니다",
            ),
        )
    if any(abs(v - base - extra) <= s["links"] for base in (files, full)
           for extra in (s["dirs"], s["dirs"] - s["root_dir"])):  # fmt: skip
        return wrong(
            "counted-directories",
            t(
                f"the directories were added too ({shown['en']}). A directory's st_size is "
                "the size of its list of names, not of what is in it",
                f"디렉터리의 크기까지 더했습니다 ({shown['ko']}). 디렉터리의 st_size는 안에 든 "
                "파일의 크기가 아니라 이름 목록의 크기입니다",
            ),
            t(
                "add only the `files` of os.walk (and links to directories), not the `dirs`",
                "os.walk가 주는 `files`(와 디렉터리를 가리키는 링크)만 더하고 `dirs`는 빼세요",
            ),
        )
    if v in (s["entries"], s["entries"] - 1):
        return wrong(
            "counted-files",
            t(
                f"{v} is the number of files, not their size",
                f"{v}은(는) 크기가 아니라 파일 개수입니다",
            ),
            t("add os.lstat(p).st_size for each one", "파일마다 os.lstat(p).st_size를 더하세요"),
        )
    for unit, factor in (("KiB", 2**10), ("MiB", 2**20)):
        if abs(v * factor - full) <= factor:
            return wrong(
                f"in-{unit.lower()}",
                t(
                    f"that looks like {unit} ({shown['en']})",
                    f"{unit} 단위로 보입니다 ({shown['ko']})",
                ),
                t(
                    "return bytes; the notebook makes them readable with measure.human()",
                    "바이트로 반환하세요. 읽기 좋은 단위로 바꾸는 것은 measure.human()이 합니다",
                ),
            )
    if v in (s["top"] - 3, s["top"], s["top"] - 3 + s["top_dirs"], s["top"] + s["top_dirs"]):
        return wrong(
            "not-recursive",
            t(
                f"only the top of the tree was counted ({shown['en']}); most of an image's "
                "files are in subdirectories",
                f"트리의 맨 위만 셌습니다 ({shown['ko']}). 이미지의 파일은 대부분 하위 "
                "디렉터리에 있습니다",
            ),
            t(
                "os.walk(path) visits every subdirectory",
                "os.walk(path)는 모든 하위 디렉터리를 방문합니다",
            ),
        )
    return wrong(
        "wrong-total",
        t(f"the total is off: {shown['en']}", f"합계가 다릅니다: {shown['ko']}"),
        t(
            "the tree: README (1000 B), bin/app (5 MiB + 12345 B), etc/motd (678 B), "
            "etc/deep/dir/conf (90 B), and three links",
            "트리 구성: README (1000 B), bin/app (5 MiB + 12345 B), etc/motd (678 B), "
            "etc/deep/dir/conf (90 B), 그리고 링크 세 개",
        ),
    )

"""Reference solutions for notebook 04 (images and overlayfs). Try the exercises first!"""


def split_reference(name):
    """(domain, path, tag) of an image name, as Docker reads it."""
    first, slash, rest = name.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        domain, remainder = first, rest  # a registry: a host name, a port, or localhost
    else:
        domain, remainder = "docker.io", name  # Docker Hub
    if domain == "docker.io" and "/" not in remainder:
        remainder = "library/" + remainder  # an official image
    path, colon, tag = remainder.partition(":")  # after the domain, ':' can only start a tag
    return domain, path, tag if colon else "latest"


CODE = {
    "04-overlay-by-hand": """\
from labkit.kernel import syscalls

options = f"lowerdir={LOWER},upperdir={UPPER},workdir={WORK}"
syscalls.mount("overlay", MERGED, "overlay", 0, options)  # LOWER under UPPER, seen at MERGED
with open(MERGED + "/hello.txt", "a") as f:  # the first write copies the file up
    f.write("a line from the container\\n")
os.remove(MERGED + "/notes.txt")  # LOWER is read-only: the delete is a whiteout in UPPER
print(sorted(os.listdir(MERGED)))
""",
}

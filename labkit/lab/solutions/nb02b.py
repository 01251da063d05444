"""Reference solutions for notebook 02b (mounts and pivot_root). Try the exercises first!"""

CODE = {
    "02b-private-mount": """\
from labkit.kernel import namespaces, syscalls

namespaces.unshare({"mnt"})  # a copy of the mount table: still shared with the host's
syscalls.mount(None, "/", None, syscalls.MS_REC | syscalls.MS_PRIVATE)  # now it is not
syscalls.mount("labkit-mine", SPOT, "tmpfs")
print([line for line in open("/proc/self/mounts") if "labkit-mine" in line][0], end="")
""",
    "02b-pivot-root": """\
from labkit.kernel import namespaces, syscalls

namespaces.unshare({"mnt"})
syscalls.mount(None, "/", None, syscalls.MS_REC | syscalls.MS_PRIVATE)  # nothing shared
syscalls.mount(IMAGE, IMAGE, None, syscalls.MS_BIND | syscalls.MS_REC)  # a mount point
os.chdir(IMAGE)
syscalls.pivot_root(".", ".")  # the image is the root mount; the old root sits on top of it
syscalls.umount2(".", syscalls.MNT_DETACH)  # detach the old root: no path leads back
os.chdir("/")
print(open("/etc/os-release").read(), end="")
""",
}

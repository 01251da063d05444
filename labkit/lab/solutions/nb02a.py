"""Reference solutions for notebook 02a (namespaces). Try the exercises first!"""


def write_id_maps(pid):
    """Map IDs 0-65535 in the user namespace of process pid to 100000-165535 on the host."""
    for name in ("uid_map", "gid_map"):
        with open(f"/proc/{pid}/{name}", "w") as f:
            f.write("0 100000 65536\n")  # inside outside count, in one write


isolates = {
    "hostname": "uts",
    "processes": "pid",
    "shared_memory": "ipc",
    "interfaces": "net",
    "root": "user",
    "mounts": "mnt",
}

CODE = {
    "02a-hostname": """\
from labkit.kernel import namespaces, syscalls

print("before:", os.uname().nodename)
namespaces.unshare({"uts"})  # a UTS namespace of its own, starting as a copy of the host's
syscalls.sethostname(HOSTNAME)  # changes the hostname of *this* namespace only
print("after: ", os.uname().nodename)
print("in", os.readlink("/proc/self/ns/uts"))
""",
}

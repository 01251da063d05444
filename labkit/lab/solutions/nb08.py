"""Reference solutions for notebook 08 (the escape gallery). Try the exercises first!"""

#: Each break-out, and the one defence that stops it on its own.
stopped_by = {
    "device": "devices",  # mknod works (CAP_MKNOD is kept); opening the node is refused
    "core_pattern": "masks",  # /proc/sys is read-only; writing it needs no capability
    "shocker": "capabilities",  # no CAP_DAC_READ_SEARCH; seccomp follows the capabilities
    "keyring": "seccomp",  # keyctl needs no capability; the filter does not allow it
}

#: With --cap-add SYS_ADMIN: no new device nodes, so no node for the host's disk to mount.
cap_drop = ["MKNOD"]

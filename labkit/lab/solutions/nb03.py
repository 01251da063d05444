"""Reference solutions for notebook 03 (cgroups). Try the exercises first!"""

PERIOD_US = 100_000  # microseconds: one CPU quota period (the notebook's Setup defines it too)


def cpus_used(before, after):
    """How many CPUs the cgroup used, on average, over the quota periods between two readings."""
    periods = after["cpu_periods"] - before["cpu_periods"]
    if periods == 0:
        return 0.0  # no period passed: it used nothing
    used = after["cpu_usage_us"] - before["cpu_usage_us"]  # CPU time, in microseconds
    return used / (periods * PERIOD_US)


CODE = {
    "03-pids-by-hand": """\
os.mkdir(CGROUP)  # a cgroup is a directory: the kernel fills it with control files
Path(CGROUP, "pids.max").write_text(str(LIMIT))  # at most LIMIT processes in it
Path(CGROUP, "cgroup.procs").write_text(str(os.getpid()))  # this process moves in
for i in range(1, 11):
    try:
        subprocess.Popen(["sleep", "30"])  # born in the cgroup, as every child from now on
        print(f"sleep {i}: started")
    except OSError as e:
        print(f"sleep {i}: refused, errno {errno.errorcode[e.errno]}")
""",
}

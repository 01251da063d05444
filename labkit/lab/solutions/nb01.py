"""Reference solutions for notebook 01 (chroot). Try the exercises first!"""

CODE = {
    "01-run-chrooted": """\
os.chroot(ROOTFS)  # from now on, "/" is the image's directory
os.chdir("/")  # and the working directory is inside it too
subprocess.run(COMMAND)
""",
    "01-escape": """\
os.makedirs("hideout", exist_ok=True)  # a directory below where we are
os.chroot("hideout")  # the root moves down; the working directory stays outside it
for _ in range(100):  # ".." stops only at the root directory, and we are outside it
    os.chdir("..")
os.chroot(".")  # the host's real / is this process's root again
print(open("/etc/os-release").readline())
""",
}

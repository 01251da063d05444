"""``%%labkit_child``: a notebook cell whose code runs as root in a fresh child process.

Load it with ``%load_ext labkit.lab``. The cell is run by ``labkit.lab.child``, so it may call
``unshare``, ``setns``, ``chroot``, ``mount`` and ``pivot_root`` without touching the notebook's
own (multithreaded) kernel process::

    %%labkit_child
    from labkit.kernel import namespaces, syscalls
    namespaces.unshare({"uts"})
    syscalls.sethostname("my-box")
    print(os.uname().nodename)

Options: ``--exercise ID`` hands the cell to that exercise's checker (an unchanged cell is a
skip); ``--pass A,B`` copies notebook variables into the child (JSON-able values, paths as
strings); ``--out NAME`` keeps the run (output, ``report(...)`` values) in the variable NAME;
``--allow-error`` shows an error without failing the cell, for cells that fail on purpose;
``--sandbox net,mnt`` starts it in scratch namespaces of those kinds (the host's are the
default: unsharing is usually the lesson); ``--timeout S`` stops it after S seconds (default 60).
"""

from __future__ import annotations

import sys
from typing import Any

from IPython.core import magic_arguments
from IPython.core.magic import Magics, cell_magic, magics_class

from labkit.lab import child, exercises


class ChildFailed(Exception):
    """The learner's child failed: shown as the explanation alone, not as a traceback."""

    def _render_traceback_(self) -> list[str]:
        lines = str(self).splitlines()
        return [f"\x1b[31m{lines[0]}\x1b[0m", *lines[1:]]


@magics_class
class LabMagics(Magics):
    @magic_arguments.magic_arguments()
    @magic_arguments.argument("--exercise", default="", help="check the cell as this exercise")
    @magic_arguments.argument("--pass", dest="names", default="", help="variables to copy in")
    @magic_arguments.argument("--out", default="", help="keep the run in this variable")
    @magic_arguments.argument("--allow-error", action="store_true", help="do not fail the cell")
    @magic_arguments.argument("--sandbox", default="", help="scratch namespaces: net,mnt,...")
    @magic_arguments.argument("--timeout", type=float, default=60.0, help="seconds")
    @cell_magic
    def labkit_child(self, line: str, cell: str) -> Any:
        """Run the cell as root in a fresh, single-threaded child process."""
        args = magic_arguments.parse_argstring(self.labkit_child, line)
        cell = "\n" + cell  # so that line numbers count the %%labkit_child line, as the editor does
        if args.exercise:
            value = exercises.check(args.exercise, cell)
            if args.out:
                self.shell.user_ns[args.out] = value
            return None
        names = [n.strip() for n in args.names.split(",") if n.strip()]
        missing = [n for n in names if n not in self.shell.user_ns]
        if missing:
            raise ChildFailed(f"--pass: no variable named {', '.join(missing)} in this notebook")
        values = {n: self.shell.user_ns[n] for n in names}
        sandbox = [k.strip() for k in args.sandbox.split(",") if k.strip()]
        run = child.run(cell, values=values, timeout=args.timeout, sandbox=sandbox)
        if args.out:
            self.shell.user_ns[args.out] = run
        problem = run.explain()
        if problem and not run.interrupted:
            if args.allow_error:
                print(problem, file=sys.stderr)
            else:
                raise ChildFailed(problem)
        return None


def load(ipython: Any) -> None:
    ipython.register_magics(LabMagics)

"""What a learner sees in Jupyter: ``%%labkit_child`` output and errors, a lesson claim that does
not hold, and ``lab.check`` on a function typed into a cell, in a real kernel.

The kernel runs with ``IPYKERNEL_CELL_NAME`` set, as some JupyterLab setups do: then every cell
has the same file name, and ``lab.check`` must still find the learner's function.
"""

from __future__ import annotations

import os

import nbformat
from jupyter_client import KernelManager
from nbclient import NotebookClient
from nbtools import text_of
from nbval.kernel import CURRENT_ENV_KERNEL_NAME, NbvalKernelspecManager

CELLS = [
    "%load_ext labkit.lab\nfrom labkit import lab\nN = 2",
    # 1: an error from the kernel, in the learner's terms
    '%%labkit_child\nfrom labkit.kernel import syscalls\nprint("before", flush=True)\n'
    'syscalls.mount("none", "/nonexistent-labkit-magic", "tmpfs")',
    # 2: values in, reports out
    "%%labkit_child --pass N --out R\nreport(n=N * 2, threads=len(os.listdir('/proc/self/task')))",
    "assert R.ok and R.value('n') == 4 and R.value('threads') == 1, R",
    # 4: a failure on purpose does not fail the cell
    '%%labkit_child --allow-error\nos.chroot("/nonexistent-labkit-magic")',
    # 5: a function typed into a cell, checked
    "def start_seconds(argv):\n    before = time.perf_counter()\n"
    "    subprocess.run(argv)\n    return time.perf_counter() - before\n\n\n"
    'import subprocess, time\nmine = start_seconds\nstart_seconds = lab.check("00-start-seconds", '
    "start_seconds)\nassert start_seconds is mine",
    # 6: a claim of the lesson that the kernel does not bear out
    'lab.expect("my-box", "labkit-nb02", "the container has the hostname we gave it")',
]


def test_what_the_learner_sees(tmp_path) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source) for source in CELLS]
    km = KernelManager(
        kernel_name=CURRENT_ENV_KERNEL_NAME, kernel_spec_manager=NbvalKernelspecManager()
    )
    client = NotebookClient(nb, km=km, timeout=120, allow_errors=True)
    env = {**os.environ, "IPYKERNEL_CELL_NAME": "<IPY-INPUT>", "LABKIT_LANG": "en"}
    client.execute(env=env)
    errors = {
        i: out for i, c in enumerate(nb.cells) for out in c.outputs if out.output_type == "error"
    }
    assert set(errors) == {1, 6}, {i: text_of(c) for i, c in enumerate(nb.cells)}

    mount = errors[1]
    assert mount.ename == "ChildFailed"
    shown = "\n".join(mount.traceback)
    assert "[errno ENOENT]" in shown and "in your line 4" in shown
    assert "Traceback" not in shown and "magic.py" not in shown and "child.py" not in shown
    assert "before" in text_of(nb.cells[1])  # output that came before the error is kept

    assert "[errno ENOENT]" in text_of(nb.cells[4])
    assert text_of(nb.cells[5]).startswith("✓ 00-start-seconds")

    claim = "\n".join(errors[6].traceback)
    assert (
        "the kernel showed:   'my-box'" in claim and "the lesson expected: 'labkit-nb02'" in claim
    )
    assert "Traceback" not in claim and "teach.py" not in claim

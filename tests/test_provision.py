"""vagrant/provision.sh's JupyterLab: loopback only on a bare host, elsewhere only when asked.

JupyterLab runs a root kernel and a terminal, so on a learner's own machine (``sudo bash
vagrant/provision.sh``) it must not listen on the workshop Wi-Fi. The VM asks for 0.0.0.0 by
name (Vagrant's forward must reach it), and the forward listens on the host's loopback only.
The full path (provisioning under systemd, the forward, the token) runs in the learner's VM
that tests/guest/run.py boots.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROVISION = REPO / "vagrant" / "provision.sh"
VAGRANTFILE = REPO / "vagrant" / "Vagrantfile"


def _server_command(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(PROVISION), *args, "--show-server-command"],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_bare_host_listens_on_loopback_only_by_default() -> None:
    done = _server_command()
    assert done.returncode == 0, done.stderr
    assert "--ip=127.0.0.1" in done.stdout.split()
    assert "0.0.0.0" not in done.stdout
    assert done.stderr == ""


def test_listening_elsewhere_is_asked_for_and_warned_about() -> None:
    done = _server_command("--listen", "0.0.0.0")
    assert done.returncode == 0, done.stderr
    assert "--ip=0.0.0.0" in done.stdout.split()
    assert "warning" in done.stderr and "root shell" in done.stderr


def test_listen_needs_an_address() -> None:
    done = subprocess.run(
        ["bash", str(PROVISION), "--listen"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0
    assert "--listen needs an address" in done.stderr


def test_the_token_is_never_turned_off() -> None:
    """Every way the server is started reads the token file; nothing sets an empty token."""
    text = PROVISION.read_text()
    assert "JUPYTER_TOKEN_FILE" in text
    assert not re.search(r"token=''|token=\"\"|--IdentityProvider.token=\s", text)
    assert _server_command().stdout.count("token") == 0  # not on the command line either


def test_the_vm_listens_where_the_forward_reaches_and_the_forward_on_loopback() -> None:
    text = VAGRANTFILE.read_text()
    assert re.search(r'^PROVISION_ARGS = \[.*"--listen", "0\.0\.0\.0"\]', text, re.M)
    assert "args: PROVISION_ARGS" in text
    assert re.search(r'forwarded_port", guest: 8888, host: 8888, host_ip: "127\.0\.0\.1"', text)


def test_scripts_and_notebooks_keep_lf_line_endings() -> None:
    """A Windows checkout (core.autocrlf) must not put CR into what bash and nbval read."""
    paths = ["vagrant/provision.sh", "tests/run.sh", ".ci/run", "notebooks/00_why_containers.ipynb"]
    if not (REPO / ".git").exists():  # an exported tree: read the rules themselves
        rules = (REPO / ".gitattributes").read_text().splitlines()
        for pattern in ("*.sh", ".ci/run", "*.ipynb", "vagrant/Vagrantfile"):
            assert f"{pattern} text eol=lf" in rules, pattern
        return
    done = subprocess.run(
        ["git", "check-attr", "eol", "--", *paths],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.count(": eol: lf") == len(paths), done.stdout

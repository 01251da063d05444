#!/usr/bin/env bash
# The test command for labkit: lint, the test suite (tests/ and the notebooks), and a leak check.
#
#   sudo bash tests/run.sh                       # everything (what CI runs)
#   sudo bash tests/run.sh tests/test_cli.py -x  # extra arguments go to pytest
#
# Tests run as root against the real kernel, so the run also checks that they left nothing
# behind on the host: a snapshot of namespaces, links, mounts, iptables rules, cgroups, labkit
# processes, processes in other PID namespaces (containers) and Docker containers is taken
# before and compared after (tests/leakcheck.py). A leak fails the run.
#
# Environment: LABKIT_PYTHON (default /opt/labkit/venv/bin/python) picks the interpreter.
set -uo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
py=${LABKIT_PYTHON:-/opt/labkit/venv/bin/python}

if [ "$(id -u)" -ne 0 ]; then
  echo "tests/run.sh: the tests need root (fix: sudo bash tests/run.sh)" >&2
  exit 2
fi
if [ ! -x "$py" ]; then
  echo "tests/run.sh: no Python at $py (fix: sudo bash vagrant/provision.sh --no-server," \
    "or set LABKIT_PYTHON)" >&2
  exit 2
fi
cd "$repo" || exit 2

section() { printf '\n=== %s  %s\n' "$(date +%H:%M:%S)" "$*"; }

# The project's own leak checker, the same on every machine (a learner's checkout included).
leakcheck=("$py" "$repo/tests/leakcheck.py")

lint_status=0
pytest_status=0
leak_status=0
# (no "labkit" in this name: leak checkers look for processes that mention it)
baseline=$(mktemp /tmp/leak-baseline.XXXXXX)

finish() {
  trap - EXIT INT TERM
  section "leak check (${leakcheck[*]} --since)"
  "${leakcheck[@]}" --since "$baseline"
  leak_status=$?
  rm -f "$baseline"

  section "summary"
  verdict() { [ "$1" -eq 0 ] && echo ok || echo "FAILED ($1)"; }
  echo "lint:       $(verdict "$lint_status")"
  echo "pytest:     $(verdict "$pytest_status")"
  echo "leak check: $(verdict "$leak_status")"
  if [ "$lint_status" -ne 0 ] || [ "$pytest_status" -ne 0 ] || [ "$leak_status" -ne 0 ]; then
    exit 1
  fi
  exit 0
}

section "leak baseline (${leakcheck[*]} --save)"
if ! "${leakcheck[@]}" --save "$baseline"; then
  echo "tests/run.sh: could not take the leak baseline" >&2
  rm -f "$baseline"
  exit 2
fi
# From here on the leak check always runs, whatever happens to the tests.
trap finish EXIT
trap 'echo; echo "tests/run.sh: interrupted"; pytest_status=130; exit 130' INT TERM

section "ruff check + ruff format --check"
lint_paths=()
for d in labkit tests bench; do [ -d "$d" ] && lint_paths+=("$d"); done
"$py" -m ruff check "${lint_paths[@]}" || lint_status=1
"$py" -m ruff format --check "${lint_paths[@]}" || lint_status=1

section "pytest ${*:-(tests/ and notebooks/, from pyproject.toml)}"
"$py" -m pytest -ra "$@"
pytest_status=$?
if [ "$pytest_status" -eq 5 ]; then
  # A run that collects nothing proves nothing: treat it as a failure, not a pass.
  echo "tests/run.sh: no tests ran (pytest exit 5: nothing was collected)" >&2
fi
# finish() runs on exit: leak check, summary, exit status.

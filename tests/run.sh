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

# The learner's VM (tests/guest/run.py) boots beside the host's tests on a full run, not after
# them: its emulated CPU keeps about one core busy, so the two take about as long together as
# the VM alone (docs/learner-vm.md, "CI budget"). tests/test_learner_vm.py, collected last,
# waits for it and reports. Inside the learner's VM itself there is no second VM to boot.
guest_pid=
guest_dir=
start_guest_beside() {
  [ $# -eq 0 ] || return 0
  [ "${LABKIT_VM_BESIDE:-1}" = 1 ] || return 0
  [ "$(stat -fc %T /sys/fs/cgroup)" != cgroup2fs ] || return 0
  guest_dir=$(mktemp -d /tmp/vm-beside.XXXXXX)
  section "learner's VM: booting beside the host's tests (log: $guest_dir/log)"
  ( "$py" tests/guest/run.py --no-host-leakcheck >"$guest_dir/log" 2>&1
    echo $? >"$guest_dir/rc" ) &
  guest_pid=$!
  export LABKIT_GUEST_RUN_DIR="$guest_dir"
}

stop_guest() {
  [ -n "$guest_pid" ] || return 0
  if [ "${1:-}" = interrupt ]; then
    pkill -INT -f "tests/guest/run.py --no-host-leakcheck" || true  # it powers the VM off
  fi
  wait "$guest_pid" 2>/dev/null
  if [ ! -s "$guest_dir/rc" ]; then
    echo "tests/run.sh: the learner's VM run ended without a status; its log:" >&2
    cat "$guest_dir/log" >&2
    pytest_status=1
  elif [ "$(cat "$guest_dir/rc")" != 0 ] && [ ! -e "$guest_dir/reported" ]; then
    echo "tests/run.sh: the learner's VM run failed; its log:" >&2
    cat "$guest_dir/log" >&2
    pytest_status=1
  fi
  rm -rf "$guest_dir"
  guest_pid=
}

finish() {
  trap - EXIT INT TERM
  stop_guest
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
trap 'echo; echo "tests/run.sh: interrupted"; pytest_status=130; stop_guest interrupt; exit 130' INT TERM

section "ruff check + ruff format --check"
lint_paths=()
for d in labkit tests bench; do [ -d "$d" ] && lint_paths+=("$d"); done
"$py" -m ruff check "${lint_paths[@]}" || lint_status=1
"$py" -m ruff format --check "${lint_paths[@]}" || lint_status=1

start_guest_beside "$@"

section "pytest ${*:-(tests/ and notebooks/, from pyproject.toml)}"
"$py" -m pytest -ra "$@"
pytest_status=$?
if [ "$pytest_status" -eq 5 ]; then
  # A run that collects nothing proves nothing: treat it as a failure, not a pass.
  echo "tests/run.sh: no tests ran (pytest exit 5: nothing was collected)" >&2
fi
# finish() runs on exit: leak check, summary, exit status.

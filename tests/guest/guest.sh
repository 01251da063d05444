#!/usr/bin/env bash
# The learner's path, inside the VM that tests/guest boots (started at boot by the image's
# labkit-ci-guest.service, only when the kernel command line says labkit.ci).
#
#   guest.sh OUT     OUT: the results directory shared with the host (9p)
#
# OUT/mode "first-boot" (tests/guest/image.py, once per image): provision exactly as
# `vagrant up` does (args from OUT/provision-args, taken from the Vagrantfile), power off.
# Otherwise (tests/guest/run.py, every CI run): 1. provision again, as `vagrant provision`
# does (it must be idempotent and need no network); 2. check the machine a learner gets
# (systemd state, Docker, JupyterLab, token, cgroup v2); 3. take the guest's leak baseline,
# tell the host (OUT/ready) and wait while it runs the notebooks through JupyterLab and a
# browser (OUT/host-done); 4. the tests chosen by the host (OUT/pytest-args), labkit doctor,
# the guest's leak check; 5. power off.
# Every fact goes to its own file in OUT, so a guest that dies half way still says how far it
# got. Plain shell: under emulation every Python start costs about a second.
set -uo pipefail

out=${1:?usage: guest.sh OUT}
mode=$(cat "$out/mode" 2>/dev/null || echo ci)
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
py=/opt/labkit/venv/bin/python
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export LANG=C.UTF-8 PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1

uptime_s() { cut -d' ' -f1 /proc/uptime; }
log() { printf '[guest %7ss] %s\n' "$(uptime_s)" "$*" | tee -a "$out/progress"; }
# step NAME CMD...: run CMD with its output in OUT/NAME.log; one JSON line in OUT/steps.jsonl.
step() {
  local name=$1 start rc
  shift
  start=$(uptime_s)
  log "$name: start"
  "$@" >"$out/$name.log" 2>&1
  rc=$?
  printf '{"step": "%s", "rc": %d, "start": %s, "seconds": %s}\n' "$name" "$rc" "$start" \
    "$(awk -v a="$(uptime_s)" -v b="$start" 'BEGIN { printf "%.1f", a - b }')" >>"$out/steps.jsonl"
  log "$name: exit $rc"
  return $rc
}
fact() { printf '%s\n' "$2" >"$out/fact.$1"; }

log "booted: $(uname -r), $(nproc) CPUs, $(($(getconf _PHYS_PAGES) * $(getconf PAGESIZE) / 1048576)) MiB"
fact boot_seconds "$(uptime_s)"
fact kernel "$(uname -r)"
fact machine "$(uname -m)"
fact os "$(. /etc/os-release && echo "$PRETTY_NAME")"
# The box before the lab: systemd done starting (this unit runs after multi-user.target).
fact state_before_provision "$(systemctl is-system-running --wait 2>&1)"
{ systemd-analyze time; systemd-analyze blame | head -25; } >"$out/systemd-analyze.txt" 2>&1

# -- 1. provision, as `vagrant up` (first boot) or `vagrant provision` (later) runs it --------
# Vagrant's shell provisioner uploads the script to /tmp/vagrant-shell and runs it as root in
# a login shell with the Vagrantfile's args.
read -r -a args <"$out/provision-args"
install -m 0755 "$repo/vagrant/provision.sh" /tmp/vagrant-shell
step provision bash -l -c '/tmp/vagrant-shell "$@"' vagrant-shell "${args[@]}"
provision_rc=$?
if [ "$mode" = first-boot ]; then
  fact state "$(systemctl is-system-running --wait 2>&1)"
  systemctl --failed --plain --no-legend >"$out/failed-units.txt" 2>&1
  log "first boot provisioned (exit $provision_rc); powering off"
  fact done_seconds "$(uptime_s)"
  sync
  systemctl poweroff
  exit 0
fi

# -- 2. the machine the learner gets -----------------------------------------------------------
fact state "$(systemctl is-system-running --wait 2>&1)"
systemctl --failed --plain --no-legend >"$out/failed-units.txt" 2>&1
fact docker_active "$(systemctl is-active docker.service)"
fact jupyter_active "$(systemctl is-active labkit-jupyter.service)"
fact jupyter_api "$(curl -fsS -m 20 http://127.0.0.1:8888/api 2>&1)"
fact jupyter_listen "$(ss -Htln 'sport = :8888' | awk '{print $4}' | sort | tr '\n' ' ')"
fact token_file "$(stat -c '%a %U %s' /etc/labkit/jupyter-token 2>&1)"
fact cgroup_fs "$(stat -fc %T /sys/fs/cgroup)"
fact cgroup_controllers "$(cat /sys/fs/cgroup/cgroup.controllers)"
fact cgroup_delegated "$(cat /sys/fs/cgroup/cgroup.subtree_control)"
fact cgroup_self "$(cat /proc/self/cgroup)"
fact cgroup_jupyter "$(systemctl show -P ControlGroup labkit-jupyter.service)"
fact cgroup_top "$(cd /sys/fs/cgroup && ls -d -- */ | tr -d / | tr '\n' ' ')"
fact docker_info "$(timeout 60 docker info --format \
  '{{.ServerVersion}} {{.CgroupDriver}} cgroup-v{{.CgroupVersion}} {{.Driver}}' 2>&1)"
fact docker_images "$(timeout 60 docker images --format '{{.Repository}}' labkit/* | sort |
  tr '\n' ' ')"
fact kernelspecs "$(/opt/labkit/venv/bin/jupyter kernelspec list 2>&1 | tr -s ' ' | tr '\n' ';')"
fact route "$(ip route show default)"
fact home_mode "$(stat -c '%a %U' /home/vagrant)"
fact repo_owner "$(stat -c '%U' "$repo")"

# -- 3. the guest's leak baseline; the host runs the notebooks and the browser now -------------
step leak-baseline "$py" "$repo/tests/leakcheck.py" --save "$out/guest-leak-baseline"
log "ready for the host (notebooks through JupyterLab, the browser)"
cp /etc/labkit/jupyter-token "$out/token" 2>/dev/null
touch "$out/ready"
for _ in $(seq 3600); do
  [ -e "$out/host-done" ] && break
  sleep 1
done
log "host says: $(cat "$out/host-done" 2>/dev/null || echo 'nothing (timed out)')"
rm -f "$out/token"

# -- 4. tests, doctor, leak check --------------------------------------------------------------
if [ -s "$out/pytest-args" ] && [ "$provision_rc" -eq 0 ]; then
  read -r -a pytest_args <"$out/pytest-args"
  (cd "$repo" && export LABKIT_IN_VM=1 && step pytest "$py" -m pytest -p no:cacheprovider -o addopts= \
    -ra "${pytest_args[@]}")
fi
step doctor-json labkit doctor --json
cp "$out/doctor-json.log" "$out/doctor.json"
step doctor labkit doctor
step leak-check "$py" "$repo/tests/leakcheck.py" --since "$out/guest-leak-baseline"
journalctl -b --no-pager -p warning >"$out/journal-warnings.txt" 2>&1
fact state_at_end "$(systemctl is-system-running 2>&1)"
systemctl --failed --plain --no-legend >"$out/failed-units-at-end.txt" 2>&1

# -- 5. done -------------------------------------------------------------------------------------
log "done; powering off"
fact done_seconds "$(uptime_s)"
sync
systemctl poweroff

#!/usr/bin/env bash
# Set up a machine for labkit: system packages, the Python venv, base images, and JupyterLab.
#
# The same script provisions the learner's Vagrant VM (Debian 13, or Ubuntu 24.04), a learner's
# own Linux host (Debian 12/13, Ubuntu 24.04), the VM image CI boots (tests/guest) and the CI
# machine (Debian 12, via .ci/run). Run it as root. It is idempotent: running it again only
# fills in what is missing, and with everything installed it needs no network (an offline box).
#
#   sudo bash vagrant/provision.sh               # install everything, JupyterLab on 127.0.0.1:8888
#   sudo bash vagrant/provision.sh --no-server   # install everything, leave JupyterLab stopped
#   sudo bash vagrant/provision.sh --repo DIR    # labkit checkout elsewhere (the VM uses this)
#   sudo bash vagrant/provision.sh --listen ADDR # JupyterLab on ADDR too (the VM: 0.0.0.0, so
#                                                # that Vagrant's port forward reaches it)
#   bash vagrant/provision.sh --show-server-command   # print JupyterLab's command line, exit
set -euo pipefail

VENV=/opt/labkit/venv
ETC_DIR=/etc/labkit
TOKEN_FILE=$ETC_DIR/jupyter-token
UNIT_FILE=/etc/systemd/system/labkit-jupyter.service
PID_FILE=/run/labkit/jupyter.pid
LOG_FILE=/var/log/labkit-jupyter.log
PORT=8888

usage() {
  sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'
}

say() { printf '\n[provision %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
die() {
  printf 'provision: %s\n' "$*" >&2
  exit 1
}
trap 'printf "provision: failed at line %s (exit %s)\n" "$LINENO" "$?" >&2' ERR

# --- arguments --------------------------------------------------------------------------------
start_server=yes
listen=127.0.0.1
show_server_command=no
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
while [ $# -gt 0 ]; do
  case "$1" in
    --no-server) start_server=no ;;
    --repo)
      [ $# -ge 2 ] || die "--repo needs a directory"
      repo=$2
      shift
      ;;
    --repo=*) repo=${1#--repo=} ;;
    --listen)
      [ $# -ge 2 ] && [ -n "$2" ] || die "--listen needs an address (127.0.0.1, 0.0.0.0, ...)"
      listen=$2
      shift
      ;;
    --listen=*) listen=${1#--listen=} ;;
    --show-server-command) show_server_command=yes ;;
    -h | --help)
      usage
      exit 0
      ;;
    *) die "unknown argument '$1' (try --help)" ;;
  esac
  shift
done
repo=$(cd "$repo" && pwd) || die "no such directory: $repo"
[ -f "$repo/pyproject.toml" ] && [ -d "$repo/labkit" ] ||
  die "$repo is not a labkit checkout (no pyproject.toml / labkit/)"

# JupyterLab runs a root kernel and a terminal: whoever reaches its port and has the token has
# a root shell. So by default it listens on loopback only; anything else is asked for by name.
case "$listen" in
  127.* | ::1 | localhost) listen_warning= ;;
  *)
    listen_warning="JupyterLab will listen on $listen:$PORT, not only on 127.0.0.1: anyone who \
can reach this machine there and has the token gets a root shell. In the lab VM that is \
Vagrant's port forward (which itself listens on the host's 127.0.0.1 only); on a bare host, \
firewall the port or drop --listen."
    ;;
esac

# JupyterLab starts at the repository root, so README, docs/ and the labkit source are one click
# away from the working copies in work/. The token (always required) is read from TOKEN_FILE.
jupyter_cmd=("$VENV/bin/jupyter" lab "--ip=$listen" --port="$PORT" --no-browser --allow-root
  "--ServerApp.root_dir=$repo" --LabApp.news_url=None
  --LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate)

if [ "$show_server_command" = yes ]; then
  if [ -n "$listen_warning" ]; then echo "provision: warning: $listen_warning" >&2; fi
  printf '%s\n' "${jupyter_cmd[*]}"
  exit 0
fi

[ "$(id -u)" -eq 0 ] || die "run me as root: sudo bash $0 $*"

# --- which machine is this? -------------------------------------------------------------------
# shellcheck disable=SC1091
. /etc/os-release
arch=$(uname -m)
case "${ID:-}" in
  ubuntu | debian) ;;
  *) die "unsupported OS '${ID:-unknown}' (labkit supports Debian 12/13 and Ubuntu 24.04)" ;;
esac
case "${ID}-${VERSION_ID:-}" in
  debian-13 | ubuntu-24.04 | debian-12) ;;
  *) echo "provision: warning: tested on Debian 13, Ubuntu 24.04 and Debian 12, this is" \
    "${PRETTY_NAME:-?}" ;;
esac

has_systemd=no
[ -d /run/systemd/system ] && has_systemd=yes

say "labkit provisioning: repo $repo on ${PRETTY_NAME:-$ID} ($arch), systemd=$has_systemd," \
  "server=$start_server, listen=$listen"

# --- system packages --------------------------------------------------------------------------
export DEBIAN_FRONTEND=noninteractive
# Ubuntu's needrestart would otherwise ask which services to restart after an upgrade.
export NEEDRESTART_MODE=a NEEDRESTART_SUSPEND=1

pkgs=(
  python3-venv python3-dev
  iproute2 iptables conntrack iperf3 util-linux procps psmisc kmod
  busybox-static debootstrap
  crun skopeo hyperfine git curl ca-certificates
  docker-registry apache2-utils
)
# A host that already has a Docker engine (docker-ce + containerd.io) must keep it: docker.io
# and runc conflict with those packages. Any working engine and runc will do for the lab.
# Look for the daemon, not the CLI: some machines ship a docker client without an engine.
command -v dockerd >/dev/null 2>&1 || pkgs+=(docker.io)
# From Debian 13 on, docker.io only recommends the client: without docker-cli there is no
# `docker` command (this script installs no recommends).
if [ "$ID" = debian ] && [ "${VERSION_ID:-0}" -ge 13 ] 2>/dev/null &&
  ! command -v docker >/dev/null 2>&1; then
  pkgs+=(docker-cli)
fi
command -v runc >/dev/null 2>&1 || pkgs+=(runc)
case "$arch" in
  x86_64) pkgs+=(qemu-system-x86) ;;
  aarch64) pkgs+=(qemu-system-arm) ;;
esac

missing=()
for p in "${pkgs[@]}"; do
  [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" = "install ok installed" ] ||
    missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  # Only now is the network needed: with every package there (an offline box), it is not.
  say "apt: installing ${missing[*]}"
  apt_opts=(-qq -y -o DPkg::Lock::Timeout=600 --no-install-recommends)
  apt-get "${apt_opts[@]}" update
  # Debian's docker-registry package starts a registry on every address at :5000 as soon as it
  # is installed; labkit runs its own on 127.0.0.1 (below), so that one must not start.
  # policy-rc.d is how Debian lets an installer say "do not start services now".
  # A policy already there (a chroot's "start nothing") still has the last word.
  # (One that names labkit-provision is ours, left by a killed run: the copy is the original.)
  policy=/usr/sbin/policy-rc.d
  if [ -e "$policy" ] && ! grep -q labkit-provision "$policy"; then
    cp -p "$policy" "$policy.labkit-provision"
  elif [ ! -e "$policy" ]; then
    rm -f "$policy.labkit-provision"
  fi
  cat >"$policy" <<POLICY
#!/bin/sh
[ "\$1" = docker-registry ] && exit 101
[ -x "$policy.labkit-provision" ] && exec "$policy.labkit-provision" "\$@"
exit 0
POLICY
  chmod +x "$policy"
  apt-get "${apt_opts[@]}" -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
    install "${missing[@]}" || { rm -f "$policy"; die "apt-get install failed"; }
  rm -f "$policy"
  if [ -e "$policy.labkit-provision" ]; then mv "$policy.labkit-provision" "$policy"; fi
else
  say "apt: all ${#pkgs[@]} packages already installed"
fi

# --- Python venv with labkit ------------------------------------------------------------------
# Reuse an existing venv (on the dev machine /opt/labkit/venv is a symlink to another venv).
if [ -x "$VENV/bin/python" ]; then
  say "venv: reusing $VENV ($("$VENV/bin/python" -V 2>&1))"
else
  say "venv: creating $VENV"
  mkdir -p "$(dirname "$VENV")"
  /usr/bin/python3 -m venv "$VENV"
fi
"$VENV/bin/python" - <<'EOF' || die "labkit needs Python >= 3.11 in the venv"
import sys
sys.exit(0 if sys.version_info >= (3, 11) else 1)
EOF

extras=lab
# pip install -e is slow and needs PyPI; skip it when nothing relevant changed since last time.
stamp_file="$VENV/.labkit-provision-stamp"
stamp="$repo [$extras] editable=compat $(sha256sum "$repo/pyproject.toml" | cut -d' ' -f1)"
if [ -f "$stamp_file" ] && [ "$(cat "$stamp_file")" = "$stamp" ] &&
  "$VENV/bin/python" -c 'import labkit' 2>/dev/null && [ -x "$VENV/bin/labkit" ]; then
  say "pip: labkit[$extras] already installed from $repo"
else
  say "pip: installing -e ${repo}[$extras]"
  PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 \
    "$VENV/bin/python" -m pip install --quiet --progress-bar off \
      --config-settings editable_mode=compat -e "${repo}[$extras]"
  printf '%s\n' "$stamp" >"$stamp_file"
fi
ln -sfn "$VENV/bin/labkit" /usr/local/bin/labkit

# The kernel JupyterLab offers in its launcher. Notebooks run as root through it; they record
# it in their metadata (kernelspec name "labkit"), so JupyterLab opens them on it.
"$VENV/bin/python" -m ipykernel install --name labkit --display-name "labkit (root)" >/dev/null
say "jupyter: kernel 'labkit (root)' registered"

# No "Would you like to receive official Jupyter news?" pop-up, and no update checks: the lab
# runs offline and the learner should see the lab, not JupyterLab's news.
settings_dir="$VENV/share/jupyter/lab/settings"
mkdir -p "$settings_dir"
cat >"$settings_dir/overrides.json" <<'JSON'
{
  "@jupyterlab/apputils-extension:notification": {
    "fetchNews": "false",
    "checkForUpdates": false
  }
}
JSON

# The learner's working copies of the notebooks: work/ at the repository root (git-ignored).
# A new lab version (git pull) only adds copies of new notebooks; `labkit lab restore NN`
# replaces one with the pristine notebook.
"$VENV/bin/labkit" lab --repo "$repo" init

# --- labkit's cgroup subtree ------------------------------------------------------------------
# systemd owns the cgroup v2 tree; labkit makes its containers' cgroups only below the cgroup
# systemd delegates to it (vagrant/labkit.service, Delegate=yes; docs/architecture.md, "cgroups").
if [ "$has_systemd" = yes ]; then
  # Restarting the unit stops the containers in it (as restarting dockerd does): only when
  # the unit itself changed; otherwise start it if it is not running.
  labkit_unit=/etc/systemd/system/labkit.service
  if ! cmp -s "$repo/vagrant/labkit.service" "$labkit_unit"; then
    install -m 0644 "$repo/vagrant/labkit.service" "$labkit_unit"
    systemctl daemon-reload
    labkit_start=restart
  else
    labkit_start=start
  fi
  systemctl enable labkit.service >/dev/null 2>&1
  systemctl "$labkit_start" labkit.service ||
    echo "provision: warning: could not start labkit.service (systemctl status labkit)"
fi

# --- Docker (used to compare labkit with a real runtime) ---------------------------------------
if [ "$has_systemd" = yes ] && systemctl list-unit-files docker.service >/dev/null 2>&1; then
  systemctl enable --now docker.service >/dev/null 2>&1 ||
    echo "provision: warning: could not start docker.service (systemctl status docker)"
fi
docker_up=no
if timeout 20 docker info >/dev/null 2>&1; then docker_up=yes; fi

# --- base images ------------------------------------------------------------------------------
say "images: labkit images build all (busybox, debian minbase; skipped if already built)"
"$VENV/bin/labkit" images build all
if [ "$docker_up" = yes ]; then
  say "images: importing into docker as labkit/*"
  "$VENV/bin/labkit" images docker-import
else
  say "images: docker is not answering; import later with: labkit images docker-import"
fi

# --- a local registry (step 04) ----------------------------------------------------------------
# The lab works offline: a registry on 127.0.0.1:5000 (Debian's docker-registry, the same
# server Docker Hub's API is modelled on) serves the base images, so `labkit pull` and
# `docker pull` of localhost:5000/labkit/busybox work without the internet. Only where systemd
# runs services (the VM, a learner's host); notebook 04 starts a registry of its own anyway.
if [ "$has_systemd" = yes ]; then
  systemctl disable --now docker-registry.service >/dev/null 2>&1 || true
  install -d -m 0755 "$ETC_DIR"
  install -d -m 0700 /var/lib/labkit-registry
  cat >"$ETC_DIR/registry.yml" <<'YAML'
# labkit's local registry (vagrant/provision.sh): loopback only, no auth, images of the lab.
version: 0.1
storage:
  filesystem:
    rootdirectory: /var/lib/labkit-registry
  delete:
    enabled: true
http:
  addr: 127.0.0.1:5000
YAML
  cat >/etc/systemd/system/labkit-registry.service <<'UNIT'
[Unit]
Description=labkit's local image registry on 127.0.0.1:5000 (docker-registry)
After=network.target

[Service]
ExecStart=/usr/bin/docker-registry serve /etc/labkit/registry.yml
Restart=on-failure

[Install]
WantedBy=multi-user.target
UNIT
  systemctl daemon-reload
  systemctl enable --now labkit-registry.service >/dev/null 2>&1 ||
    echo "provision: warning: could not start labkit-registry.service (systemctl status labkit-registry)"
  for _ in $(seq 30); do
    curl -fsS -o /dev/null http://127.0.0.1:5000/v2/ && break
    sleep 0.5
  done
  for name in busybox debian; do
    # (The Accept header matters: without it the registry answers 404 for an OCI manifest.)
    if curl -fsS -o /dev/null -H "Accept: application/vnd.oci.image.manifest.v1+json" \
      -H "Accept: application/vnd.docker.distribution.manifest.v2+json" \
      "http://127.0.0.1:5000/v2/labkit/$name/manifests/latest"; then
      say "registry: localhost:5000/labkit/$name already there"
    elif "$VENV/bin/labkit" tag "$name" "localhost:5000/labkit/$name" &&
      "$VENV/bin/labkit" push "localhost:5000/labkit/$name" >/dev/null; then
      say "registry: pushed localhost:5000/labkit/$name"
    else
      echo "provision: warning: could not push $name to localhost:5000 (labkit push)"
    fi
  done
fi

# --- JupyterLab -------------------------------------------------------------------------------
install -d -m 0755 "$ETC_DIR"
if [ ! -s "$TOKEN_FILE" ]; then
  (umask 077 && "$VENV/bin/python" -c 'import secrets; print(secrets.token_hex(24), end="")' \
    >"$TOKEN_FILE")
  say "jupyter: generated a new token in $TOKEN_FILE"
fi
chmod 0600 "$TOKEN_FILE"
# jupyter_server reads the file verbatim, so a trailing newline would become part of the token.
token=$(tr -d '[:space:]' <"$TOKEN_FILE")
[ "$(cat "$TOKEN_FILE")" = "$token" ] || (umask 077 && printf '%s' "$token" >"$TOKEN_FILE")

if [ -n "$listen_warning" ] && [ "$start_server" = yes ]; then
  echo "provision: warning: $listen_warning"
fi

if [ "$has_systemd" = yes ]; then
  # The unit is written even with --no-server so that a later `systemctl start` works.
  unit=$(
    cat <<EOF
# Written by labkit's vagrant/provision.sh; rerun it instead of editing this file.
[Unit]
Description=JupyterLab for the labkit container lab (root kernel, $listen:$PORT)
After=network-online.target docker.service
Wants=network-online.target
# A Vagrant synced folder is mounted after boot: keep retrying until the repo shows up.
StartLimitIntervalSec=0

[Service]
User=root
WorkingDirectory=$repo
Environment=JUPYTER_TOKEN_FILE=$TOKEN_FILE
# systemd's default PATH for units has no /sbin or /bin, so in a container (busybox keeps its
# tools in /bin) \`nsenter --target PID --mount ps\` found no ps. Debian's PATH for root:
Environment=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
ExecStart=${jupyter_cmd[*]}
Restart=always
RestartSec=5

[Install]
WantedBy=multi-user.target
EOF
  )
  if [ "$(cat "$UNIT_FILE" 2>/dev/null)" != "$unit" ]; then
    printf '%s\n' "$unit" >"$UNIT_FILE"
    systemctl daemon-reload
    changed_unit=yes
  else
    changed_unit=no
  fi
  if [ "$start_server" = yes ]; then
    systemctl enable labkit-jupyter.service >/dev/null 2>&1
    if [ "$changed_unit" = yes ]; then
      systemctl restart labkit-jupyter.service
    else
      systemctl start labkit-jupyter.service
    fi
  fi
elif [ "$start_server" = yes ]; then
  # No systemd (containers, some CI hosts): a plain background process with a pid file.
  mkdir -p "$(dirname "$PID_FILE")"
  if [ -f "$PID_FILE" ] && kill -0 "$(cat "$PID_FILE")" 2>/dev/null; then
    say "jupyter: already running (pid $(cat "$PID_FILE"))"
  else
    say "jupyter: starting in the background, log $LOG_FILE"
    (
      cd "$repo"
      export JUPYTER_TOKEN_FILE="$TOKEN_FILE"
      exec setsid nohup "${jupyter_cmd[@]}" >>"$LOG_FILE" 2>&1 </dev/null
    ) &
    echo $! >"$PID_FILE"
  fi
fi

if [ "$start_server" = yes ]; then
  # Seconds on a laptop's VM; a minute or more on a machine without hardware virtualisation
  # (CI boots this VM under software emulation).
  up=no
  deadline=$((SECONDS + 300))
  while [ "$SECONDS" -lt "$deadline" ]; do
    if curl -fs -m 10 -o /dev/null "http://127.0.0.1:$PORT/api"; then
      up=yes
      break
    fi
    sleep 1
  done
  [ "$up" = yes ] || die "JupyterLab did not answer on port $PORT within 300 s (see" \
    "$([ "$has_systemd" = yes ] && echo 'journalctl -u labkit-jupyter' || echo "$LOG_FILE"))"
  say "done. JupyterLab is running:"
  echo
  echo "    http://127.0.0.1:$PORT/lab/tree/work/00_why_containers.ipynb?token=$token"
  echo
  echo "(the token is in $TOKEN_FILE; from the host: vagrant ssh -c 'sudo cat $TOKEN_FILE')"
else
  say "done (--no-server: JupyterLab not started)"
fi

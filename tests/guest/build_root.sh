#!/usr/bin/env bash
# The learner's VM root filesystem, made from packages alone. Run by tests/guest/image.py
# inside a private mount namespace (unshare --mount), so every mount below vanishes with it.
#
# Input (environment): ROOT (empty dir), ARCH, SUITE, MIRROR, INCLUDE (debootstrap packages),
# REPO_COPY (a copy of the checkout), REPO_IN_GUEST, HOST_CA (CA bundle for pip, may be
# empty), HOST_IMAGES (labkit's base images to copy, may be empty), TIMINGS (file to append
# "step seconds" lines to).
set -euo pipefail

step_start=$SECONDS
step() {
  local now=$SECONDS
  [ -n "${step_name:-}" ] && echo "$step_name $((now - step_start))" >>"$TIMINGS"
  step_name=$1
  step_start=$now
  printf '[build_root %s] %s\n' "$(date +%H:%M:%S)" "$*"
}
in_root() {
  chroot "$ROOT" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/root LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive "$@"
}

step debootstrap "debootstrap $SUITE ($ARCH): $INCLUDE"
debootstrap --arch="$ARCH" --variant=minbase --include="$INCLUDE" "$SUITE" "$ROOT" "$MIRROR" \
  >"$ROOT.debootstrap.log" 2>&1 || {
  tail -n 30 "$ROOT.debootstrap.log" >&2
  exit 1
}

step chroot-setup "mounts, the vagrant user, the checkout at $REPO_IN_GUEST"
mount -t proc proc "$ROOT/proc"
mount -t sysfs sysfs "$ROOT/sys"
mount --bind /dev "$ROOT/dev"
mount -t devpts -o newinstance,ptmxmode=0666 devpts "$ROOT/dev/pts"
mount -t tmpfs tmpfs "$ROOT/run"
mount -t tmpfs tmpfs "$ROOT/tmp"
cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf"
# No service starts inside the chroot while packages install.
printf '#!/bin/sh\nexit 101\n' >"$ROOT/usr/sbin/policy-rc.d"
chmod 0755 "$ROOT/usr/sbin/policy-rc.d"

# The user a Vagrant box has: uid 1000, passwordless sudo, and a home others cannot read
# (Debian 13's adduser makes homes 0700; Ubuntu's are 0750: neither lets "nobody" in).
in_root useradd --create-home --uid 1000 --shell /bin/bash --groups sudo vagrant
chmod 0700 "$ROOT/home/vagrant"
echo 'vagrant ALL=(ALL) NOPASSWD: ALL' >"$ROOT/etc/sudoers.d/vagrant"
chmod 0440 "$ROOT/etc/sudoers.d/vagrant"
install -d -o 1000 -g 1000 "$ROOT$REPO_IN_GUEST"
chown -R 1000:1000 "$REPO_COPY"
mount --bind "$REPO_COPY" "$ROOT$REPO_IN_GUEST"

if [ -n "$HOST_IMAGES" ]; then
  # The base images are built from packages by `labkit images build`; copying the host's
  # saves a second debootstrap (provision.sh then finds them built).
  mkdir -p "$ROOT/var/lib/labkit/images"
  for name in busybox debian; do
    [ -d "$HOST_IMAGES/$name" ] && cp -a "$HOST_IMAGES/$name" "$ROOT/var/lib/labkit/images/"
  done
fi

step provision "vagrant/provision.sh --no-server in the chroot (packages, venv, kernel)"
ca_in_root=
if [ -n "$HOST_CA" ]; then
  # pip checks certificates against this bundle (the host's may hold more than Debian's).
  ca_in_root=/tmp/labkit-host-ca.pem
  cp "$HOST_CA" "$ROOT$ca_in_root"
fi
chroot "$ROOT" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  HOME=/root LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive ${ca_in_root:+PIP_CERT=$ca_in_root} \
  bash "$REPO_IN_GUEST/vagrant/provision.sh" --repo "$REPO_IN_GUEST" --no-server

step configure "machine id, network, CI hook, cleanup"
in_root dpkg-query -W -f='${Package}=${Version}\n' >"$ROOT/var/lib/labkit-guest-packages"
# A machine id now, so the first boot is not systemd's "first boot" (which applies presets).
rm -f "$ROOT/etc/machine-id"
in_root systemd-machine-id-setup >/dev/null
echo labkit >"$ROOT/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\tlabkit\n::1\tlocalhost ip6-localhost ip6-loopback\n' \
  >"$ROOT/etc/hosts"
printf '/dev/vda\t/\text4\trw,errors=remount-ro\t0\t1\n' >"$ROOT/etc/fstab"
# qemu's user network: a static address (no DHCP wait at boot), where hostfwd delivers.
cat >"$ROOT/etc/systemd/network/10-labkit-qemu.network" <<'EOF'
[Match]
Name=en* eth*

[Network]
Address=10.0.2.15/24
Gateway=10.0.2.2
DNS=10.0.2.3
EOF
in_root systemctl enable systemd-networkd.service >/dev/null 2>&1
echo 'nameserver 10.0.2.3' >"$ROOT/etc/resolv.conf"
# The caches that systemd rebuilds at boot when /usr is newer than /etc and /var (ldconfig,
# the journal catalog) were built here: say so, as a booted and updated box would.
in_root ldconfig
in_root journalctl --update-catalog >/dev/null 2>&1 || true
touch "$ROOT/etc/.updated" "$ROOT/var/.updated"

# The CI hook: inert unless the kernel command line says labkit.ci (so a box made from this
# image boots as a plain learner's box). It mounts the two 9p shares qemu offers (the
# checkout where Vagrant's synced folder goes, and a results directory) and runs the
# checkout's tests/guest/guest.sh, which is read at boot, not baked in.
cat >"$ROOT/usr/local/sbin/labkit-ci-guest" <<EOF
#!/bin/sh
set -e
modprobe 9pnet_virtio 2>/dev/null || true
mountpoint -q $REPO_IN_GUEST ||
  mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 labkit $REPO_IN_GUEST
mkdir -p /mnt/labkit-ci
mountpoint -q /mnt/labkit-ci ||
  mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 labkit-ci /mnt/labkit-ci
exec /bin/bash $REPO_IN_GUEST/tests/guest/guest.sh /mnt/labkit-ci
EOF
chmod 0755 "$ROOT/usr/local/sbin/labkit-ci-guest"
cat >"$ROOT/etc/systemd/system/labkit-ci-guest.service" <<'EOF'
[Unit]
Description=labkit CI: the learner's path, driven from the host (tests/guest)
ConditionKernelCommandLine=labkit.ci
After=multi-user.target

[Service]
Type=simple
ExecStart=/usr/local/sbin/labkit-ci-guest
StandardOutput=journal+console
StandardError=journal+console

[Install]
WantedBy=multi-user.target
EOF
in_root systemctl enable labkit-ci-guest.service >/dev/null 2>&1

# What only the build needed, and what the first boot makes for itself.
rm -f "$ROOT/usr/sbin/policy-rc.d" "$ROOT/etc/labkit/jupyter-token"
[ -n "$ca_in_root" ] && rm -f "$ROOT$ca_in_root"
in_root apt-get clean
rm -rf "$ROOT/root/.cache" "$ROOT/var/log/labkit-jupyter.log"
umount "$ROOT$REPO_IN_GUEST"
umount "$ROOT/dev/pts" "$ROOT/dev" "$ROOT/run" "$ROOT/tmp" "$ROOT/sys" "$ROOT/proc"
step done "root is ready"

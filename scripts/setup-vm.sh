#!/usr/bin/env bash
# Make this machine able to run labkit's VM half: QEMU, libvirt, Vagrant + vagrant-libvirt,
# the box build tools; start virtlogd/libvirtd by hand (no systemd here) and make sure the
# libvirt storage pool "default" exists. Idempotent: on a ready machine it changes nothing
# and returns in well under two seconds. Run as root.
set -euo pipefail

PACKAGES=(qemu-system-x86 qemu-utils libvirt-daemon-system libvirt-clients vagrant
          vagrant-libvirt extlinux fdisk dnsmasq-base iptables ebtables mmdebstrap)
POOL_DIR=/var/lib/libvirt/images
URI=qemu:///system
TIMEOUT=${LABKIT_LIBVIRT_TIMEOUT:-30}

say() { printf 'setup-vm: %s\n' "$*"; }
die() { printf 'setup-vm: ERROR: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (sudo $0)"

# 1. packages: ask dpkg first, so a re-run never touches apt.
missing=()
for p in "${PACKAGES[@]}"; do
    st=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
    [ "$st" = installed ] || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    say "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
    say "packages: ok (${#PACKAGES[@]} installed)"
fi

# 2. daemons: no systemd, so start them by hand when they are not running.
#    (the readiness check is `virsh uri`: `virsh version` probes QEMU and takes ~4 s)
running() { pgrep -x "$1" >/dev/null 2>&1; }
if running virtlogd; then say "virtlogd: running"; else say "starting virtlogd"; virtlogd -d; fi
if running libvirtd; then
    say "libvirtd: running"
else
    say "starting libvirtd"
    mkdir -p /run/libvirt
    libvirtd -d
fi

deadline=$((SECONDS + TIMEOUT))
until virsh -q -c "$URI" uri >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ]; then
        die "libvirtd does not answer on $URI after ${TIMEOUT}s; check 'pgrep -a libvirtd', /var/log/libvirt/ and 'libvirtd -v' in a terminal"
    fi
    sleep 0.3
done
say "libvirt: answers on $URI"

# 3. /dev/kvm as udev would leave it (root:kvm 0660). With 0600 root, libvirt's KVM check
#    (done as its QEMU user) disagrees with its probe (done with root's access) and libvirt
#    re-probes QEMU on every call: ~50 s per domain define instead of milliseconds.
if [ -c /dev/kvm ] && getent group kvm >/dev/null; then
    if [ "$(stat -c '%G %a' /dev/kvm)" != "kvm 660" ]; then
        chgrp kvm /dev/kvm && chmod 0660 /dev/kvm
        say "/dev/kvm: set to root:kvm 0660 (stops libvirt re-probing QEMU on every call)"
    fi
fi

# 4. storage pool "default": vagrant-libvirt uploads boxes and creates disks there.
v() { virsh -q -c "$URI" "$@"; }
if ! v pool-info default >/dev/null 2>&1; then
    say "defining storage pool default ($POOL_DIR)"
    mkdir -p "$POOL_DIR"
    v pool-define-as default dir --target "$POOL_DIR" >/dev/null
fi
info=$(v pool-info default)
if ! grep -qE '^State:\s+running' <<<"$info"; then
    say "starting storage pool default"
    v pool-start default >/dev/null
fi
if ! grep -qE '^Autostart:\s+yes' <<<"$info"; then
    v pool-autostart default >/dev/null
    say "storage pool default: autostart set"
fi
say "storage pool default: active"
say "ready"

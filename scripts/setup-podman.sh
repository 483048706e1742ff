#!/usr/bin/env bash
# Podman for labkit's `engine: podman`, rootful and rootless (run by scripts/setup.sh;
# idempotent, a second run changes nothing): Podman and what rootless Podman needs from
# Debian (newuidmap/newgidmap, slirp4netns, CNI plugins), then Podman's settings for a
# machine without systemd, written to one drop-in file. No daemon: Podman needs none.
set -euo pipefail

say() { printf 'setup-podman: %s\n' "$*"; }

# shellcheck source=scripts/debs.sh
. "$(dirname "${BASH_SOURCE[0]}")/debs.sh"
PKGS=(podman uidmap slirp4netns containernetworking-plugins runc tini)
ensure_debs setup-podman "Debian packages present ($(podman --version 2>/dev/null))" "${PKGS[@]}"
[ "$(id -u)" = 0 ] || { say "not root: Podman's settings left as they are (labkit doctor checks them)"; exit 0; }

# Podman's settings, in a drop-in of its own (labkit doctor reads the same values):
# - no systemd here: cgroups through cgroupfs, events to a file;
# - cgroup v1 or hybrid (no /sys/fs/cgroup/cgroup.controllers): runc, as Docker uses; crun
#   refuses hybrid hierarchies ("cgroups in hybrid mode not supported");
# - ulimits a container may get: without CAP_SYS_RESOURCE (a lab server that is itself a
#   container) Podman's defaults (nofile 1048576) are above this machine's hard limits and
#   every container fails with "setrlimit RLIMIT_NOFILE: Operation not permitted".
CONF=/etc/containers/containers.conf.d/50-labkit.conf
nofile=$(ulimit -Hn)
[ "$nofile" = unlimited ] && nofile=1048576
nproc=$(ulimit -Hu)
{ [ "$nproc" = unlimited ] || [ "$nproc" -gt 32768 ]; } && nproc=32768
runtime=
[ -e /sys/fs/cgroup/cgroup.controllers ] || runtime='runtime = "runc"'
want=$(cat <<CONFEOF
# written by labkit (scripts/setup-podman.sh, role lab_server): Podman without systemd
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=$nproc:$nproc"]
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
$runtime
CONFEOF
)
if [ "$(cat "$CONF" 2>/dev/null || true)" != "$want" ]; then
  mkdir -p "$(dirname "$CONF")"
  printf '%s\n' "$want" > "$CONF"
  say "wrote $CONF"
else
  say "settings in place ($CONF)"
fi

# Rootless networking: slirp4netns opens /dev/net/tun as the user (0600 in some containers)
if [ -c /dev/net/tun ] && [ "$(stat -c %a /dev/net/tun)" != 666 ]; then
  chmod 0666 /dev/net/tun
  say "made /dev/net/tun usable by rootless users (0666)"
fi

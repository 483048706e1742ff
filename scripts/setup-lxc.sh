#!/usr/bin/env bash
# LXC for labkit's `engine: lxc` (run by scripts/setup.sh; idempotent, a second run changes
# nothing): LXC's tools, newuidmap, the Python binding community.general's lxc_container
# imports, made importable by labkit's venv alone, and root's id map for the
# unprivileged containers. No daemon: LXC needs none, and the containers use each student's
# Docker network (no lxc-net, no lxcbr0).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${LABKIT_VENV:-$ROOT/.venv}
# role lab_lxc's lab_lxc_idmap_base (labkit.engines.lxc.IDMAP_BASE): root's containers map here,
# each to its own 65536 ids, 4096 containers (labkit_lxc_layout.IDMAP; an earlier labkit's
# line root:1000000000:65536 is a part of it and may stay)
IDMAP="root:1000000000:268435456"

say() { printf 'setup-lxc: %s\n' "$*"; }

# shellcheck source=scripts/debs.sh
. "$(dirname "${BASH_SOURCE[0]}")/debs.sh"
PKGS=(lxc uidmap python3-lxc)
ensure_debs setup-lxc "Debian packages present (lxc $(lxc-start --version 2>/dev/null))" "${PKGS[@]}"

# root's containers are unprivileged: the uids 0-65535 of each are its own range of IDMAP's on
# this machine, which newuidmap allows only when /etc/subuid and /etc/subgid say so
if [ "$(id -u)" = 0 ]; then
  for f in /etc/subuid /etc/subgid; do
    grep -qx "$IDMAP" "$f" 2>/dev/null || { echo "$IDMAP" >> "$f"; say "added $IDMAP to $f"; }
  done
fi

# The `lxc` binding is Debian's (python3-lxc, for Debian's Python, which the venv is made
# from): one folder with just it, named by a .pth in the venv, rather than all of
# dist-packages
if [ -x "$VENV/bin/python" ]; then
  site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  dir="$VENV/lib/labkit-lxc"
  mkdir -p "$dir"
  for f in /usr/lib/python3/dist-packages/lxc /usr/lib/python3/dist-packages/_lxc.cpython-*.so; do
    [ -e "$f" ] && ln -sfn "$f" "$dir/$(basename "$f")"
  done
  [ "$(cat "$site/labkit-lxc.pth" 2>/dev/null)" = "$dir" ] || echo "$dir" > "$site/labkit-lxc.pth"
  if "$VENV/bin/python" -c 'import lxc' 2>/dev/null; then
    say "the lxc binding is importable in $VENV"
  else
    echo "setup-lxc: the lxc binding does not import in $VENV (python3-lxc is for $(readlink -f /usr/bin/python3))" >&2
    exit 1
  fi
fi
say "ready"

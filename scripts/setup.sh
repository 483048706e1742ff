#!/usr/bin/env bash
# labkit set-up, one idempotent step used by both README commands:
#   Debian packages, the virtual environment, a running dockerd (no systemd here),
#   LXC (scripts/setup-lxc.sh), Podman (scripts/setup-podman.sh), and with --vm (default when the lab has a VM) libvirt, QEMU and Vagrant.
# On a ready machine it changes nothing and takes a second or two.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${LABKIT_VENV:-$ROOT/.venv}
LOGDIR=${LABKIT_LOGDIR:-/var/log/labkit}
WITH_VM=1
for arg in "$@"; do
  case "$arg" in
    --no-vm) WITH_VM=0 ;;
    --vm) WITH_VM=1 ;;
    *) echo "setup: unknown option $arg (use --vm or --no-vm)" >&2; exit 2 ;;
  esac
done

say() { printf 'setup: %s\n' "$*"; }

# --- Debian packages -------------------------------------------------------------
# shellcheck source=scripts/debs.sh
. "$(dirname "${BASH_SOURCE[0]}")/debs.sh"
PKGS=(docker.io mmdebstrap busybox-static iptables ca-certificates python3-venv make
      docker-registry chromium chromium-driver fonts-dejavu-core  # tests: loopback registry, report and door in a browser
      shellcheck)  # lint: the shell scripts (`make lint`); the Python linters come from pyproject's lint extra
ensure_debs setup "Debian packages present" "${PKGS[@]}"

# --- virtual environment -------------------------------------------------------------
# Debian's own Python (3.11.2 on Debian 12), the one a Debian lab server has: labkit is
# tested on it. LABKIT_PYTHON picks another.
PY=${LABKIT_PYTHON:-}
if [ -z "$PY" ]; then
  if [ -x /usr/bin/python3 ]; then PY=/usr/bin/python3; else PY=$(command -v python3); fi
fi
stamp_want=$( { cat "$ROOT/pyproject.toml"; "$PY" -c 'import sys; print(sys.executable, sys.version)'; } | sha256sum | cut -c1-16)
stamp_have=$(cat "$VENV/.labkit-stamp" 2>/dev/null || true)
if [ ! -x "$VENV/bin/labkit" ] || [ "$stamp_want" != "$stamp_have" ]; then
  say "creating the virtual environment in $VENV ($("$PY" --version))"
  if [ -x "$VENV/bin/python" ] && [ "$("$VENV/bin/python" -c 'import sys; print(sys.version)')" != "$("$PY" -c 'import sys; print(sys.version)')" ]; then
    rm -rf "$VENV"  # made with another Python
  fi
  [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check -e "${ROOT}[test,lint,docs]" 2>&1 | grep -v '^WARNING: Location' || true
  "$VENV/bin/labkit" --version >/dev/null
  echo "$stamp_want" > "$VENV/.labkit-stamp"
else
  say "virtual environment up to date ($VENV)"
fi
# labkit is installed editable: compile its sources once (and again after a change), so a
# command does not compile them where Python cannot write bytecode (PYTHONDONTWRITEBYTECODE,
# or the accounts of a shared machine running root's checkout): 0.1-0.2 s of CPU each
"$VENV/bin/python" -m compileall -q "$ROOT/labkit" >/dev/null

# --- dockerd -------------------------------------------------------------------------
mkdir -p "$LOGDIR"
# One network per student: the engine's default address pools run out at about 31 networks,
# so give it pools with room for 1024 (/24 each) unless the machine has its own config.
DAEMON_JSON=/etc/docker/daemon.json
if [ "$(id -u)" = 0 ] && [ ! -e "$DAEMON_JSON" ]; then
  mkdir -p /etc/docker
  cat > "$DAEMON_JSON" <<'JSON'
{
  "default-address-pools": [{"base": "10.200.0.0/14", "size": 24}]
}
JSON
  say "wrote $DAEMON_JSON (address pools for 1024 student networks)"
  if timeout 10 docker version --format '{{.Server.Version}}' >/dev/null 2>&1; then
    say "note: the running dockerd reads the pools at its next start"
  fi
elif [ -e "$DAEMON_JSON" ] && ! grep -q default-address-pools "$DAEMON_JSON"; then
  say "note: $DAEMON_JSON has no default-address-pools: about 31 student networks fit (see labkit doctor)"
fi
docker_up() { timeout 10 docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }
if docker_up; then
  say "dockerd answering (server $(docker version --format '{{.Server.Version}}'))"
else
  [ "$(id -u)" = 0 ] || { echo "setup: dockerd is not running and only root can start it: sudo $0" >&2; exit 1; }
  # A pid file left by a dockerd that did not stop cleanly names a pid that may since be another
  # process's: dockerd would then wait for a containerd that is not there. Drop such files.
  for pidfile in /var/run/docker.pid /var/run/docker/containerd/containerd.pid; do
    [ -f "$pidfile" ] || continue
    pid=$(cat "$pidfile" 2>/dev/null || true)
    case "$(cat "/proc/$pid/comm" 2>/dev/null || true)" in
      dockerd|containerd) ;;
      *) say "removing stale $pidfile (pid $pid is not dockerd's or containerd's)"; rm -f "$pidfile" ;;
    esac
  done
  say "starting dockerd (log: $LOGDIR/dockerd.log)"
  setsid nohup dockerd >>"$LOGDIR/dockerd.log" 2>&1 < /dev/null &
  for _ in $(seq 1 60); do docker_up && break; sleep 1; done
  if ! docker_up; then
    echo "setup: dockerd did not answer within 60 s; last log lines:" >&2
    tail -n 15 "$LOGDIR/dockerd.log" >&2
    exit 1
  fi
  say "dockerd answering"
fi

# --- LXC (engine: lxc): its tools, the Python binding in the venv, root's id map ------------
bash "$ROOT/scripts/setup-lxc.sh"

# --- Podman (engine: podman): rootful and rootless, no daemon ------------------------------
bash "$ROOT/scripts/setup-podman.sh"

# --- libvirt, QEMU, Vagrant (the lab VM) ---------------------------------------------
if [ "$WITH_VM" = 1 ] && [ -f "$ROOT/scripts/setup-vm.sh" ]; then
  bash "$ROOT/scripts/setup-vm.sh"
fi
say "ready: $VENV/bin/labkit"

#!/usr/bin/env bash
# Set up and run every test: lint, unit tests, then integration tests on the real
# dockerd (and libvirt/Vagrant for the VM). Extra arguments go to pytest.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$ROOT/scripts/setup.sh"
cd "$ROOT"
# The remote-lab-server test reaches this machine over SSH as if it were another server:
# it needs sshd (started by the test on a loopback port; the package's own start is blocked).
if [ "$(id -u)" = 0 ] && [ ! -x /usr/sbin/sshd ]; then
  block=0
  [ -e /usr/sbin/policy-rc.d ] || { printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; block=1; }
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends openssh-server >/dev/null
  [ "$block" = 0 ] || rm -f /usr/sbin/policy-rc.d
fi
export PATH="$ROOT/.venv/bin:$PATH"
ruff check labkit tests
mkdir -p test-artifacts
exec pytest --junitxml=test-artifacts/junit.xml "$@"

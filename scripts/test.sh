#!/usr/bin/env bash
# Set up and run every test: lint (scripts/lint.sh), unit tests, then integration tests on the
# real dockerd (and libvirt/Vagrant for the VM). Extra arguments go to pytest. `make test`.
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
# The lint step (`make lint`, the pre-commit hooks): a failure is reported and fails the run,
# after the tests have run too, so one CI run shows both.
lint_rc=0
mkdir -p test-artifacts
test_rc=0
if [ $# -eq 0 ]; then
  # the whole suite: in three stages, each as two streams at once (scripts/pytest_ci.py).
  # Lint runs beside stage 1 (which leaves a core half idle: the reliability tests wait on
  # restarted daemons); its lines are prefixed [lint], its exit code read when the tests end.
  rm -f test-artifacts/lint.rc
  { rc=0; bash "$ROOT/scripts/lint.sh" 2>&1 || rc=$?; echo "$rc" > test-artifacts/lint.rc; } | sed -u 's/^/[lint] /' &
  lint_pid=$!
  python3 scripts/pytest_ci.py || test_rc=$?
  wait "$lint_pid" || true
  lint_rc=$(cat test-artifacts/lint.rc 2>/dev/null || echo 1)
else
  bash "$ROOT/scripts/lint.sh" || lint_rc=$?
  pytest --junitxml=test-artifacts/junit.xml "$@" || test_rc=$?
fi
if [ "$lint_rc" != 0 ]; then
  echo "test.sh: lint failed (scripts/lint.sh, output above); pytest exited $test_rc" >&2
  exit 1
fi
exit "$test_rc"

#!/usr/bin/env bash
# Set up and run every test: lint, unit tests, then integration tests on the real
# dockerd (and libvirt/Vagrant for the VM). Extra arguments go to pytest.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$ROOT/scripts/setup.sh"
cd "$ROOT"
export PATH="$ROOT/.venv/bin:$PATH"
ruff check labkit tests
mkdir -p test-artifacts
exec pytest --junitxml=test-artifacts/junit.xml "$@"

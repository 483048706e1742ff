#!/usr/bin/env bash
# The main job on a fresh machine: set up, build what the default lab needs (offline),
# bring the default lab up and show the kernel-sharing facts. Idempotent: run it again
# and nothing is rebuilt or changed.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$ROOT/scripts/setup.sh" "$@"
LABKIT="$ROOT/.venv/bin/labkit"
"$LABKIT" images build debian:11 debian:12 debian:13 busybox
if "$LABKIT" box --help >/dev/null 2>&1; then "$LABKIT" box build; fi
# the built-in default lab by name: another lab up here, a lab.yml in this folder or
# $LABKIT_LAB would otherwise be picked (or refused as ambiguous)
exec "$LABKIT" up --lab demo

#!/usr/bin/env bash
# The lint step, one definition for `make lint`, the pre-commit hooks and CI (scripts/test.sh):
#   ruff check, mypy, yamllint, ansible-lint (offline), shellcheck, and the documentation
#   site built strictly (mkdocs build --strict: a broken link or a page left out of the nav fails).
# Usage: scripts/lint.sh [LINTER...]   (no argument: all of them, in that order)
# Every linter named runs, even after one fails; the exit code is 1 when any failed. Needs the
# virtual environment with the lint and docs extras (scripts/setup.sh) and Debian's shellcheck.
# `ruff format --check` is configured but not enforced yet (CONTRIBUTING.md, "Linters").
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${LABKIT_VENV:-$ROOT/.venv}
cd "$ROOT" || exit 2
# the venv's tools first (ansible-lint also finds ansible-playbook there for its syntax check)
export PATH="$VENV/bin:$PATH"

run_ruff() { ruff check .; }
run_mypy() { mypy; }  # files and settings: pyproject.toml [tool.mypy]
run_yamllint() { yamllint --strict .; }  # settings: .yamllint
run_ansible_lint() { ansible-lint --offline --nocolor -f pep8; }  # settings: .ansible-lint
run_shellcheck() {
  local rc=0
  shellcheck scripts/*.sh .ci/run bench/*.sh || rc=1
  # The box's mmdebstrap hook is part of the box recipe's hash (labkit/boxes.py): any edit,
  # a shellcheck directive too, rebuilds every box. Its one finding, SC2012 (info: `ls` to
  # list /boot's kernels in a fresh Debian root, whose names are plain), is left as it is.
  shellcheck --exclude=SC2012 labkit/vm/box/customize.sh || rc=1
  return "$rc"
}
# The site (mkdocs.yml, docs/) into a temporary folder, thrown away. Not with -q: mkdocs 1.6's
# --quiet keeps warnings out of --strict's count, so the build would pass whatever they say
# (mkdocs/mkdocs#4126); its output is shown only when it fails. NO_MKDOCS_2_WARNING: silences
# mkdocs-material's notice about MkDocs 2, which the docs extra excludes.
run_mkdocs() {
  local site out rc=0
  site=$(mktemp -d) || return 1
  out=$(NO_MKDOCS_2_WARNING=1 mkdocs build --strict -d "$site" 2>&1) || rc=$?
  rm -rf "$site"
  ((rc == 0)) || printf '%s\n' "$out" >&2
  return "$rc"
}

ALL=(ruff mypy yamllint ansible-lint shellcheck mkdocs)
(($#)) || set -- "${ALL[@]}"
failed=()
for linter in "$@"; do
  case "$linter" in
    ruff|mypy|yamllint|ansible-lint|shellcheck|mkdocs) ;;
    *) echo "lint: unknown linter '$linter' (one of: ${ALL[*]})" >&2; exit 2 ;;
  esac
  t0=${EPOCHREALTIME/./}
  if "run_${linter//-/_}"; then status=ok; else status=FAILED; failed+=("$linter"); fi
  ms=$(( (${EPOCHREALTIME/./} - t0) / 1000 ))
  printf 'lint: %-12s %-6s %3d.%ds\n' "$linter" "$status" $((ms / 1000)) $((ms % 1000 / 100))
done
if ((${#failed[@]})); then
  echo "lint: failed: ${failed[*]}" >&2
  exit 1
fi
echo "lint: all passed ($*)"

# Task runner: the test tiers (CONTRIBUTING.md). `make check` is the fast tier (lint + unit,
# no engine, no root); `make test` is what CI runs (scripts/test.sh: set-up, lint, every test).
# Needs the virtual environment: `bash scripts/setup.sh` (as root) makes it.
VENV ?= .venv
PYTEST = $(VENV)/bin/pytest
# extra pytest arguments: make unit ARGS='-k spec -x'
ARGS ?=

.PHONY: help check lint unit integration test format docs

help:
	@echo "make check        fast tier: lint + unit tests (no engine, no root; CONTRIBUTING.md has its time)"
	@echo "make lint         ruff, mypy, yamllint, ansible-lint --offline, shellcheck (scripts/lint.sh)"
	@echo "make unit         tests/unit (no engine)"
	@echo "make integration  tests/reliability + tests/integration (root; dockerd, libvirtd, Vagrant)"
	@echo "make test         what CI runs: bash scripts/test.sh (set-up, lint, every test)"
	@echo "make format FILES='a.py b.py'   ruff format for the files named (CONTRIBUTING.md)"
	@echo "make docs         the documentation site, offline, into build/site (mkdocs build --strict)"

# both tiers run even when lint fails; the target fails if either did
check:
	@rc=0; $(MAKE) --no-print-directory lint || rc=1; $(MAKE) --no-print-directory unit || rc=1; exit $$rc

lint:
	LABKIT_VENV=$(abspath $(VENV)) bash scripts/lint.sh

unit:
	$(PYTEST) -q tests/unit $(ARGS)

integration:
	$(PYTEST) tests/reliability tests/integration $(ARGS)

test:
	bash scripts/test.sh $(ARGS)

format:
	@test -n "$(FILES)" || { echo "make format FILES='...': name the files (ruff format is not adopted repo-wide yet)"; exit 2; }
	$(VENV)/bin/ruff format $(FILES)

# the documentation site (docs/, mkdocs.yml), built offline: open build/site/index.html
docs:
	$(VENV)/bin/mkdocs build --strict -d build/site

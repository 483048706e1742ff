import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# the shared labs and their fixtures (default_lab): one plugin for tests/integration and tests/security
pytest_plugins = ["tests.labs"]

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def labkit_home(tmp_path, monkeypatch):
    """A private LABKIT_HOME for tests that write state."""
    home = tmp_path / "labkit-home"
    monkeypatch.setenv("LABKIT_HOME", str(home))
    return home


@contextlib.contextmanager
def child_holding(code: str) -> Iterator[subprocess.Popen]:
    """A real second process running ``code`` (labkit importable), once it has printed its first
    line (the code prints it when it holds what the test needs); SIGKILLed when the block ends,
    so nothing of its own clean-up runs."""
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip(), "the child process ended early"
        yield child
    finally:
        child.kill()
        child.wait()


def role_module(role: str, name: str):
    """A role's Ansible module (``roles/ROLE/library/NAME.py``) imported as a plain Python
    module, for unit tests of its pure functions."""
    import importlib.util

    from labkit import paths

    # the role's module_utils, importable as Ansible makes them (ansible.module_utils.NAME)
    for util in sorted((paths.roles_dir() / role / "module_utils").glob("*.py")):
        key = f"ansible.module_utils.{util.stem}"
        if key not in sys.modules:
            uspec = importlib.util.spec_from_file_location(key, util)
            umod = importlib.util.module_from_spec(uspec)
            uspec.loader.exec_module(umod)
            sys.modules[key] = umod
    spec = importlib.util.spec_from_file_location(name, paths.roles_dir() / role / "library" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def labkit_cmd() -> list[str]:
    """The real console script of this venv."""
    return [str(Path(sys.executable).parent / "labkit")]


os.environ.setdefault("ANSIBLE_NOCOLOR", "1")


def process_cmdlines() -> list[tuple[int, str]]:
    """(pid, command line with spaces for NULs) of every process on this machine, skipping
    those that end while being read (a process may exit between listing /proc and reading it)."""
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                out.append((int(p.name), (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")))
            except OSError:
                continue
    return out

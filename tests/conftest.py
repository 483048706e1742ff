import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def labkit_home(tmp_path, monkeypatch):
    """A private LABKIT_HOME for tests that write state."""
    home = tmp_path / "labkit-home"
    monkeypatch.setenv("LABKIT_HOME", str(home))
    return home


def labkit_cmd() -> list[str]:
    """The real console script of this venv."""
    return [str(Path(sys.executable).parent / "labkit")]


os.environ.setdefault("ANSIBLE_NOCOLOR", "1")

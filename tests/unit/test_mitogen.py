"""When the lab's content runs with Mitogen's strategy (labkit.ansible.mitogen): pure logic."""
import socket
from pathlib import Path

import pytest

from labkit import paths
from labkit.ansible import mitogen
from labkit.errors import UsageError


def test_the_lab_file_decides_unless_the_variable_says(monkeypatch):
    monkeypatch.delenv(mitogen.ENV, raising=False)
    assert mitogen.wanted(True) and not mitogen.wanted(False)
    monkeypatch.setenv(mitogen.ENV, "0")
    assert not mitogen.wanted(True)
    monkeypatch.setenv(mitogen.ENV, "1")
    assert mitogen.wanted(False)


@pytest.mark.parametrize("bad", ["yes", "off", "2", "true"])
def test_a_variable_that_is_not_0_or_1_is_refused_by_name(bad, monkeypatch):
    monkeypatch.setenv(mitogen.ENV, bad)
    with pytest.raises(UsageError, match=f"{mitogen.ENV}={bad!r}"):
        mitogen.wanted(True)


def test_the_strategy_is_mitogens_own_plugin_folder():
    d = mitogen.strategy_dir()
    assert d is not None and (d / "mitogen_linear.py").is_file()  # a labkit dependency
    assert mitogen.env() == {"ANSIBLE_STRATEGY_PLUGINS": str(d), "ANSIBLE_STRATEGY": "mitogen_linear"}


def test_without_mitogen_installed_the_run_is_plain_ansible(monkeypatch):
    monkeypatch.setattr(mitogen.importlib.util, "find_spec", lambda name: None)
    assert mitogen.strategy_dir() is None and mitogen.env() == {}


def test_a_run_folder_too_deep_for_mitogens_socket_goes_without_it(tmp_path):
    """Mitogen binds a UNIX socket in the run's TMPDIR: 107 bytes at most, so a deep LABKIT_HOME
    runs the content as plain Ansible rather than failing."""
    room = paths.UNIX_PATH_MAX - 1 - mitogen.SOCKET_NAME
    assert mitogen.socket_fits(Path("/" + "d" * (room - 1)))
    assert not mitogen.socket_fits(Path("/" + "d" * room))
    # the kernel's own limit: a socket path of UNIX_PATH_MAX bytes binds, one byte more does not
    fill = paths.UNIX_PATH_MAX - len(str(tmp_path)) - 1
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(tmp_path / ("s" * fill)))
    with socket.socket(socket.AF_UNIX) as s, pytest.raises(OSError):
        s.bind(str(tmp_path / ("t" * (fill + 1))))


def test_a_run_gets_the_strategy_only_when_wanted_and_its_socket_fits(monkeypatch, tmp_path):
    monkeypatch.delenv(mitogen.ENV, raising=False)
    assert mitogen.run_env(True, tmp_path) == mitogen.env() != {}
    assert mitogen.run_env(False, tmp_path) == {}
    assert mitogen.run_env(True, Path("/" + "d" * paths.UNIX_PATH_MAX)) == {}

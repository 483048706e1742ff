"""labkit.vm.sshmux: one shared SSH connection per VM for a command (the real masters are proven
in test_50_verify: `labkit verify` logs in to the default lab's VM once)."""
from __future__ import annotations

import socket
from pathlib import Path

import pytest

from labkit import paths
from labkit.ansible import inventory
from labkit.vm import sshmux


def test_head_puts_each_vms_socket_ahead_of_its_own_settings() -> None:
    text = sshmux.head({"labkit-l-s01-vm": "/run/labkit/mux-1-a-0"})
    assert text == "Host labkit-l-s01-vm\n  ControlPath /run/labkit/mux-1-a-0\n  ControlMaster no\n\n"


def test_settings_add_the_socket_to_the_vms_that_have_one() -> None:
    shared = sshmux.Shared(Path("/x"), {"vm1": "/run/labkit/mux-1"})
    got = shared.settings({"vm1": {"HostName": "10.0.0.2"}, "vm2": {"HostName": "10.0.0.3"}})
    assert got == {"vm1": {"HostName": "10.0.0.2", "ControlPath": "/run/labkit/mux-1"},
                   "vm2": {"HostName": "10.0.0.3"}}


def test_the_inventory_sends_a_vms_commands_through_the_socket() -> None:
    row = {"role": "vm", "name": "vm1"}
    hv = inventory.host_vars(row, {"HostName": "10.0.0.2", "ControlPath": "/run/labkit/mux-1"})
    assert hv["ansible_ssh_common_args"].endswith(" -o ControlMaster=no -o ControlPath=/run/labkit/mux-1")
    assert "ControlPath" not in inventory.host_vars(row, {"HostName": "10.0.0.2"})["ansible_ssh_common_args"]


def test_socket_fits_is_the_kernels_limit(tmp_path: Path) -> None:
    short, long_ = "/tmp/" + "a" * 102, "/tmp/" + "a" * 103  # 107 and 108 bytes
    assert paths.socket_fits(short) and not paths.socket_fits(long_)
    d = tmp_path / "s"
    d.mkdir()
    s = socket.socket(socket.AF_UNIX)
    with pytest.raises(OSError):  # the kernel agrees: one byte more cannot be bound
        s.bind(str(d) + "/" + "b" * (108 - len(str(d)) - 1))
    s.close()


def test_no_vm_no_master(tmp_path: Path) -> None:
    cfg = tmp_path / "ssh_config"
    cfg.write_text("")
    with sshmux.shared(cfg, []) as shared:
        assert shared.config == cfg and shared.sockets == {}


def test_a_vm_that_does_not_answer_is_reached_as_before(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A master that cannot log in (nothing listens on the port) leaves the config as it was,
    and nothing of it behind."""
    monkeypatch.setattr(sshmux, "run_dir", lambda: tmp_path)
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = tmp_path / "ssh_config"
    cfg.write_text(f"Host vm1\n  HostName 127.0.0.1\n  Port {port}\n  ConnectTimeout 5\n")
    with sshmux.shared(cfg, ["vm1"], timeout=10) as shared:
        assert shared.config == cfg and shared.sockets == {}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ssh_config"]

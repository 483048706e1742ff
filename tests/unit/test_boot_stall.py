"""labkit_vagrant's BootStall: a boot that prints nothing and gets no address is stopped (its
`vagrant up` killed) so the module can boot the domain again; a boot that talks is left alone."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

MODULE = Path(__file__).resolve().parents[2] / "roles" / "lab_vm" / "library" / "labkit_vagrant.py"


@pytest.fixture
def lv(monkeypatch):
    spec = importlib.util.spec_from_file_location("labkit_vagrant_under_test", MODULE)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    monkeypatch.setattr(mod, "_virsh", lambda uri, *a: SimpleNamespace(stdout="running\n", returncode=0))
    monkeypatch.setattr(mod, "KILL_GRACE", 0.2)
    return mod


def _watch(lv, console: Path, addr: str | None, monkeypatch) -> tuple[bool, int | None]:
    monkeypatch.setattr(lv, "address", lambda uri, domain: addr)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])  # what `vagrant up` is
    try:
        with lv.BootStall("qemu:///system", "d", str(console), seconds=0.3, poll=0.1) as stall:
            deadline = time.monotonic() + 1.5  # well past its 0.3 s: it has fired by then, or never will
            while time.monotonic() < deadline and not stall.fired:
                time.sleep(0.1)
        child.wait(timeout=10) if stall.fired else None
        return stall.fired, child.poll()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_a_silent_boot_with_no_address_is_stopped(lv, tmp_path, monkeypatch):
    fired, rc = _watch(lv, tmp_path / "console.log", None, monkeypatch)  # no console output at all
    assert fired and rc is not None and rc < 0  # killed by a signal


def test_a_boot_that_printed_or_got_its_address_is_left_alone(lv, tmp_path, monkeypatch):
    console = tmp_path / "console.log"
    console.write_text("Debian GNU/Linux 12 labkit-vm ttyS0\n")
    assert _watch(lv, console, None, monkeypatch) == (False, None)
    console.write_text("")
    assert _watch(lv, console, "192.168.121.10", monkeypatch) == (False, None)


def test_on_user_mode_networking_a_silent_boot_stops_the_ssh_wait(lv, tmp_path, monkeypatch):
    """User-mode networking: `vagrant up` returns as soon as the domain starts, so the SSH wait
    watches the console: still empty after STALL_SECONDS, it returns STALLED (the module then
    boots the domain again); a boot that printed keeps being waited for, on the forwarded port."""
    monkeypatch.setattr(lv, "STALL_SECONDS", 0.2)
    monkeypatch.setitem(lv.NET, "user", True)
    monkeypatch.setitem(lv.NET, "port", 40022)
    tried = []
    monkeypatch.setattr(lv, "_ssh", lambda host, key, cmd, port=None, **kw: tried.append((host, port)) or False)
    console = tmp_path / "console.log"
    keys = [str(tmp_path / "id_ed25519"), str(tmp_path / "insecure_private_key")]
    (tmp_path / "id_ed25519.pub").write_text("ssh-ed25519 AAAA labkit\n")
    assert lv.address("qemu:///session", "d") == "127.0.0.1"  # (domstate: running)
    assert lv.wait_login(None, "vm", "qemu:///session", "d", keys, 5, fresh=True, console=str(console)) == lv.STALLED
    assert tried and {h for h, _ in tried} == {"127.0.0.1"}
    console.write_text("Debian GNU/Linux 12 labkit-vm ttyS0\n")
    t0 = time.monotonic()
    assert lv.wait_login(None, "vm", "qemu:///session", "d", keys, 0.6, fresh=True, console=str(console)) is None
    assert time.monotonic() - t0 >= 0.6  # waited its whole time: no stall with console output


def test_a_free_loopback_port_is_picked(lv):
    import socket

    port = lv.free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))  # nothing holds it

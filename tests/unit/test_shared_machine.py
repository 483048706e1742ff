"""A classroom machine shared by accounts without root: the permission errors name the cause
and the fix (never a daemon to start), the Docker-free path of a rootless Podman lab, the
preparation's id ranges and the shared images' names. Pure logic: the account is faked
(``os.geteuid``, ``os.access``); tests/integration/test_shared_machine.py runs the same as
real ordinary accounts."""
from __future__ import annotations

import os
import stat
from pathlib import Path
from types import SimpleNamespace

import pytest

from labkit import paths
from labkit.api import classroom_machine as cm
from labkit.doctor import machine
from labkit.doctor.check import libvirt_denied
from labkit.engines import docker, shared_images
from labkit.errors import EngineError, SpecError


@pytest.fixture
def student(monkeypatch: pytest.MonkeyPatch) -> None:
    """This process as an ordinary account (uid 1001, 'alice') that may not use the socket."""
    monkeypatch.setattr(os, "geteuid", lambda: 1001)
    monkeypatch.setattr(os, "access", lambda *_a, **_k: False)
    monkeypatch.setattr(docker, "_account", lambda: "alice")


def test_a_socket_the_account_may_not_use_names_account_group_and_who_grants(tmp_path: Path, student: None) -> None:
    sock = tmp_path / "docker.sock"
    sock.write_text("")
    os.chmod(sock, 0o660)
    denied = docker.permission_denied(f"unix://{sock}")
    assert denied is not None
    msg, hint = denied
    assert "this account (alice) may not use the Docker engine" in msg
    assert str(sock) in msg and "-rw-rw----" in msg
    group = msg.rsplit("group ", 1)[1]
    assert f"`usermod -aG {group} alice`" in hint and "root in all but name" in hint
    assert "engine: podman" in hint  # the way without any grant
    # the engine answers: nothing tells a student to start a daemon, as root or otherwise
    assert "dockerd" not in hint and "setup.sh" not in hint and "start" not in hint


def test_client_raises_the_permission_error_not_not_answering(tmp_path: Path, student: None,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    sock = tmp_path / "docker.sock"
    sock.write_text("")
    monkeypatch.setenv("DOCKER_HOST", f"unix://{sock}")
    docker.reset()
    with pytest.raises(EngineError) as e:
        docker.client(timeout=1)
    docker.reset()
    assert "may not use the Docker engine" in e.value.message and "not answering" not in e.value.message
    assert e.value.exit_code == 3


def test_no_permission_error_for_root_a_missing_socket_or_a_remote_engine(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    sock = tmp_path / "docker.sock"
    sock.write_text("")
    monkeypatch.setattr(os, "access", lambda *_a, **_k: False)
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert docker.permission_denied(f"unix://{sock}") is None  # root
    monkeypatch.setattr(os, "geteuid", lambda: 1001)
    assert docker.permission_denied(f"unix://{tmp_path}/none.sock") is None  # not there: "not answering" says it
    assert docker.permission_denied("tcp://10.0.0.1:2375") is None
    monkeypatch.setattr(os, "access", lambda *_a, **_k: True)
    assert docker.permission_denied(f"unix://{sock}") is None  # granted


def test_a_lab_of_podman_containers_needs_docker_only_as_root(monkeypatch: pytest.MonkeyPatch) -> None:
    pod, dk = SimpleNamespace(engine="podman"), SimpleNamespace(engine="docker")
    monkeypatch.setattr(os, "geteuid", lambda: 1001)
    assert docker.needed([pod]) is False
    assert docker.needed([pod, dk]) is True
    monkeypatch.setattr(os, "geteuid", lambda: 0)  # root: Docker's store holds the images Podman loads
    assert docker.needed([pod]) is True


def test_an_account_without_docker_lists_no_docker_hosts_and_asks_no_engine(student: None,
                                                                           monkeypatch: pytest.MonkeyPatch,
                                                                           tmp_path: Path) -> None:
    sock = tmp_path / "docker.sock"
    sock.write_text("")
    monkeypatch.setenv("DOCKER_HOST", f"unix://{sock}")

    def no_engine(*_a: object) -> None:
        raise AssertionError("the engine was asked")

    monkeypatch.setattr(docker, "client_for", no_engine)
    sv = SimpleNamespace(docker_host=None, name="localhost", local=True)
    eng = docker.DockerEngine()
    assert eng.hosts("demo", None, sv) == []  # type: ignore[arg-type]
    assert eng.networks("demo", sv) == []  # type: ignore[arg-type]
    assert eng.remove_images(sv, {"labkit.lab": "demo"}) == []  # type: ignore[arg-type]
    assert docker.usable_here() is False


def test_doctor_skips_docker_for_a_rootless_podman_lab_and_fails_naming_the_grant_otherwise(
        student: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    sock = tmp_path / "docker.sock"
    sock.write_text("")
    monkeypatch.setenv("DOCKER_HOST", f"unix://{sock}")
    pod = SimpleNamespace(containers=[SimpleNamespace(engine="podman")])
    dk = SimpleNamespace(containers=[SimpleNamespace(engine="docker")])
    [c] = machine.check_engine(pod)  # type: ignore[arg-type]
    assert c.status == "skipped" and "not needed" in c.detail
    [c] = machine.check_engine(dk)  # type: ignore[arg-type]
    assert c.status == "fail" and "alice" in c.detail and "usermod -aG" in c.fix and "dockerd" not in c.fix


POLKIT = ("error: failed to connect to the hypervisor\n"
          "error: internal error: Unable to get system bus connection: Could not connect: No such file or directory")


def test_libvirt_refusal_names_account_group_and_instructor() -> None:
    msg, fix = libvirt_denied(POLKIT, uid=1001, account="alice") or ("", "")
    assert "this account (alice) may not use libvirt's system instance (qemu:///system)" in msg
    assert "system bus" in msg
    assert "`usermod -aG libvirt alice`" in fix and "root in all but name" in fix
    assert "libvirtd -d" not in fix and "setup.sh" not in fix
    assert libvirt_denied(POLKIT, uid=0) is None  # root: a real libvirtd problem, said as before
    assert libvirt_denied("error: Connection refused", uid=1001, account="alice") is None
    assert libvirt_denied("", uid=1001) is None


def test_id_ranges_never_overlap_an_existing_one() -> None:
    entries = cm.parse_ranges("root:1000000000:65536\nbob:100000:65536\nbad line\ncarol:165536:65536\n")
    assert [e[0] for e in entries] == ["root", "bob", "carol"]
    assert cm.free_start(entries) == 231072
    assert cm.free_start([]) == cm.FIRST_ID
    assert cm.free_start([("x", 300000, 10)]) == cm.FIRST_ID  # room before it
    assert cm.free_start([("x", 150000, 10)]) == 150010      # overlaps: after it
    assert cm.has_range(entries, "bob", 1002) and not cm.has_range(entries, "dave", 1003)
    assert cm.has_range([("1003", 5, 65536)], "dave", 1003)  # by uid too


def test_unknown_account_or_group_is_bad_input_before_any_change() -> None:
    with pytest.raises(SpecError, match="--account nosuchstudent42: no such account"):
        cm.accounts_of(["nosuchstudent42"], None)
    with pytest.raises(SpecError, match="--group nosuchgroup42: no such group"):
        cm.accounts_of([], "nosuchgroup42")
    with pytest.raises(SpecError, match="no account to prepare"):
        cm.accounts_of([], None)


def test_the_preparation_refuses_to_run_without_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1001)
    with pytest.raises(EngineError, match="runs as root"):
        cm.prepare_classroom(SimpleNamespace(containers=[]), ["root"])  # type: ignore[arg-type]


def test_shared_image_names_match_the_roles(tmp_path: Path) -> None:
    assert shared_images.stem("labkit/debian:12") == "labkit_debian_12"
    assert shared_images.stem("localhost:5000/x/busybox:1.36") == "localhost_5000_x_busybox_1_36"
    (tmp_path / "labkit_debian_12.tar").write_text("")
    (tmp_path / "labkit_debian_12.id").write_text("sha256:x\n")
    (tmp_path / "labkit_busybox_latest.tar").write_text("")  # no ID: not usable
    assert shared_images.missing(["labkit/debian:12", "labkit/busybox:latest"], tmp_path) == ["labkit/busybox:latest"]
    role = (Path(__file__).parents[2] / "roles/lab_podman/tasks/server.yml").read_text()
    assert "regex_replace('[^A-Za-z0-9]+', '_') }}.tar" in role and "}}.id\"]" in role


def test_an_account_without_a_login_session_gets_one_private_runtime_folder(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1001)
    monkeypatch.setenv("HOME", str(tmp_path))
    # set, then removed: monkeypatch then restores it as it was (session_env writes os.environ
    # itself, and a folder of this test's left in it would outlive the test: dockerd restarted by
    # a later test inherited one, and every `docker exec` failed once it was gone)
    monkeypatch.setenv("XDG_RUNTIME_DIR", "unset")
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    monkeypatch.setattr(paths, "private_dir", lambda d: (d.mkdir(parents=True, mode=0o700, exist_ok=True), d)[1])
    paths.session_env()
    d = Path(os.environ["XDG_RUNTIME_DIR"])
    assert d == tmp_path / ".cache/labkit/xdg-run" and stat.S_IMODE(d.stat().st_mode) == 0o700
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))  # one that works is kept
    paths.session_env()
    assert os.environ["XDG_RUNTIME_DIR"] == str(tmp_path)


def test_the_vm_path_says_the_same_for_an_account_libvirt_refuses(monkeypatch: pytest.MonkeyPatch) -> None:
    from labkit.vm import vms

    monkeypatch.setattr(os, "geteuid", lambda: 1001)
    monkeypatch.setenv("LABKIT_LIBVIRT_URI", "qemu:///system")  # an account that asks for the system instance
    monkeypatch.setattr(vms, "libvirt_answers", lambda: POLKIT.splitlines()[-1])
    with pytest.raises(EngineError) as e:
        vms.check_libvirt()
    assert "may not use libvirt's system instance" in e.value.message
    assert "usermod -aG libvirt" in e.value.hint and "libvirtd -d" not in e.value.hint


def test_an_ordinary_account_uses_its_session_instance_and_is_never_told_to_start_a_daemon(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from labkit import paths
    from labkit.errors import LabkitError
    from labkit.vm import vms

    monkeypatch.delenv("LABKIT_LIBVIRT_URI", raising=False)
    monkeypatch.setattr(os, "geteuid", lambda: 1001)
    assert paths.libvirt_uri() == vms.uri() == "qemu:///session"
    assert vms.uri(local=False) == "qemu:///system"  # a remote lab server: labkit is root there
    monkeypatch.setattr(vms, "libvirt_answers", lambda: "Failed to connect socket")
    with pytest.raises(EngineError) as e:
        vms.check_libvirt()
    assert "qemu:///session" in e.value.message and "libvirtd -d" not in e.value.hint
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert paths.libvirt_uri() == "qemu:///system"
    monkeypatch.setenv("LABKIT_LIBVIRT_URI", "qemu+ssh://elsewhere/system")
    with pytest.raises(LabkitError) as bad:
        paths.libvirt_uri()
    assert "LABKIT_LIBVIRT_URI" in bad.value.message


def _run_module(mod: object, args: dict, capsys: pytest.CaptureFixture[str]) -> dict:
    """An Ansible module's main() in this process with ``args``: its JSON result."""
    import json

    from ansible.module_utils import basic
    from ansible.module_utils.common.text.converters import to_bytes

    basic._ANSIBLE_ARGS = to_bytes(json.dumps({"ANSIBLE_MODULE_ARGS": args}))  # type: ignore[attr-defined]
    basic._ANSIBLE_PROFILE = "legacy"  # type: ignore[attr-defined]
    with pytest.raises(SystemExit):
        mod.main()  # type: ignore[attr-defined]
    return dict(json.loads(capsys.readouterr().out))


def test_the_firewall_adds_no_rule_as_an_ordinary_account_and_says_so(monkeypatch: pytest.MonkeyPatch,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from tests.conftest import role_module

    fw = role_module("lab_firewall", "labkit_firewall")
    monkeypatch.setattr(os, "geteuid", lambda: 1001)
    monkeypatch.setattr(fw, "take_lock", lambda *_a: pytest.fail("a lock was taken"))
    monkeypatch.setattr(fw, "usable_tables", lambda *_a: pytest.fail("iptables was asked"))
    warned: list[str] = []
    monkeypatch.setattr(fw.AnsibleModule, "warn", lambda _self, msg: warned.append(msg))
    out = _run_module(fw, {"lab": "demo", "students": [{"student": "s01", "docker_bridge": "br-0123456789ab"}]}, capsys)
    assert out["changed"] is False and out["skipped_not_root"] is True and out["rules"] == 0
    assert any("lab demo: no firewall rules (uid 1001 is not root)" in w for w in warned), warned
    warned.clear()
    down = _run_module(fw, {"lab": "demo", "state": "absent"}, capsys)  # it made none: none to remove
    assert down["changed"] is False and down["skipped_not_root"] is True and warned == []


def test_doctor_checks_a_rootless_podman_labs_images_in_the_shared_copy(monkeypatch: pytest.MonkeyPatch,
                                                                        tmp_path: Path) -> None:
    from labkit.doctor import lab as doctor_lab
    from labkit.lab.spec import parse_lab

    monkeypatch.setattr(os, "geteuid", lambda: 1001)  # an ordinary account: Docker not needed for Podman
    monkeypatch.setenv("LABKIT_HOME", str(tmp_path / "state"))
    monkeypatch.setattr(shared_images, "SHARED_DIR", tmp_path)
    monkeypatch.setattr(shared_images.missing, "__defaults__", (tmp_path,))
    lab = parse_lab({"name": "t30", "students": ["s01"], "engine": "podman", "containers": ["debian:12", "debian:13"],
                     "vm": {"enabled": False}}, "<test>")
    (tmp_path / "labkit_debian_12.tar").write_text("")
    (tmp_path / "labkit_debian_12.id").write_text("sha256:x\n")
    [img] = [c for c in doctor_lab.check_lab(lab, engine_ok=False) if c.name == "images"]
    assert img.status == "fail" and img.detail.endswith("labkit/debian:13") and "prepare --classroom" in img.fix
    (tmp_path / "labkit_debian_13.tar").write_text("")
    (tmp_path / "labkit_debian_13.id").write_text("sha256:y\n")
    [img] = [c for c in doctor_lab.check_lab(lab, engine_ok=False) if c.name == "images"]
    assert img.status == "ok", img

"""Pure logic of the LXC engine: role lab_lxc's module (configuration, limits, markers, units),
labkit.engines.lxc (hosts by marker, lxc-attach command lines, doctor's id map check) and fact K6
for system containers. No LXC, no Docker: folders under tmp_path stand for /var/lib/lxc."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from labkit.engines import lxc as engine_lxc
from labkit.observe import checks
from labkit.observe.facts import HostFacts
from tests.conftest import role_module


def module():
    return role_module("lab_lxc", "labkit_lxc")


PARAMS = {"lab": "net101", "idmap_base": 1000000000, "memory": "256m", "cpus": 1.5, "pids": 128,
          "cap_keep": ["CHOWN", "setuid", "kill"]}
ITEM = {"name": "labkit-net101-alice-debian12-lxc", "hostname": "alice-debian12-lxc", "student": "alice",
        "distro": "debian:12", "image": "labkit/debian:12", "network": "labkit-net101-alice"}


@pytest.mark.parametrize("v2", [False, True])
def test_config_is_unprivileged_hardened_and_limited(monkeypatch, v2):
    m = module()
    monkeypatch.setattr(m.os.path, "exists", lambda p: v2 if p == "/sys/fs/cgroup/cgroup.controllers" else False)
    text = m.config(PARAMS, ITEM, "/var/lib/lxc/x", "br-0123456789ab", "10.200.3.254", 24, "10.200.3.1", 1000131072)
    lines = text.splitlines()
    assert "lxc.idmap = u 0 1000131072 65536" in lines and "lxc.idmap = g 0 1000131072 65536" in lines
    assert "lxc.cap.keep = chown kill setuid" in lines
    assert "lxc.no_new_privs = 1" in lines
    assert "lxc.net.0.link = br-0123456789ab" in lines
    assert "lxc.net.0.ipv4.address = 10.200.3.254/24" in lines
    assert "lxc.uts.name = alice-debian12-lxc" in lines
    assert "# labkit.lab = net101" in lines
    if v2:
        assert {"lxc.cgroup2.memory.max = 268435456", "lxc.cgroup2.pids.max = 128",
                "lxc.cgroup2.cpu.max = 150000 100000"} <= set(lines)
    else:
        assert {"lxc.cgroup.memory.limit_in_bytes = 268435456", "lxc.cgroup.pids.max = 128",
                "lxc.cgroup.cpu.cfs_quota_us = 150000"} <= set(lines)
    assert not any("privileged" in ln or "cap.drop" in ln for ln in lines)


@pytest.mark.parametrize(("text", "n"), [("256m", 256 * 2**20), ("1g", 2**30), ("1048576", 2**20), ("512k", 512 * 1024)])
def test_memory_units(text, n):
    assert module().to_bytes(text) == n


def _marker(root, name, **kw):
    (root / name).mkdir()
    (root / name / "labkit.json").write_text(json.dumps(kw))


def test_containers_are_found_by_marker_not_by_name(tmp_path):
    m = module()
    _marker(tmp_path, "labkit-a-s1-debian12-lxc", lab="a", student="s1", distro="debian:12")
    _marker(tmp_path, "labkit-a-s2-debian12-lxc", lab="a", student="s2", distro="debian:12")
    _marker(tmp_path, "labkit-a-b-s1-debian12-lxc", lab="a-b", student="s1", distro="debian:12")  # lab a-b's
    (tmp_path / "labkit-a-s3-debian12-lxc").mkdir()  # no marker: not labkit's to remove
    (tmp_path / "other").mkdir()
    assert [c["name"] for c in m.found(str(tmp_path), "a")] == ["labkit-a-s1-debian12-lxc", "labkit-a-s2-debian12-lxc"]
    assert [c["name"] for c in m.found(str(tmp_path), "a", "s2")] == ["labkit-a-s2-debian12-lxc"]
    assert m.found(str(tmp_path / "missing"), "a") == []


class _Server:
    name, local = "localhost", True


def test_engine_rows_and_shell_argv(tmp_path, monkeypatch):
    _marker(tmp_path, "labkit-a-s1-debian12-lxc", lab="a", student="s1", distro="debian:12", image="labkit/debian:12",
            address="10.200.3.254")
    etc = tmp_path / "labkit-a-s1-debian12-lxc" / "rootfs" / "etc"
    etc.mkdir(parents=True)
    (etc / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\nstudent:x:1000:1000::/home/student:/bin/sh\n")
    monkeypatch.setattr(engine_lxc, "LXC_PATH", tmp_path)
    monkeypatch.setattr(engine_lxc, "state", lambda name: "running")
    rows = engine_lxc.hosts("a", None, _Server(), [""], lxc_path=tmp_path)
    assert [r.as_dict() for r in rows] == [{"name": "labkit-a-s1-debian12-lxc", "role": "container", "student": "s1", "distro": "debian:12",
                     "state": "running", "image": "labkit/debian:12", "spec": "lxc://labkit-a-s1-debian12-lxc",
                     "server": "localhost", "local": True, "engine": "lxc", "user": "", "address": "10.200.3.254"}]
    assert engine_lxc.hosts("a", ["s9"], _Server(), [""], lxc_path=tmp_path) == []
    argv = engine_lxc.exec_argv(rows[0], ["id"], user="student", workdir="/home/student")
    assert argv[:6] == ["lxc-attach", "-n", "labkit-a-s1-debian12-lxc", "--clear-env", "-u", "1000"]
    assert "HOME=/home/student" in argv and not [a for a in argv if a.startswith(("-e", "--elevated"))]
    assert argv[-2:] == ["/home/student", "id"]
    root = engine_lxc.exec_argv(rows[0], ["/bin/sh", "-c"])
    assert "-u" not in root and "HOME=/root" in root
    # the facts' probe: labkit's own code on the server, which runs the container's shell confined
    assert engine_lxc.probe_argv(rows[0])[1:] == ["-m", "labkit.engines.lxc_server", "probe", "labkit-a-s1-debian12-lxc"]
    with pytest.raises(Exception, match="no user 'bob' in labkit-a-s1-debian12-lxc"):
        engine_lxc.exec_argv(rows[0], ["id"], user="bob")
    (etc / "passwd").unlink()
    (etc / "passwd").symlink_to("/etc/passwd")  # the server's own: not read
    with pytest.raises(Exception, match=r"cannot read the accounts of labkit-a-s1-debian12-lxc \(its /etc/passwd\): "
                                        r"/etc/passwd: a symlink, not a regular file"):
        engine_lxc.exec_argv(rows[0], ["id"], user="root")


def test_doctor_names_the_missing_id_map(tmp_path):
    """root's subordinate ids must give every container its own range: 4096 ranges of 65536
    ids from 1000000000, in one line or several; one container's range (an earlier labkit's
    line) is not enough."""
    files = [str(tmp_path / "subuid"), str(tmp_path / "subgid")]
    (tmp_path / "subuid").write_text("root:1000000000:65536\n")
    name, status, detail, fix = engine_lxc._subids(files)
    assert status == "fail" and files[0] in detail and files[1] in detail and "1000000000-1268435455" in detail
    assert "root:1000000000:268435456" in fix
    (tmp_path / "subuid").write_text("root:1000000000:65536\nroot:1000065536:268369920\n")  # two lines, together
    (tmp_path / "subgid").write_text("lkalice:100000:65536\nroot:1000000000:268435456\n")
    assert engine_lxc._subids(files)[1] == "ok"
    (tmp_path / "subgid").write_text("root:1000000000:65536\nroot:1000131072:268304384\n")  # a gap of 65536
    assert engine_lxc._subids(files)[1:3] == ("fail", f"root is not given all of 1000000000-1268435455 in {files[1]}")


SERVER = HostFacts("lab-server", "server", kernel_release="6.18.44", kernel_version="#1 SMP", boot_id="aaaa",
                   pid1="systemd", pkg_mgr="apt-get")


def _lxc(**kw):
    base = dict(host="labkit-l-s1-debian12-lxc", role="container", student="s1", distro="debian:12",
                kernel_release="6.18.44", kernel_version="#1 SMP", boot_id="aaaa", pid1="init", pkg_mgr="apt-get")
    base.update(kw)
    h = HostFacts(**base)
    h.engine = "lxc"  # type: ignore[attr-defined]  # (a field once the engine core has it)
    return h


def test_k6_an_lxc_system_container_runs_an_init_but_boots_no_kernel():
    assert "no kernel booted" in checks.k6(_lxc(), SERVER)
    with pytest.raises(checks.FactFailed, match="system container's PID 1 is 'sleep', expected an init"):
        checks.k6(_lxc(pid1="sleep"), SERVER)
    with pytest.raises(checks.FactFailed, match="not on the server's running kernel"):
        checks.k6(_lxc(boot_id="bbbb"), SERVER)
    docker = _lxc(pid1="init")
    docker.engine = "docker"  # type: ignore[attr-defined]
    with pytest.raises(checks.FactFailed, match="container PID 1 is the init system 'init'"):
        checks.k6(docker, SERVER)


def test_lxc_is_checked_where_it_goes_before_anything_is_made():
    from types import SimpleNamespace as NS

    from labkit.engines.lxc import LxcEngine
    from labkit.errors import EngineError

    check_lxc = LxcEngine().preflight
    servers = [NS(name="localhost", local=True), NS(name="server-2", local=False)]
    ok = [NS(name="labkit-l-a-debian12-lxc", engine="lxc", server="localhost"),
          NS(name="labkit-l-b-debian12", engine="docker", server="server-2")]
    asked: list[str] = []

    def fine(sv):
        asked.append(sv.name)
        return []

    check_lxc("l", ok, servers, installed=lambda: [], remote_lacks=fine)
    assert asked == []  # no LXC container on server-2: not asked
    remote = ok + [NS(name="labkit-l-b-debian12-lxc", engine="lxc", server="server-2")]
    check_lxc("l", remote, servers, installed=lambda: [], remote_lacks=fine)
    assert asked == ["server-2"]
    with pytest.raises(EngineError, match="engine lxc: lxc-start, the lxc Python binding missing on this machine") as e:
        check_lxc("l", ok, servers, installed=lambda: ["lxc-start", "the lxc Python binding"])
    assert e.value.exit_code == 3 and "setup.sh" in e.value.hint
    # LXC only on the remote server: nothing of LXC needed here (labkit_lxc reaches it over SSH)
    check_lxc("l", remote[1:], servers, installed=lambda: ["lxc-start"], remote_lacks=fine)
    with pytest.raises(EngineError, match=r"engine lxc: lab server server-2 lacks lxc-attach, "
                                          r"root:1000000000:65536 in /etc/subuid \(1 LXC container\(s\) planned "
                                          r"there: labkit-l-b-debian12-lxc\)") as e:
        check_lxc("l", remote, servers, installed=lambda: [],
                      remote_lacks=lambda sv: ["lxc-attach", "root:1000000000:65536 in /etc/subuid"])
    assert e.value.exit_code == 3 and "labkit prepare -i INVENTORY --lxc" in e.value.hint
    check_lxc("l", [c for c in ok if c.engine != "lxc"], servers, installed=lambda: ["lxc-start"])  # no LXC: no need


def test_a_remote_lab_server_gets_its_lxc_wrappers_and_rows(tmp_path, monkeypatch):
    from types import SimpleNamespace as NS

    from labkit.ansible import inventory
    from labkit.engines.lxc import LxcEngine
    from labkit.servers.base import Server

    monkeypatch.setenv("LABKIT_HOME", str(tmp_path))
    far = Server("server-2", False, {"ansible_host": "10.0.0.2", "ansible_port": 2200, "ansible_user": "ops",
                                     "ansible_become": True, "ansible_python_interpreter": "/usr/bin/python3.11"})
    items = [NS(name="labkit-l-a-debian12-lxc", engine="lxc", server="localhost"),
             NS(name="labkit-l-b-debian12-lxc", engine="lxc", server="server-2"),
             NS(name="labkit-l-c-debian12-lxc", engine="lxc", server="server-2")]
    remote = LxcEngine().playbook_vars("l", items, [Server("localhost", True), far])["labkit_lxc_remote"]
    assert list(remote) == ["server-2"] and remote["server-2"].endswith("/lxc-ssh/server-2/lxc-attach")
    text = Path(remote["server-2"]).read_text()
    assert "main('attach', [" in text and "'ops@10.0.0.2'], ['sudo', '-n']" in text and "'-p', '2200'" in text
    assert "'/usr/bin/python3.11'" in text and Path(remote["server-2"]).stat().st_mode & 0o111
    read = Path(remote["server-2"]).with_name("lxc-read").read_text()
    assert "main('read', [" in read
    answer = [{"name": "labkit-l-b-debian12-lxc", "state": "running",
               "marker": {"lab": "l", "student": "b", "distro": "debian:12", "image": "labkit/debian:12"}}]
    asked = []
    monkeypatch.setattr(engine_lxc, "read", lambda cli, args: asked.append((cli, args)) or answer)
    rows = engine_lxc.hosts("l", ["b"], far, [""])
    assert asked == [(str(Path(remote["server-2"]).with_name("lxc-read")), ["scan", "l", "b"])]
    assert rows[0]["server"] == "server-2" and rows[0]["local"] is False and rows[0]["lxc_attach"] == remote["server-2"]
    root = engine_lxc.exec_argv(rows[0], ["id"])
    assert root[:4] == [remote["server-2"], "-n", "labkit-l-b-debian12-lxc", "--clear-env"]
    hv = inventory.host_vars(dict(rows[0], role="container"))
    assert hv["ansible_connection"] == "labkit_lxc" and hv["ansible_lxc_attach_executable"] == remote["server-2"]
    here = inventory.host_vars({"name": "x", "role": "container", "engine": "lxc", "distro": "debian:12"})
    assert here["ansible_connection"] == "labkit_lxc" and "ansible_lxc_attach_executable" not in here  # lxc-attach


def test_the_server_side_reads_answer_json(tmp_path, monkeypatch, capsys):
    from labkit.engines import lxc_server

    _marker(tmp_path, "labkit-l-a-debian12-lxc", lab="l", student="a", distro="debian:12")
    _marker(tmp_path, "labkit-l-b-debian12-lxc", lab="l", student="b", distro="debian:12")
    etc = tmp_path / "labkit-l-a-debian12-lxc" / "rootfs" / "etc"
    etc.mkdir(parents=True)
    (etc / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\nstudent:x:1000:1000::/home/student:/bin/sh\n")
    monkeypatch.setattr(lxc_server, "LXC_PATH", str(tmp_path))
    monkeypatch.setattr(lxc_server, "state", lambda name: "running")
    assert lxc_server.main(["scan", "l", "b"]) == 0
    assert json.loads(capsys.readouterr().out) == [{"name": "labkit-l-b-debian12-lxc", "state": "running", "marker": {
        "lab": "l", "student": "b", "distro": "debian:12"}}]
    assert lxc_server.main(["account", "labkit-l-a-debian12-lxc", "student"]) == 0
    assert json.loads(capsys.readouterr().out) == [1000, 1000, "/home/student"]
    assert lxc_server.main(["account", "labkit-l-a-debian12-lxc", "bob"]) == 0
    assert json.loads(capsys.readouterr().out) is None
    assert lxc_server.main(["rm", "-rf"]) == 2


def test_the_lxc_ssh_wrapper_quotes_every_word_and_asks_for_a_terminal_only_from_one():
    from labkit.engines import lxc_ssh

    line = lxc_ssh.remote(["sudo", "-n"], ["lxc-attach"], ["-n", "c1", "--", "/bin/sh", "-c", "echo $HOME; it's"])
    assert line == "sudo -n lxc-attach -n c1 -- /bin/sh -c 'echo $HOME; it'\"'\"'s'"
    assert lxc_ssh.tty_wanted(True, True) and not lxc_ssh.tty_wanted(False, True) and not lxc_ssh.tty_wanted(True, False)
    assert lxc_ssh.main("nonsense", ["ssh", "nowhere.invalid"], [], []) == 2


def test_the_connection_plugin_runs_lxc_attach_with_a_clean_root_environment():
    import importlib.util

    from labkit.paths import playbooks_dir

    spec = importlib.util.spec_from_file_location("labkit_lxc_plugin", playbooks_dir() / "connection_plugins" / "labkit_lxc.py")
    assert spec and spec.loader
    plugin = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plugin)
    argv = plugin.attach_argv("/x/lxc-ssh/far/lxc-attach", "c1", "", ["/bin/sh", "-c", "echo hi"])
    assert argv[:4] == ["/x/lxc-ssh/far/lxc-attach", "-n", "c1", "--clear-env"]
    assert "HOME=/root" in argv and argv[-4:] == ["--", "/bin/sh", "-c", "echo hi"]
    assert plugin.attach_argv("lxc-attach", "c1", "/srv/lxc", ["true"])[3:5] == ["-P", "/srv/lxc"]
    assert plugin.Connection.has_pipelining and plugin.Connection.transport == "labkit_lxc"


def test_the_connection_plugin_runs_commands_and_moves_files_through_lxc_attach(tmp_path):
    """The real plugin, loaded by Ansible, with a stand-in lxc-attach that runs the command after
    `--` here: a command with stdin (pipelining), a file in (put_file) and back (fetch_file)."""
    from ansible.playbook.play_context import PlayContext
    from ansible.plugins.loader import connection_loader

    from labkit.paths import playbooks_dir

    fake = tmp_path / "lxc-attach"
    fake.write_text('#!/bin/sh\nprintf "%s\\n" "$*" >> "${0}.log"\nwhile [ "$1" != "--" ]; do shift; done\nshift\nexec "$@"\n')
    fake.chmod(0o755)
    connection_loader.add_directory(str(playbooks_dir() / "connection_plugins"))
    conn = connection_loader.get("labkit_lxc", PlayContext(), None)
    conn.set_options(var_options={"inventory_hostname": "c1", "ansible_lxc_attach_executable": str(fake)})
    rc, out, err = conn.exec_command("echo in; cat; exit 3", in_data=b"the module\n")
    assert (rc, out, err) == (3, b"in\nthe module\n", b"")
    src, into, back = tmp_path / "src bin", tmp_path / "in it's", tmp_path / "back"
    src.write_bytes(bytes(range(256)) * 100)
    conn.put_file(str(src), str(into))
    conn.fetch_file(str(into), str(back))
    assert into.read_bytes() == back.read_bytes() == src.read_bytes()
    log = (tmp_path / "lxc-attach.log").read_text().splitlines()
    assert all(ln.startswith("-n c1 --clear-env -v PATH=") and " -v HOME=/root " in ln for ln in log), log
    with pytest.raises(Exception, match="failed to fetch .*/missing"):
        conn.fetch_file(str(tmp_path / "missing"), str(tmp_path / "x"))


def test_the_lxc_layout_is_written_once_and_the_rest_agrees():
    """Role lab_lxc's module_utils/labkit_lxc_layout.py is the one place of LXC's folder, marker
    and id map: the module, labkit's engine and its server-side reads take it from there, and
    what cannot import Python (the role's default, the set-up script) says the same."""
    import yaml

    from labkit import paths
    from labkit.engines import lxc, lxc_layout, lxc_server

    mod = module()
    assert (mod.MARKER, mod.IDMAP_RANGE, mod.IDMAP_SLOTS) == (lxc_layout.MARKER, lxc_layout.IDMAP_RANGE, 4096)
    assert (str(lxc.LXC_PATH), lxc.MARKER, lxc.IDMAP_BASE) == (lxc_layout.LXC_PATH, "labkit.json", 1000000000)
    assert (lxc_server.LXC_PATH, lxc_server.IDMAP, lxc_server.BUSYBOX) == (
        lxc_layout.LXC_PATH, "root:1000000000:268435456", lxc_layout.BUSYBOX)
    defaults = yaml.safe_load((paths.roles_dir() / "lab_lxc" / "defaults" / "main.yml").read_text())
    assert defaults["lab_lxc_idmap_base"] == lxc_layout.IDMAP_BASE
    setup = (paths.ansible_root() / "scripts" / "setup-lxc.sh").read_text()
    assert lxc_layout.IDMAP in setup


def test_the_server_side_reads_run_from_stdin_with_the_layout_first(tmp_path):
    """On a remote lab server labkit's reads are the layout's source, then lxc_server.py, run by
    a bare Python that has no labkit: the names are defined and a scan answers."""
    import subprocess
    import sys

    from labkit.engines import lxc_layout

    src = lxc_layout.server_source()
    p = subprocess.run([sys.executable, "-I", "-", "needs"], input=src, capture_output=True, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert isinstance(json.loads(p.stdout), list)  # what the server lacks, read with the layout's names
    # the names as the server's Python sees them, before lxc_server's main runs
    head = src[:src.index(b"if __name__")] + b"print(MARKER, IDMAP, BUSYBOX, LXC_PATH, rootfs_read.__name__)\n"
    p = subprocess.run([sys.executable, "-I", "-"], input=head, capture_output=True, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert p.stdout.decode().split() == ["labkit.json", "root:1000000000:268435456", "/bin/busybox", "/var/lib/lxc",
                                         "rootfs_read"]

"""The lab's inventory (pure: rows in, Ansible's structure out) and the lab file's own
content keys (paths resolved at load, missing ones named)."""
import json

import pytest
import yaml

from labkit.ansible import inventory as inv
from labkit.errors import SpecError
from labkit.lab.spec import load_lab

ROWS = [
    {"name": "labkit-l-s1-debian12", "role": "container", "distro": "debian:12", "student": "s1", "server": "localhost"},
    {"name": "labkit-l-s1-busybox", "role": "container", "distro": "busybox", "student": "s1", "server": "localhost"},
    {"name": "labkit-l-s-2-debian12", "role": "container", "distro": "debian:12", "student": "s-2", "server": "srv2",
     "local": False, "docker_host": "ssh://root@srv2:22"},
    {"name": "labkit-l-s1-vm", "role": "vm", "distro": "debian:12", "student": "s1", "server": "localhost"},
]
SSH = {"labkit-l-s1-vm": {"HostName": "10.96.0.5", "Port": "22", "User": "vagrant",
                          "IdentityFile": "/state/labs/l/vagrant/s1/private_key", "ProxyCommand": "ssh -W %h:%p srv"}}


def _groups(i):
    return {g: sorted(b["hosts"]) for g, b in i["all"]["children"].items()}


def test_groups_a_user_and_labkit_shell_expect():
    g = _groups(inv.build(ROWS, SSH))
    assert g["python"] == ["labkit-l-s-2-debian12", "labkit-l-s1-debian12", "labkit-l-s1-vm"]
    assert g["no_python"] == ["labkit-l-s1-busybox"]
    assert g["debian12"] == ["labkit-l-s-2-debian12", "labkit-l-s1-debian12"] and g["vm"] == ["labkit-l-s1-vm"]
    assert g["student_s_2"] == ["labkit-l-s-2-debian12"] and g["server_srv2"] == ["labkit-l-s-2-debian12"]
    assert g["family_debian"] and g["containers"] and g["vms"] == ["labkit-l-s1-vm"]
    assert "lab_servers" not in g  # never, unless asked for


def test_host_vars_name_key_paths_never_keys():
    hv = inv.build(ROWS, SSH)["all"]["children"]["lab"]["hosts"]
    vm = hv["labkit-l-s1-vm"]
    assert vm["ansible_ssh_private_key_file"].endswith("private_key") and "ProxyCommand" in vm["ansible_ssh_common_args"]
    # a new host key at every boot: not checked by ssh, Ansible or Mitogen (which reads this variable)
    assert "StrictHostKeyChecking=no" in vm["ansible_ssh_common_args"] and vm["ansible_host_key_checking"] is False
    assert hv["labkit-l-s-2-debian12"]["ansible_docker_extra_args"] == "-H ssh://root@srv2:22"
    assert "ansible_python_interpreter" not in hv["labkit-l-s1-busybox"]


@pytest.mark.parametrize("fmt", ["yaml", "json", "ini"])
def test_every_format_renders(fmt, tmp_path):
    text = inv.render(inv.build(ROWS, SSH, {"python": {"lesson": 3}}), fmt)
    if fmt == "json":
        data = json.loads(text)
        assert data["python"]["vars"] == {"lesson": 3} and "labkit-l-s1-vm" in data["_meta"]["hostvars"]
    elif fmt == "yaml":
        assert yaml.safe_load(text)["all"]["children"]["python"]["vars"] == {"lesson": 3}
    else:
        assert "[python:vars]\nlesson=3" in text and "[no_python]\nlabkit-l-s1-busybox" in text


def test_inventory_file_is_private(tmp_path):
    p = inv.write_to(tmp_path / "hosts.yml", inv.build(ROWS, SSH))
    assert p.stat().st_mode & 0o777 == 0o600


def _lab(tmp_path, provision: str, extra: str = "") -> str:
    f = tmp_path / "lab.yml"
    f.write_text(f"name: byo\nstudents: [a]\ncontainers: [debian:12]\nvm: {{enabled: false}}\n{provision}{extra}")
    return str(f)


def test_content_paths_are_resolved_from_the_lab_file(tmp_path):
    (tmp_path / "site.yml").write_text("---\n[]\n")
    (tmp_path / "roles" / "web" / "tasks").mkdir(parents=True)
    (tmp_path / "tests").mkdir()
    lab = load_lab(_lab(tmp_path, "provision:\n  playbooks: [site.yml]\n  roles: [web, {role: web, hosts: vms}]\n",
                        "tests: [tests]\n"))
    assert lab.provision.playbooks == [str(tmp_path / "site.yml")]
    assert lab.provision.roles_path == [str(tmp_path / "roles")]
    assert [(r.role, r.hosts) for r in lab.provision.roles] == [("web", None), ("web", "vms")]
    assert lab.tests == [str(tmp_path / "tests")] and lab.provision.hosts == "python"
    assert lab.provision.skip_tags == ["molecule-notest", "notest"]


def test_a_missing_playbook_or_role_names_key_path_and_resolved_path(tmp_path):
    with pytest.raises(SpecError) as e:
        load_lab(_lab(tmp_path, "provision:\n  playbooks: [nope.yml]\n"))
    assert e.value.exit_code == 2 and f"lab.yml:6: provision.playbooks[0]: {tmp_path}/nope.yml: not found" in e.value.message
    with pytest.raises(SpecError) as e:
        load_lab(_lab(tmp_path, "provision:\n  roles: [ghost]\n"))
    assert "provision.roles[0]: role 'ghost' not found" in e.value.message
    with pytest.raises(SpecError) as e:
        load_lab(_lab(tmp_path, "provision:\n  roles: [community.general.nosuch]\n"))
    assert "role 'community.general.nosuch' not found" in e.value.message


def test_without_content_keys_the_lab_is_as_before():
    lab = load_lab(None)
    p = lab.provision
    assert not (p.playbooks or p.roles or p.prepare or lab.tests)


def test_a_run_with_mitogen_gives_its_connection_names_where_it_reaches():
    """Mitogen's strategy takes over `docker`, `podman` and `ssh` by name: local Docker and root's
    Podman get those names, the rest keep the plugin that reaches them (a remote server's Docker
    needs its -H, a rootless user's Podman its wrapper, LXC labkit's own connection, and a host
    without Python, BusyBox, plain Ansible's raw tasks: Mitogen starts a Python on the host)."""
    rows = [*ROWS,
            {"name": "labkit-l-s1-rocky9-podman", "role": "container", "distro": "rockylinux:9", "engine": "podman",
             "student": "s1", "server": "localhost"},
            {"name": "labkit-l-s1-rocky9-podman-u1", "role": "container", "distro": "rockylinux:9", "engine": "podman",
             "student": "s1", "server": "localhost", "user": "u1"},
            {"name": "labkit-l-s1-debian12-lxc", "role": "container", "distro": "debian:12", "engine": "lxc",
             "student": "s1", "server": "localhost"}]
    plain = inv.build(rows, SSH)["all"]["children"]["lab"]["hosts"]
    fast = inv.build(rows, SSH, mitogen=True)["all"]["children"]["lab"]["hosts"]
    conn = {h: (plain[h]["ansible_connection"], fast[h]["ansible_connection"]) for h in plain}
    assert conn == {
        "labkit-l-s1-debian12": ("community.docker.docker", "docker"),
        "labkit-l-s1-busybox": ("community.docker.docker", "community.docker.docker"),  # no Python: raw tasks only
        "labkit-l-s-2-debian12": ("community.docker.docker", "community.docker.docker"),
        "labkit-l-s1-vm": ("ssh", "ssh"),
        "labkit-l-s1-rocky9-podman": ("containers.podman.podman", "podman"),
        "labkit-l-s1-rocky9-podman-u1": ("containers.podman.podman", "containers.podman.podman"),
        "labkit-l-s1-debian12-lxc": ("labkit_lxc", "labkit_lxc"),
    }
    # nothing else differs
    assert {h: {k: v for k, v in hv.items() if k != "ansible_connection"} for h, hv in fast.items()} == \
        {h: {k: v for k, v in hv.items() if k != "ansible_connection"} for h, hv in plain.items()}

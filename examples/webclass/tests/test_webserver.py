"""The webserver role, checked on every host with Python (testinfra's ``host`` fixture).

`labkit verify` and `labkit test` run this folder beside K1..K12 (the lab file's ``tests:``),
once per host of ``provision.hosts``. Plain testinfra over labkit's inventory runs it too::

    pytest examples/webclass/tests --hosts='ansible://python' \
        --ansible-inventory="$(labkit inventory -f examples/webclass/lab.yml --path)"
"""

from __future__ import annotations

import shlex
from datetime import UTC, datetime, timedelta

import pytest
import testinfra
from testinfra.utils.ansible_runner import AnsibleRunner

LESSON = "Lesson 3: one kernel, many distros"  # the lab file's group_vars
# a container's PID 1 starts no service: labkit's default init, tini (as Docker's docker-init,
# Podman's podman-init), or `sleep` with init: none
CONTAINER_PID1 = ("docker-init", "podman-init", "tini", "sleep")


@pytest.fixture(scope="module")
def inventory(request) -> str:
    return request.config.getoption("ansible_inventory")


def is_vm(host) -> bool:
    return "vms" in host.ansible.get_variables()["group_names"]


def os_release(host) -> dict[str, str]:
    out = {}
    for line in host.file("/etc/os-release").content_string.splitlines():
        k, _, v = line.partition("=")
        out[k] = v.strip('"')
    return out


def fetch(host, url: str) -> str:
    """GET a page from the host itself (Python is there; no curl needed)."""
    code = f"import urllib.request; print(urllib.request.urlopen({url!r}, timeout=10).read().decode())"
    return host.check_output("python3 -c " + shlex.quote(code))


def test_nginx_installed_after_a_fresh_apt_update(host):
    """apt with update_cache + cache_valid_time updated the empty lists of a new host
    (had it skipped the update, there would be no package to install)."""
    assert host.package("nginx").is_installed
    lists = host.check_output("ls /var/lib/apt/lists").split()
    assert any("_Packages" in f for f in lists), f"no package lists: {lists}"


def test_the_page_names_this_host(host):
    """The template, filled from this host's own facts."""
    page = host.file("/srv/webclass/index.html")
    assert page.exists and page.user == "root" and page.group == "webeditors" and page.mode == 0o664
    text = page.content_string
    osr = os_release(host)
    assert f"<h1>{LESSON}</h1>" in text
    assert f"host: {host.ansible.get_variables()['inventory_hostname']}" in text
    assert f"distro: Debian {osr['VERSION_ID']}" in text and f"({osr['VERSION_CODENAME']})" in text
    assert f"kernel: {host.check_output('uname -r')}" in text


def test_service_manager_ansible_found(host):
    """Ansible names PID 1 as the service manager: systemd in the VM; in a container tini
    (or `sleep`), which starts no service, so `service` falls back to the init script."""
    pid1 = host.file("/proc/1/comm").content_string.strip()
    assert pid1 == "systemd" if is_vm(host) else pid1 in CONTAINER_PID1
    assert f"service manager: {pid1}" in host.file("/srv/webclass/index.html").content_string


def test_site_config_from_the_template(host):
    conf = host.file("/etc/nginx/sites-available/webclass").content_string
    assert "listen 80 default_server;" in conf and "root /srv/webclass;" in conf
    assert host.file("/etc/nginx/sites-enabled/webclass").linked_to == "/etc/nginx/sites-available/webclass"
    assert not host.file("/etc/nginx/sites-enabled/default").exists
    assert host.run("nginx -t").rc == 0


def test_nginx_runs_and_starts_at_boot(host):
    svc = host.service("nginx")
    assert svc.is_running and svc.is_enabled
    master = host.file("/run/nginx.pid").content_string.strip()
    parent = host.check_output(f"ps -o ppid= -p {master}").strip()
    if is_vm(host):
        assert parent == "1" and host.check_output("systemctl is-active nginx") == "active"
    else:  # started by its init script (start-stop-daemon), which daemonized it
        assert (
            host.file("/etc/init.d/nginx").is_file
            and host.file("/proc/1/comm").content_string.strip() in CONTAINER_PID1
        )


def test_nginx_answers_with_the_lesson_page(host):
    """The handler reloaded nginx after the site changed: it serves the lesson's page, not
    the package's welcome page."""
    assert host.socket("tcp://0.0.0.0:80").is_listening
    body = fetch(host, "http://127.0.0.1/")
    assert f"<h1>{LESSON}</h1>" in body and "Welcome to nginx" not in body


def test_the_student_may_edit_the_site(host):
    """prepare.yml made the group the role's site folder belongs to."""
    assert "webeditors" in host.user("student").groups
    site = host.file("/srv/webclass")
    assert site.is_directory and site.group == "webeditors" and site.mode == 0o2775


def test_deployment_stamped(host):
    """The task tagged molecule-idempotence-notest ran on the converge."""
    stamp = datetime.strptime(
        host.file("/srv/webclass/deployed.txt").content_string.strip(), "%Y-%m-%dT%H:%M:%SZ"
    )
    stamp = stamp.replace(tzinfo=UTC)
    assert timedelta(0) <= datetime.now(UTC) - stamp < timedelta(days=1)


def test_containers_reach_the_vms_page(inventory):
    """On the student's own networks each container reaches the VM's web server (the page
    names the VM's own kernel, not the container's)."""
    runner = AnsibleRunner(inventory)
    vms = runner.get_hosts("vms")
    containers = sorted(set(runner.get_hosts("python")) & set(runner.get_hosts("containers")))
    assert vms and containers, f"the lab has a VM ({vms}) and containers with Python ({containers})"
    for name in vms:
        vm = testinfra.get_host(f"ansible://{name}", ansible_inventory=inventory)
        url = f"http://{runner.get_variables(name)['ansible_host']}/"
        for c in containers:
            ct = testinfra.get_host(f"ansible://{c}", ansible_inventory=inventory)
            body = fetch(ct, url)
            assert f"kernel: {vm.check_output('uname -r')}" in body, f"{c} -> {url}: {body}"
            assert f"kernel: {ct.check_output('uname -r')}" not in body

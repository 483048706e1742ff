"""A classroom of 40 students on one server (containers only): 40 isolated networks, limits,
one student removed alone, everything removed by down. Sized for CI: BusyBox only."""
import json

import pytest

from tests.labs import down_leftovers

from .conftest import docker, recap, run

pytestmark = pytest.mark.integration
N = 40


@pytest.fixture(scope="module")
def classroom(tmp_path_factory):
    d = tmp_path_factory.mktemp("classroom")
    (d / "roster.csv").write_text("id,name\n" + "".join(f"st{i:02d},Student {i}\n" for i in range(1, N + 1)))
    f = d / "lab.yml"
    f.write_text("name: class40\nroster: roster.csv\ncontainers: [busybox]\nvm: {enabled: false}\n"
                 "limits: {memory: 64m, cpus: 0.25, pids: 64}\nprovision: {packages: []}\n")
    down_leftovers("-f", str(f))
    up = run("up", "-f", str(f), "--no-facts")
    yield f, up
    if f not in TAKEN_DOWN:  # the last test's `down` did not end well: whatever it left
        down_leftovers("-f", str(f))


TAKEN_DOWN: set = set()  # the lab files whose `down` a test saw exit 0


def names(kind="ps"):
    if kind == "ps":
        return docker("ps", "--filter", "label=labkit.lab=class40", "--format", "{{.Names}}").split()
    return docker("network", "ls", "--filter", "label=labkit.lab=class40", "--format", "{{.Name}}").split()


def ip(container):
    info = json.loads(docker("inspect", container))[0]
    return next(iter(info["NetworkSettings"]["Networks"].values()))["IPAddress"]


def test_all_hosts_up_with_one_network_each(classroom):
    _, up = classroom
    assert recap(up.stdout)["failures"] == 0
    assert len(names()) == N
    assert sorted(names("net")) == [f"labkit-class40-st{i:02d}" for i in range(1, N + 1)]


def test_limits_visible_in_docker_inspect(classroom):
    info = json.loads(docker("inspect", "labkit-class40-st07-busybox"))[0]
    hc = info["HostConfig"]
    assert info["Mounts"] == [] and not hc.get("Binds"), "a host path or the engine socket is mounted"
    assert hc["Memory"] == 64 * 2**20 and hc["NanoCpus"] == 250_000_000 and hc["PidsLimit"] == 64
    assert hc["Privileged"] is False and "ALL" in hc["CapDrop"] and "no-new-privileges" in hc["SecurityOpt"]


def test_no_student_reaches_another_students_container(classroom):
    target = "labkit-class40-st02-busybox"
    docker("exec", target, "busybox", "httpd", "-p", "8080", "-h", "/etc")  # returns once it listens
    # an HTTP request with BusyBox nc (Debian's static BusyBox wget crashes on every request)
    get = f"printf 'GET /hostname HTTP/1.0\\r\\n\\r\\n' | nc -w 5 {ip(target)} 8080"
    # same network (a helper container on st02's network): reachable
    same = docker("run", "--rm", "--network", "labkit-class40-st02", "labkit/busybox:1.35", "sh", "-c", get)
    assert "200 OK" in same and "st02-busybox" in same
    # another student's container: not reachable
    import subprocess

    other = subprocess.run(["docker", "exec", "labkit-class40-st01-busybox", "sh", "-c", get],
                           capture_output=True, text=True, timeout=60)
    assert "200 OK" not in other.stdout and "st02-busybox" not in other.stdout


def test_down_one_student_only_then_all(classroom):
    f, _ = classroom
    out = run("down", "-f", str(f), "--student", "st05").stdout
    assert "removed 1 container, 1 network" in out
    left = names()
    assert len(left) == N - 1 and "labkit-class40-st05-busybox" not in left
    assert "labkit-class40-st05" not in names("net")
    again = run("up", "-f", str(f), "--student", "st05", "--no-facts")
    assert recap(again.stdout)["failures"] == 0 and len(names()) == N
    run("down", "-f", str(f))
    TAKEN_DOWN.add(f)
    assert names() == [] and names("net") == []

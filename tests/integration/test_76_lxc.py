"""LXC system containers beside Docker's (issue 17): a lab of two students, each with a Debian 12
container on Docker and one on LXC (no VM), on the real engines. `labkit up` makes the LXC ones
from the Docker image (no download template), unprivileged and on the student's Docker
network; `verify` passes with the engine shown per host, K1/K2/K4/K5/K7 hold for LXC and K6 says
what differs (an init as PID 1, the server's kernel); `labkit shell` reaches the LXC container
as the student; a student's LXC container reaches their own Docker container and not the other
student's; a second `up` changes nothing, and repairs a stopped and a deleted LXC container;
`doctor` checks LXC; `down` (one student, then all, after a stop and a half-made folder) leaves
no container, folder, network or bridge."""
import json
import shutil
import socket
import subprocess
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from .conftest import docker, recap, run

pytestmark = [pytest.mark.integration]
LAB, STUDENTS = "lx76", ("a", "b")
PORT = 8076
LXC_PATH = Path("/var/lib/lxc")


def lxc_name(student: str) -> str:
    return f"labkit-{LAB}-{student}-debian12-lxc"


def docker_name(student: str) -> str:
    return f"labkit-{LAB}-{student}-debian12"


@pytest.fixture(scope="module")
def lab_file(tmp_path_factory):
    assert shutil.which("lxc-start"), "LXC is not installed: bash scripts/setup.sh"
    f = tmp_path_factory.mktemp("lx76") / "lab.yml"
    f.write_text(textwrap.dedent(f"""\
        name: {LAB}
        students: [{", ".join(STUDENTS)}]
        containers:
          - debian:12
          - {{distro: debian:12, engine: lxc}}
        vm: {{enabled: false}}
        provision: {{packages: []}}
        """))
    yield f
    if lxc_ls() or docker("ps", "-aq", "--filter", f"label=labkit.lab={LAB}").strip():  # a test failed half-way
        run("down", "-f", str(f), check=False)


@pytest.fixture(scope="module")
def up(lab_file):
    t0 = time.monotonic()
    p = run("up", "-f", str(lab_file), "--no-facts")  # the facts: read by the tests below
    return {"seconds": time.monotonic() - t0, "stdout": p.stdout + p.stderr}


def lxc_ls() -> list[str]:
    out = subprocess.run(["lxc-ls", "-1"], capture_output=True, text=True, check=True).stdout
    return [n for n in out.split() if n.startswith(f"labkit-{LAB}-")]


def test_up_makes_unprivileged_lxc_containers_from_the_docker_image(up):
    assert sorted(lxc_ls()) == [lxc_name(s) for s in STUDENTS]
    firsts = set()
    for s in STUDENTS:
        name = lxc_name(s)
        state = subprocess.run(["lxc-info", "-n", name, "-sH"], capture_output=True, text=True).stdout.strip()
        assert state == "RUNNING", name
        marker = json.loads((LXC_PATH / name / "labkit.json").read_text())
        assert marker["lab"] == LAB and marker["student"] == s and marker["image"] == "labkit/debian:12"
        # its own 65536 server ids, one of the 4096 ranges from 1000000000 (root's /etc/subuid)
        first = marker["idmap"]
        assert (first - 1000000000) % 65536 == 0 and 1000000000 <= first < 1000000000 + 4096 * 65536, first
        firsts.add(first)
        config = (LXC_PATH / name / "config").read_text()
        assert f"lxc.idmap = u 0 {first} 65536" in config and "lxc.no_new_privs = 1" in config
        assert "lxc.net.0.link = br-" in config  # the student's Docker network's bridge
        pid = subprocess.run(["lxc-info", "-n", name, "-pH"], capture_output=True, text=True).stdout.strip()
        uid_map = Path(f"/proc/{pid}/uid_map").read_text().split()
        assert uid_map == ["0", str(first), "65536"], uid_map
        assert Path(f"/proc/{pid}/comm").read_text().strip() == "init"
        assert (LXC_PATH / name / "rootfs" / "etc" / "hostname").stat().st_uid == first
    assert len(firsts) == len(STUDENTS)  # the students' containers share no id


def test_status_and_inventory_name_the_engine(up, lab_file):
    st = json.loads(run("status", "-f", str(lab_file), "--json").stdout)
    by = {h["name"]: h for h in st["hosts"]}
    for s in STUDENTS:
        assert by[lxc_name(s)]["engine"] == "lxc" and by[lxc_name(s)]["state"] == "running"
        assert by[docker_name(s)]["engine"] == "docker"
    assert not st["missing"]


def test_verify_passes_with_the_engine_shown(up, lab_file):
    p = run("verify", "-f", str(lab_file), "--json", check=False)
    assert p.returncode == 0, p.stdout + p.stderr
    rows = json.loads(p.stdout)
    assert not [r for r in rows if r["outcome"] == "failed"], rows
    mine = {r["fact"]: r for r in rows if r["host"] == lxc_name("a")}
    assert {"K1", "K2", "K4", "K5", "K6", "K7"} <= set(mine), rows
    assert all(mine[k]["outcome"] == "passed" for k in ("K1", "K2", "K4", "K5", "K6", "K7")), mine
    assert "PID 1 init" in mine["K6"]["detail"] and "no kernel booted" in mine["K6"]["detail"], mine["K6"]
    table = run("verify", "-f", str(lab_file), "--fact", "K6").stdout
    assert "lxc" in table and "docker" in table, table  # the engine of each host


def test_facts_kernel_shared_init_pid1_and_lxc_own_boot_id(up, lab_file):
    rows = json.loads(run("facts", "-f", str(lab_file), "--json").stdout)
    server = next(r for r in rows if r["role"] == "server")
    h = next(r for r in rows if r["host"] == lxc_name("a"))
    assert h["engine"] == "lxc" and h["pid1"] == "init"
    assert (h["kernel_release"], h["boot_id"]) == (server["kernel_release"], server["boot_id"])
    # what LXC shows at /proc/sys/kernel/random/boot_id is its own, per container start
    assert h["boot_id_engine"] and h["boot_id_engine"] != server["boot_id"]
    d = next(r for r in rows if r["host"] == docker_name("a"))
    assert d["engine"] == "docker" and d["pid1"] == "docker-init"  # the default init: tini


def test_shell_reaches_the_lxc_container_as_the_student(up, lab_file):
    p = run("shell", "-f", str(lab_file), "--student", "b", "debian12-lxc", "sh", "-c", 'id -un; pwd; cat /etc/hostname')
    assert p.stdout.split() == ["student", "/home/student", "b-debian12-lxc"], p.stdout
    root = run("shell", "-f", str(lab_file), "--root", "debian12-lxc", "id", "-u").stdout.strip()
    assert root == "0"


def test_modules_and_files_reach_the_lxc_containers(up, lab_file, tmp_path):
    """The lesson's own playbooks: pipelined modules, a file in and one fetched back, through
    labkit_lxc (community.general.lxc's pipelining truncated modules at random)."""
    pb = tmp_path / "files.yml"
    pb.write_text(textwrap.dedent(f"""\
        - name: Modules and files on the LXC hosts
          hosts: lxc
          gather_facts: false
          tasks:
            - name: Ensure a file is there
              ansible.builtin.copy:
                content: "hello {{{{ inventory_hostname }}}}\\n"
                dest: /root/hello.txt
                mode: "0600"
            - name: Read it, five times
              ansible.builtin.stat:
                path: /root/hello.txt
              loop: [1, 2, 3, 4, 5]
            - name: Fetch it
              ansible.builtin.fetch:
                src: /root/hello.txt
                dest: {tmp_path}/fetched/
        """))
    p = run("run", "-f", str(lab_file), str(pb))
    assert recap(p.stdout + p.stderr)["failures"] == 0, p.stdout
    for s in STUDENTS:
        assert (tmp_path / "fetched" / lxc_name(s) / "root" / "hello.txt").read_text() == f"hello {lxc_name(s)}\n"


def _ip(name: str, lxc: bool) -> str:
    if lxc:
        return json.loads((LXC_PATH / name / "labkit.json").read_text())["address"]
    return docker("inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", name).strip()


def _probe(name: str, ip: str) -> str:
    code = (f"import socket\ntry:\n socket.create_connection(({ip!r}, {PORT}), timeout=4); print('open')\n"
            f"except socket.timeout: print('timeout')\nexcept OSError as e: print('error', e)")
    return subprocess.run(["lxc-attach", "-n", name, "--clear-env", "--", "python3", "-c", code],
                          capture_output=True, text=True, timeout=60).stdout.strip()


def test_isolation_own_hosts_reached_the_other_students_not(up):
    for s in STUDENTS:  # a listener in each student's Docker and LXC container
        docker("exec", "-d", docker_name(s), "python3", "-m", "http.server", str(PORT))
        subprocess.run(["lxc-attach", "-n", lxc_name(s), "--clear-env", "--", "sh", "-c",
                        f"setsid python3 -m http.server {PORT} >/dev/null 2>&1 < /dev/null &"], check=True, timeout=30)
    def reached(name: str, ip: str) -> str:  # the listeners may take a moment on a loaded machine
        for _ in range(10):
            if (got := _probe(name, ip)) == "open":
                return got
            time.sleep(1)
        return got

    assert reached(lxc_name("a"), _ip(docker_name("a"), False)) == "open"
    assert reached(lxc_name("b"), _ip(docker_name("b"), False)) == "open"
    assert reached(lxc_name("a"), _ip(lxc_name("a"), True)) == "open"  # a's own listener is up
    blocked = [(lxc_name("b"), _ip(lxc_name("a"), True)), (lxc_name("a"), _ip(docker_name("b"), False))]
    with ThreadPoolExecutor(2) as ex:  # both wait out their timeout at once
        assert list(ex.map(lambda b: _probe(*b), blocked)) == ["timeout", "timeout"], blocked
    with socket.socket() as sk:  # the lab server reaches every student host
        sk.settimeout(4)
        sk.connect((_ip(lxc_name("a"), True), PORT))


def test_second_up_changes_nothing(up, lab_file):
    p = run("up", "-f", str(lab_file), "--no-facts")
    assert recap(p.stdout + p.stderr).get("changed") == 0, p.stdout


def test_up_repairs_a_stopped_and_a_deleted_lxc_container(up, lab_file):
    subprocess.run(["lxc-stop", "-k", "-n", lxc_name("a")], check=True)
    subprocess.run(["lxc-destroy", "-f", "-n", lxc_name("b")], check=True)
    st = json.loads(run("status", "-f", str(lab_file), "--json").stdout)
    assert st["missing"] == [lxc_name("b")], st["missing"]
    p = run("up", "-f", str(lab_file), "--no-facts")
    assert recap(p.stdout + p.stderr).get("changed", 0) > 0
    st = json.loads(run("status", "-f", str(lab_file), "--json").stdout)
    assert not st["missing"] and all(h["state"] == "running" for h in st["hosts"]), st


def test_checkpoint_refuses_lxc_and_reset_remakes_one_lxc_container(up, lab_file):
    p = run("checkpoint", "save", "-f", str(lab_file), "--all-students", "stage1", check=False)
    assert p.returncode != 0 and "checkpoints of lxc containers are not supported" in p.stderr, p.stderr
    assert docker("images", "-q", "--filter", f"label=labkit.lab={LAB}").split() == []
    marker = LXC_PATH / lxc_name("a") / "rootfs" / "root" / "reset-me"
    marker.write_text("x")
    others = {docker_name(s): docker("inspect", "-f", "{{.Id}}", docker_name(s)).strip() for s in STUDENTS}
    run("reset", "-f", str(lab_file), "--student", "a", "debian12-lxc", "--yes")
    assert not marker.exists()  # a new root file system
    assert sorted(lxc_ls()) == sorted(lxc_name(s) for s in STUDENTS)
    assert {n: docker("inspect", "-f", "{{.Id}}", n).strip() for n in others} == others
    st = json.loads(run("status", "-f", str(lab_file), "--json").stdout)
    assert not st["missing"] and all(h["state"] == "running" for h in st["hosts"]), st


def test_doctor_checks_lxc_for_this_lab(lab_file):
    rows = json.loads(run("doctor", "-f", str(lab_file), "--json", check=False).stdout)
    lxc = {r["name"]: r for r in rows if r["name"].startswith("LXC")}
    assert set(lxc) == {"LXC installed", "LXC Python binding", "LXC id map", "LXC cgroups", "LXC networking"}
    assert all(r["status"] == "ok" for r in lxc.values()), lxc


def test_down_leaves_nothing_for_any_engine_from_any_state(up, lab_file):
    bridges = {"br-" + n[:12] for n in docker("network", "ls", "-q", "--no-trunc", "--filter",
                                                f"label=labkit.lab={LAB}").split()}
    assert bridges
    run("down", "-f", str(lab_file), "--student", "a")  # one student's: the other's stay
    assert lxc_ls() == [lxc_name("b")]
    assert docker("ps", "-aq", "--filter", "label=labkit.student=a", "--filter", f"label=labkit.lab={LAB}") == ""
    # what an interrupted `up` may leave: a stopped container and a folder with only its marker
    subprocess.run(["lxc-stop", "-k", "-n", lxc_name("b")], check=True)
    half = LXC_PATH / f"labkit-{LAB}-b-debian13-lxc"
    half.mkdir()
    (half / "labkit.json").write_text(json.dumps({"lab": LAB, "student": "b", "distro": "debian:13"}))
    run("down", "-f", str(lab_file))
    assert lxc_ls() == []
    assert not [d for d in LXC_PATH.iterdir() if d.name.startswith(f"labkit-{LAB}-")]
    assert docker("ps", "-aq", "--filter", f"label=labkit.lab={LAB}").strip() == ""
    assert docker("network", "ls", "-q", "--filter", f"label=labkit.lab={LAB}").strip() == ""
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    assert not [b for b in bridges if f" {b}:" in links]
    print(f"lx76: up {up['seconds']:.0f}s")

"""Podman beside Docker (issue 17), on the real engines: a lab of two students, each with a
Debian 12 container on Docker, one on rootful Podman and one on rootless Podman as a non-root
user this module creates (no VM). `labkit up` loads the images into both Podman stores from
Docker's (no registry), `verify` passes with the engine shown per host and K1/K2 hold for the
rootless ones, whose uid map `facts` shows; the containers are hardened and labelled as
Docker's; `labkit shell` reaches them as the student; a second `up` changes nothing; `down`
leaves nothing in root's or the user's store. `doctor` names a missing rootless user's fix."""
import json
import os
import pwd
import subprocess
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from .conftest import content_parents, docker, podman, podman_user, recap, run

pytestmark = [pytest.mark.integration]
LAB, STUDENTS, USER = "pm75", ("a", "b"), "lk75user"
ENGINES = {"debian12": "docker", "debian12-podman": "podman", f"debian12-podman-{USER}": f"podman (rootless, {USER})"}


def name(student: str, short: str) -> str:
    return f"labkit-{LAB}-{student}-{short}"


def labelled(what: str, user: str = "") -> list[str]:
    """The lab's containers (what=ps) or networks (what=network) in a Podman store."""
    args = ["ps", "-a"] if what == "ps" else ["network", "ls"]
    p = podman(*args, "--filter", f"label=labkit.lab={LAB}", "--format", "{{.Names}}" if what == "ps" else
               "{{.Name}}", user=user)
    assert p.returncode == 0, p.stderr
    return p.stdout.split()


@pytest.fixture(scope="module")
def rootless_user():
    """A non-root user for rootless Podman, made here and removed at the end with its home and store."""
    with podman_user(USER, 300000) as user:
        yield user


@pytest.fixture(scope="module")
def lab_file(tmp_path_factory, rootless_user):
    f = tmp_path_factory.mktemp("pm75") / "lab.yml"
    f.write_text(textwrap.dedent(f"""\
        name: {LAB}
        students: [{", ".join(STUDENTS)}]
        containers:
          - debian:12
          - {{distro: debian:12, engine: podman}}
          - {{distro: debian:12, engine: podman, user: {rootless_user}}}
        vm: {{enabled: false}}
        provision: {{packages: []}}
        """))
    yield f
    if f not in TAKEN_DOWN:  # the last test's `down` did not end well: whatever it left
        run("down", "-f", str(f), check=False)


TAKEN_DOWN: set[Path] = set()  # the lab files whose `down` a test saw exit 0


@pytest.fixture(scope="module")
def up(lab_file):
    run("images", "build", "debian:12")
    t0 = time.monotonic()
    p = run("up", "-f", str(lab_file), "--no-facts")  # the facts: the `facts` fixture reads them
    return {"seconds": time.monotonic() - t0, "stdout": p.stdout + p.stderr}


@pytest.fixture(scope="module")
def facts(up, lab_file):
    return {f["host"]: f for f in json.loads(run("facts", "-f", str(lab_file), "--json").stdout)}


def test_up_makes_every_engines_containers(up, lab_file):
    r = recap(up["stdout"])
    assert r["failures"] == 0 and r["dark"] == 0
    st = json.loads(run("status", "-f", str(lab_file), "--json").stdout)
    assert st["missing"] == []
    got = {h["name"]: (h["engine"], h["user"], h["state"]) for h in st["hosts"]}
    for s in STUDENTS:
        assert got[name(s, "debian12")] == ("docker", "", "running")
        assert got[name(s, "debian12-podman")] == ("podman", "", "running")
        assert got[name(s, f"debian12-podman-{USER}")] == ("podman", USER, "running")
    # the images came from Docker's store, under the same tag, in both stores (never pulled)
    want = docker("image", "inspect", "--format", "{{.Id}}", "labkit/debian:12").strip().removeprefix("sha256:")
    for user in ("", USER):
        p = podman("image", "inspect", "--format", "{{.Id}}", "labkit/debian:12", user=user)
        assert p.returncode == 0 and p.stdout.strip() == want, (user, p.stderr)


def test_verify_passes_with_the_engine_of_each_host(up, lab_file):
    results = json.loads(run("verify", "-f", str(lab_file), "--json").stdout)
    failed = [r for r in results if r["outcome"] == "failed"]
    assert not failed, failed
    engines = {r["host"]: r["engine"] for r in results if r["host"].startswith(f"labkit-{LAB}-")}
    for s in STUDENTS:
        for short, eng in ENGINES.items():
            assert engines[name(s, short)] == eng
    held = {(r["fact"], r["host"]) for r in results if r["outcome"] == "passed"}
    for fact in ("K1", "K2", "K4", "K5", "K7"):
        for s in STUDENTS:
            for short in ENGINES:
                assert (fact, name(s, short)) in held, (fact, s, short)
    table = run("verify", "-f", str(lab_file), "--fact", "K1", env={**os.environ, "COLUMNS": "400"}).stdout
    assert "engine" in table and "podman (rootless," in table


def test_rootless_runs_in_a_user_namespace_on_the_servers_kernel(facts, rootless_user, lab_file):
    server = next(f for f in facts.values() if f["role"] == "server")
    uid = pwd.getpwnam(rootless_user).pw_uid
    for s in STUDENTS:
        rl, rf, dk = (facts[name(s, k)] for k in (f"debian12-podman-{USER}", "debian12-podman", "debian12"))
        # K1/K2 hold rootless too: the same kernel and boot
        assert rl["kernel_release"] == server["kernel_release"] and rl["boot_id"] == server["boot_id"]
        assert rl["same_kernel"] is True and rl["same_boot"] is True
        # uid 0 inside is the user outside, then its subordinate range; rootful and Docker: host ids
        first = rl["uid_map"].split(";")[0].split()
        assert first == ["0", str(uid), "1"], rl["uid_map"]
        assert rf["uid_map"].split(";")[0].split() == ["0", "0", "4294967295"]
        assert dk["uid_map"].split(";")[0].split() == ["0", "0", "4294967295"]
        assert rl["ns_user"] != rf["ns_user"] and rf["ns_user"] == dk["ns_user"]  # rootful: the host's
        assert rl["engine"] == "podman" and rl["engine_user"] == rootless_user
        # the default init, tini: Podman's --init runs it as /run/podman-init, rootless too
        assert rl["pid1"] == rf["pid1"] == "podman-init" and rl["virt"] == rf["virt"] == "podman"
    table = run("facts", "-f", str(lab_file), env={**os.environ, "COLUMNS": "400"}).stdout
    assert "uid map" in table and f"0->{uid}," in table and "none (host" in table


def test_podman_containers_are_hardened_and_labelled_as_dockers(up, rootless_user):
    v1 = not Path("/sys/fs/cgroup/cgroup.controllers").exists()
    for s in STUDENTS:
        for short, user in (("debian12-podman", ""), (f"debian12-podman-{USER}", rootless_user)):
            p = podman("inspect", name(s, short), user=user)
            assert p.returncode == 0, p.stderr
            c = json.loads(p.stdout)[0]
            hc, cfg = c["HostConfig"], c["Config"]
            assert not hc["Privileged"] and not hc.get("Binds")
            assert "no-new-privileges" in " ".join(hc.get("SecurityOpt") or [])
            assert sorted(hc["CapAdd"] or c.get("EffectiveCaps") or []) and "CAP_SYS_ADMIN" not in (
                c.get("EffectiveCaps") or [])
            assert cfg["Labels"]["labkit.lab"] == LAB and cfg["Labels"]["labkit.student"] == s
            assert cfg["Labels"]["labkit.engine"] == "podman" and cfg["Labels"]["labkit.user"] == user
            assert cfg["Cmd"] == ["sleep", "infinity"] and cfg["Hostname"] == f"{s}-{short}"
            assert list(c["NetworkSettings"]["Networks"]) == [f"labkit-{LAB}-{s}"]
            if not user or not v1:
                assert hc["Memory"] == 256 * 2**20 and hc["PidsLimit"] == 256 and hc["NanoCpus"] == 10**9
    for user in ("", rootless_user):
        for s in STUDENTS:
            p = podman("network", "inspect", f"labkit-{LAB}-{s}", user=user)
            net = json.loads(p.stdout)[0]
            assert net["labels"]["labkit.student"] == s and net["options"].get("isolate") == "true", net


def test_shell_reaches_podman_containers_as_the_student(up, lab_file):
    for short in ("debian12-podman", f"debian12-podman-{USER}"):
        p = run("shell", "-f", str(lab_file), "--student", "b", short, "--", "sh", "-c", 'echo "$(id -un) $(pwd)"')
        assert p.stdout.split() == ["student", "/home/student"], (short, p.stdout, p.stderr)


def _connect(pre: list[str], container: str, addr: str, port: int = 9) -> int:
    """Open a TCP connection to ``port`` of ``addr`` from ``container``: 0 connected, 1 refused
    (reached), 124 no answer within 5 s (blocked). The 5 s are counted in the container, so a
    slow start of `podman exec` (rootless, on a loaded machine) is not taken for a block."""
    return subprocess.run([*pre, "exec", container, "timeout", "5", "bash", "-c", f"exec 3<>/dev/tcp/{addr}/{port}"],
                          capture_output=True, timeout=120, cwd="/").returncode


def test_content_runs_with_mitogen_where_it_reaches(up, lab_file, tmp_path):
    """The lab's own content runs under Mitogen's strategy (labkit.ansible.mitogen): Docker's and
    root's Podman containers through Mitogen's Python, the rootless user's Podman through its
    wrapper as plain Ansible, in one run; with LABKIT_MITOGEN=0 every host runs plain."""
    want = {name(s, short): short != f"debian12-podman-{USER}" for s in STUDENTS for short in ENGINES}
    got = content_parents(lab_file, tmp_path)
    assert {h: "(mitogen:" in cmd for h, cmd in got.items()} == want, got
    plain = content_parents(lab_file, tmp_path, env={**os.environ, "LABKIT_MITOGEN": "0"})
    assert set(plain) == set(want) and not any("mitogen" in cmd for cmd in plain.values()), plain


def test_students_podman_networks_are_isolated(up, rootless_user):
    """From student a's containers: b's container does not answer (the connection times out).
    Rootful: its bridge is behind lab_firewall as Docker's are, so the lab server at the
    network's gateway times out too and the mirror (through the uplink) answers. Rootless: its
    network lives in the user's namespace, whose own gateway answers (a closed port refuses)."""
    def ip(c: str, user: str) -> str:
        return podman("inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", c,
                      user=user).stdout.strip()

    want = {}  # (short, address, port) -> (the argv of Podman as that user, the exit code expected)
    for short, user in (("debian12-podman", ""), (f"debian12-podman-{USER}", rootless_user)):
        pre = podman("--version", user=user).args[:-1]  # the argv of Podman as that user
        own, other = ip(name("a", short), user), ip(name("b", short), user)
        gateway = own.rsplit(".", 1)[0] + ".1"
        want[short, other, 9] = pre, 124  # no answer: blocked
        if user:
            want[short, gateway, 9] = pre, 1  # refused: reached
        else:
            want[short, gateway, 9] = pre, 124  # the server: dropped
            want[short, "deb.debian.org", 80] = pre, 0  # the uplink: NATed out
    with ThreadPoolExecutor(len(want)) as ex:  # the blocked ones wait out their 5 s at once
        got = dict(zip(want, ex.map(lambda k: _connect(want[k][0], name("a", k[0]), k[1], k[2]), want), strict=True))
    assert got == {k: code for k, (_, code) in want.items()}, got


def test_second_up_changes_nothing(up, lab_file):
    p = run("up", "-f", str(lab_file), "--no-facts")
    assert recap(p.stdout)["changed"] == 0, p.stdout


def podman_id(student: str, short: str, user: str = "") -> str:
    p = podman("inspect", "-f", "{{.Id}}", name(student, short), user=user)
    assert p.returncode == 0, p.stderr
    return p.stdout.strip()


def test_checkpoint_refuses_podman_and_reset_remakes_one_rootless_container(up, lab_file, rootless_user):
    p = run("checkpoint", "save", "-f", str(lab_file), "--student", "a", "stage1", check=False)
    assert p.returncode != 0 and "checkpoints of podman containers are not supported" in p.stderr, p.stderr
    assert docker("images", "-q", "--filter", f"label=labkit.lab={LAB}").split() == []  # nothing kept, half or whole
    assert json.loads(run("checkpoint", "list", "-f", str(lab_file), "--json").stdout) == []
    short = f"debian12-podman-{USER}"
    before = {(s, h): podman_id(s, h, rootless_user if h == short else "") for s in STUDENTS
              for h in ("debian12-podman", short)}
    run("reset", "-f", str(lab_file), "--student", "a", short, "--yes")
    after = {k: podman_id(*k, rootless_user if k[1] == short else "") for k in before}
    assert after.pop(("a", short)) != before.pop(("a", short))
    assert after == before  # the other Podman containers, rootful and rootless, kept their ids
    assert run("shell", "-f", str(lab_file), "--student", "a", short, "--", "id", "-un").stdout.strip() == "student"


def test_doctor_names_the_fix_for_a_missing_rootless_user(tmp_path):
    f = tmp_path / "lab.yml"
    f.write_text(f"name: {LAB}x\nstudents: 1\ncontainers: [{{distro: debian:12, engine: podman, user: nosuchuser75}}]\n"
                 "vm: {enabled: false}\n")
    p = run("doctor", "-f", str(f), check=False)
    assert p.returncode == 1, p.stdout + p.stderr
    assert "no user 'nosuchuser75'" in p.stdout and "useradd -m -s /bin/sh nosuchuser75" in p.stdout


def test_down_leaves_nothing_in_any_store(up, lab_file, rootless_user):
    # from any state: one rootless container stopped behind labkit's back
    assert podman("stop", name("a", f"debian12-podman-{USER}"), user=rootless_user).returncode == 0
    t0 = time.monotonic()
    p = run("down", "-f", str(lab_file))
    assert "removed 6 containers, 6 networks" in p.stdout + p.stderr, p.stdout + p.stderr
    for user in ("", rootless_user):
        assert labelled("ps", user) == [] and labelled("network", user) == []
    assert docker("ps", "-aq", "--filter", f"label=labkit.lab={LAB}").split() == []
    assert docker("network", "ls", "-q", "--filter", f"label=labkit.lab={LAB}").split() == []
    # and again, from nothing: still exit 0, nothing to say
    run("down", "-f", str(lab_file))
    TAKEN_DOWN.add(lab_file)
    print(f"pm75: up {up['seconds']:.0f} s, down {time.monotonic() - t0:.0f} s")


def test_an_unknown_engine_is_bad_input_naming_the_key(tmp_path):
    f = tmp_path / "lab.yml"
    f.write_text("name: pm75y\nstudents: 1\ncontainers:\n  - debian:12\n  - {distro: debian:12, engine: podmn}\n")
    p = run("up", "-f", str(f), check=False)
    assert p.returncode == 2, p.stdout + p.stderr
    assert "lab.yml:5: containers[1].engine: unknown engine 'podmn'; did you mean 'podman'?" in p.stderr, p.stderr

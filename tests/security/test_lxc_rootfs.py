"""Items 5 and 8 (LXC) of issue 26: an LXC container's root file system, its image and its
student are data to labkit, never the server's paths or labkit's privileges.

- Item 5: an image whose ``etc/inittab``, or deeper folders ``usr/sbin`` and ``usr/lib``, are
  symlinks to the server's (a real Docker image), or whose export stream has ``etc`` a symlink
  with ``etc/passwd`` after it. The real set-up (role lab_lxc and its module, as `labkit up`
  runs them) once wrote the server's files through them (``inittab``, BusyBox as
  ``usr/sbin/init``, ``usr/lib/labkit``, the image's ``etc/passwd``...); now nothing outside the
  root file system changes, and what labkit writes lands where the container itself sees it.
- Item 8: a student, root in their container, replaces ``/bin/sh`` (the facts' probe ran it
  with every capability of the container's user namespace: CAP_SYS_ADMIN, CAP_NET_ADMIN...),
  replaces ``/etc/passwd`` with a symlink to ``/dev/zero``, to a server file, or a FIFO
  (`labkit shell` read it as root on the server, following it, and hung), and every
  container had the same uid map (root in one was root's uid in another's).

The folders standing for the server's ``/etc`` and ``/usr/sbin`` are temporary ones; the lab
and the role runs are this module's own (lab ``lxsec``, containers ``labkit-lxsecfs-...``), on
the real Docker, LXC and Ansible.
"""
from __future__ import annotations

import io
import json
import os
import resource
import shutil
import subprocess
import sys
import tarfile
import textwrap
import time
from pathlib import Path

import pytest

from labkit.paths import roles_dir
from tests.labs import docker, down_leftovers, run

pytestmark = [pytest.mark.integration]
LAB, STUDENTS = "lxsec", ("a", "b")
FS_LAB = "lxsecfs"
LXC_PATH = Path("/var/lib/lxc")
CAP_SYS_ADMIN, CAP_NET_ADMIN = 21, 12


def lxc(name: str, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    """A command in container ``name`` as its root, as its student has it (no elevation)."""
    return subprocess.run(["lxc-attach", "-n", name, "--clear-env", "-v", "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
                           "--", *cmd], capture_output=True, text=True, timeout=60, check=check)


def init_pid(name: str) -> int:
    return int(subprocess.run(["lxc-info", "-n", name, "-pH"], capture_output=True, text=True,
                              check=True).stdout.strip())


def snapshot(folder: Path) -> dict:
    """Everything about a folder's entries that a write, a removal or a chown would change."""
    out = {}
    for p in sorted(folder.rglob("*")):
        st = p.lstat()
        data = os.readlink(p) if p.is_symlink() else p.read_bytes() if p.is_file() else b""
        out[str(p.relative_to(folder))] = (st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns, data)
    return out


# ------------------------------------------------------------------ item 5: the image's symlinks


def crafted_tar(links: dict[str, str], keep_under: bool) -> bytes:
    """labkit/busybox:1.35's files as ``docker export`` gives them, where each path of
    ``links`` is instead a symlink to the given path of the server; ``keep_under``: what was
    under it stays in the stream, after it (a stream Docker's own export never holds, labkit's
    extraction must not trust that)."""
    cid = docker("create", "labkit/busybox:1.35", "true").strip()
    try:
        exported = subprocess.run(["docker", "export", cid], capture_output=True, check=True).stdout
    finally:
        docker("rm", "-f", cid)
    out = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(exported)) as src, tarfile.open(fileobj=out, mode="w") as dst:
        for m in src:
            name = m.name.rstrip("/")
            if name in links:
                ti = tarfile.TarInfo(name)
                ti.type, ti.linkname = tarfile.SYMTYPE, links[name]
                dst.addfile(ti)
            elif keep_under or not any(name.startswith(p + "/") for p in links):
                dst.addfile(m, src.extractfile(m) if m.isfile() else None)
        for path, target in links.items():
            if path not in src.getnames():
                ti = tarfile.TarInfo(path)
                ti.type, ti.linkname = tarfile.SYMTYPE, target
                dst.addfile(ti)
    return out.getvalue()


def lab_lxc(tmp: Path, state: str, containers: list[dict], path: str = "") -> subprocess.CompletedProcess:
    """The real role lab_lxc on this machine (as labkit's up and down run it), with a cache of
    root file systems of this test's own (``path``: folders first in PATH)."""
    pb = tmp / f"{state}.yml"
    pb.write_text(json.dumps([{
        "name": "lab_lxc, as labkit runs it", "hosts": "localhost", "connection": "local", "gather_facts": False,
        "vars": {"ansible_python_interpreter": sys.executable},
        "roles": [{"role": "lab_lxc", "vars": {
            "lab_lxc_lab": FS_LAB, "lab_lxc_state": state, "lab_lxc_containers": containers,
            "lab_lxc_cache_dir": str(tmp / "cache")}}]}]))
    env = dict(os.environ, ANSIBLE_ROLES_PATH=str(roles_dir()), ANSIBLE_NOCOLOR="1")
    if path:
        env["PATH"] = f"{path}:{env['PATH']}"
    return subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), str(pb)], capture_output=True,
                          text=True, env=env, timeout=900, cwd=tmp)


@pytest.fixture(scope="module")
def fs_net():
    net = f"{FS_LAB}-net"
    subprocess.run(["docker", "network", "rm", net], capture_output=True)
    docker("network", "create", "--label", "labkit-test=test_lxc_rootfs", net)
    yield net
    subprocess.run(["docker", "network", "rm", net], capture_output=True)


# What the image holds, as links from its paths to the server's (a temporary folder stands for
# each server folder, its first component). labkit reads an image through `docker export`, where
# Docker's own init layer makes etc a folder (with hosts, hostname, resolv.conf): so with a real
# Docker image etc's own files can be symlinks, and deeper folders labkit writes into
# (usr/sbin for BusyBox's init, usr/lib for its binary) can; an export stream with etc itself a
# symlink and etc/passwd after it comes from a stand-in for `docker export` only.
CASES = {
    "etc-file": ({"etc/inittab": "server-etc/inittab"}, "docker"),
    "usr-dirs": ({"usr/sbin": "server-sbin", "usr/lib": "server-lib"}, "docker"),
    "etc-dir": ({"etc": "server-etc"}, "stream"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_an_image_symlinked_out_of_its_rootfs_changes_nothing_of_the_server(case, fs_net, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(f"lxc-{case}")
    links, how = CASES[case]
    server = {}
    for target in links.values():  # the server's own folders, with files of their own
        d = tmp / target.split("/")[0]
        d.mkdir(exist_ok=True)
        for f in ("hosts", "hostname", "resolv.conf", "inittab", "init", "passwd", "group"):
            (d / f).write_text(f"the server's own {f}\n")
        (d / "labkit").mkdir(exist_ok=True)
        server[d.name] = d
    before = {k: snapshot(d) for k, d in server.items()}
    tag, name = f"labkit-test/lxc-evil-{case}:1", f"labkit-{FS_LAB}-s1-{case}-lxc"
    stream = crafted_tar({p: str(tmp / t) for p, t in links.items()}, keep_under=how == "stream")
    shim = ""
    if how == "docker":  # a real image made of that tarball
        subprocess.run(["docker", "import", "-", tag], input=stream, capture_output=True, check=True)
    else:  # the real CLI for all but the export of a container of this image: the stream itself
        docker("tag", "labkit/busybox:1.35", tag)
        (tmp / "stream.tar").write_bytes(stream)
        shim = str(tmp / "bin")
        (tmp / "bin").mkdir()
        real = shutil.which("docker")
        (tmp / "bin" / "docker").write_text(
            f'#!/bin/sh\nif [ "$1" = export ] && [ "$({real} inspect -f "{{{{.Config.Image}}}}" "$2")" = {tag} ]; then\n'
            f'  exec cat {tmp / "stream.tar"}\nfi\nexec {real} "$@"\n')
        (tmp / "bin" / "docker").chmod(0o755)
    plan = [{"name": name, "image": tag, "hostname": f"s1-{case}-lxc", "network": fs_net, "student": "s1",
             "distro": "busybox:1.35"}]
    try:
        t0 = time.monotonic()
        up = lab_lxc(tmp, "present", plan, shim)
        took = time.monotonic() - t0
        # the attack: nothing of the server's folders changed (written, removed, replaced, chowned)
        assert {k: snapshot(d) for k, d in server.items()} == before, up.stdout[-3000:]
        # the safe behaviour: the set-up went on inside the root file system, where the container
        # itself finds what labkit wrote (its / is its root: a link leads inside it)
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-2000:]
        rootfs = LXC_PATH / name / "rootfs"
        if case == "etc-file":
            assert not (rootfs / "etc" / "inittab").is_symlink()  # replaced, not followed
            assert lxc(name, "cat", "/etc/inittab").stdout.startswith("::sysinit:")
        elif case == "usr-dirs":
            assert os.readlink(rootfs / str(tmp / "server-sbin").lstrip("/") / "init") == "/usr/lib/labkit/busybox"
            assert (rootfs / str(tmp / "server-lib").lstrip("/") / "labkit" / "busybox").read_bytes()[:4] == b"\x7fELF"
            assert lxc(name, "readlink", "/usr/sbin/init").stdout.strip() == "/usr/lib/labkit/busybox"
        else:
            inside = rootfs / str(tmp / "server-etc").lstrip("/")
            assert (inside / "passwd").read_text().startswith("root:")  # the image's, where its etc leads
            assert lxc(name, "cat", "/etc/hostname").stdout == f"s1-{case}-lxc\n"
        assert subprocess.run(["lxc-info", "-n", name, "-sH"], capture_output=True, text=True).stdout.strip() \
            == "RUNNING"
        print(f"lxc rootfs {case}: set-up {took:.1f} s")
    finally:
        lab_lxc(tmp, "absent", [])
        subprocess.run(["docker", "rmi", tag], capture_output=True)
        shutil.rmtree(tmp / "cache", ignore_errors=True)
    assert not (LXC_PATH / name).exists()


# ------------------------------------------------------------------ item 8: a hostile student


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """Lab lxsec: two students, one LXC container each (debian 12), nothing else."""
    assert shutil.which("lxc-start"), "LXC is not installed: bash scripts/setup.sh"
    f = tmp_path_factory.mktemp("lxsec") / "lab.yml"
    f.write_text(textwrap.dedent(f"""\
        name: {LAB}
        students: [{", ".join(STUDENTS)}]
        containers:
          - {{distro: debian:12, engine: lxc}}
        vm: {{enabled: false}}
        provision: {{packages: []}}
        """))
    down_leftovers("-f", str(f))  # an earlier run's, made by older code
    t0 = time.monotonic()
    run("up", "-f", str(f), "--no-facts")
    print(f"lxsec: up {time.monotonic() - t0:.1f} s")
    yield f
    down_leftovers("-f", str(f))


def name_of(student: str) -> str:
    return f"labkit-{LAB}-{student}-debian12-lxc"


def test_the_facts_probe_runs_the_students_shell_without_privileges(lab):
    """The student's own /bin/sh, run by `labkit facts`, records its capabilities and tries
    what only an elevated process could: set the container's hostname (CAP_SYS_ADMIN)."""
    name = name_of("a")
    spy = textwrap.dedent("""\
        #!/usr/bin/dash
        grep -E '^(CapEff|NoNewPrivs)' /proc/self/status >> /root/probe-spy
        python3 -c 'import socket; socket.sethostname("pwned")' 2>/dev/null && echo sethostname=yes >> /root/probe-spy
        exec /usr/bin/dash "$@"
        """)
    lxc(name, "sh", "-c", f"rm -f /root/probe-spy; cat > /usr/bin/sh.spy <<'EOF'\n{spy}EOF\n"
                          "chmod 755 /usr/bin/sh.spy && ln -sf sh.spy /usr/bin/sh")
    try:
        t0 = time.monotonic()
        facts = json.loads(run("facts", "-f", str(lab), "--json").stdout)
        took = time.monotonic() - t0
    finally:
        lxc(name, "ln", "-sf", "dash", "/usr/bin/sh")
    spied = lxc(name, "cat", "/root/probe-spy").stdout
    assert "CapEff:" in spied, "the probe did not run the student's /bin/sh: the test proves nothing"
    caps = {int(ln.split()[1], 16) for ln in spied.splitlines() if ln.startswith("CapEff:")}
    # what the container's own root has (its init's), and no more: no CAP_SYS_ADMIN, no CAP_NET_ADMIN
    own = int(next(ln for ln in Path(f"/proc/{init_pid(name)}/status").read_text().splitlines()
                   if ln.startswith("CapEff:")).split()[1], 16)
    assert caps == {own} and not own & (1 << CAP_SYS_ADMIN | 1 << CAP_NET_ADMIN), spied
    assert "sethostname=yes" not in spied and lxc(name, "cat", "/proc/sys/kernel/hostname").stdout.strip() == "a-debian12-lxc", spied
    assert "NoNewPrivs:\t1" in spied
    # and the facts still hold: the kernel's boot_id beneath LXC's own, read by labkit itself
    server = next(r for r in facts if r["role"] == "server")
    mine = next(r for r in facts if r["host"] == name)
    assert not mine["error"] and mine["boot_id"] == server["boot_id"], mine
    assert mine["boot_id_engine"] and mine["boot_id_engine"] != server["boot_id"], mine
    # LXC's own boot_id is still over the kernel's in the container (labkit lifted it in a copy only)
    assert lxc(name, "cat", "/proc/sys/kernel/random/boot_id").stdout.strip() == mine["boot_id_engine"]
    print(f"lxsec: facts {took:.1f} s")


def _shell_as_student(lab: Path, student: str, *cmd: str) -> tuple[subprocess.CompletedProcess, float]:
    """`labkit shell` as the student, bounded: 60 s, and 3 GiB of address space (reading
    /dev/zero as lines once grew without end)."""
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))

    t0 = time.monotonic()
    try:
        p = subprocess.run([str(Path(sys.executable).parent / "labkit"), "shell", "-f", str(lab), "--student", student,
                            "debian12-lxc", *cmd], capture_output=True, text=True, timeout=60, preexec_fn=limit)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"labkit shell hung: {time.monotonic() - t0:.0f} s") from e
    return p, time.monotonic() - t0


PASSWD = {  # how the student replaces their /etc/passwd (FAKE: a file of the server)
    "symlink-to-a-server-file": "ln -sf FAKE /etc/passwd",
    "symlink-to-dev-zero": "ln -sf /dev/zero /etc/passwd",
    "fifo": "rm -f /etc/passwd; mkfifo /etc/passwd",
}


@pytest.mark.parametrize("how", list(PASSWD))
def test_a_students_etc_passwd_is_read_inside_the_container_only(lab, tmp_path, how):
    """`labkit shell` (as the student) reads the container's /etc/passwd on the server, as
    root: replaced by its root with a symlink to a file of the server, to /dev/zero, or a FIFO,
    it is refused at once, naming the file; the server's file is never read."""
    name = name_of("b")
    fake = tmp_path / "server-passwd"  # stands for a file of the server: its account would be used
    fake.write_text("student:x:4242:4242::/:/bin/sh\n")
    lxc(name, "cp", "-a", "/etc/passwd", "/etc/passwd.orig")
    try:
        lxc(name, "sh", "-c", PASSWD[how].replace("FAKE", str(fake)))
        p, took = _shell_as_student(lab, "b", "id", "-u")
        assert "4242" not in p.stdout, p.stdout  # the server's file was read
        assert p.returncode == 2 and took < 30, (took, p.returncode, p.stdout, p.stderr)
        assert f"cannot read the accounts of {name} (its /etc/passwd): /etc/passwd: " + (
            "not a regular file" if how == "fifo" else "a symlink, not a regular file") in p.stderr, p.stderr
    finally:
        lxc(name, "sh", "-c", "rm -f /etc/passwd; mv /etc/passwd.orig /etc/passwd")
    p, _ = _shell_as_student(lab, "b", "id", "-un")  # repaired: the student's shell again
    assert p.returncode == 0 and p.stdout.strip() == "student", p.stdout + p.stderr


def test_each_students_container_has_its_own_ids(lab):
    """Root (and every user) of one student's container is a server uid of that container
    alone: what one makes is nobody's in the other."""
    maps = {}
    for s in STUDENTS:
        inside, first, count = Path(f"/proc/{init_pid(name_of(s))}/uid_map").read_text().split()
        assert (inside, count) == ("0", "65536")
        maps[s] = range(int(first), int(first) + int(count))
    a, b = maps["a"], maps["b"]
    assert a.start != b.start and (a.stop <= b.start or b.stop <= a.start), maps  # disjoint
    lxc(name_of("a"), "sh", "-c", "touch /root/made-by-a; chown 1000:1000 /home/student")
    made = LXC_PATH / name_of("a") / "rootfs" / "root" / "made-by-a"
    home = LXC_PATH / name_of("a") / "rootfs" / "home" / "student"
    assert made.stat().st_uid == a.start and made.stat().st_uid not in b
    assert home.stat().st_uid == a.start + 1000 and home.stat().st_uid not in b
    # every file of b's root file system is b's (the cached image's owners moved to b's range)
    out = subprocess.run(["find", str(LXC_PATH / name_of("b") / "rootfs"), "-xdev", "(", "-uid", "-" + str(b.start),
                          "-o", "-uid", "+" + str(b.stop - 1), ")", "-print", "-quit"],
                         capture_output=True, text=True, check=True).stdout
    assert out == "", out

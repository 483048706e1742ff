"""Issue 26, item 8 (IPv6): the firewall fails closed when IPv6 is on and ip6tables is not usable.

A rootful Podman container (CNI, as LXC's) has IPv6 on its network: a link-local address,
and the server's bridge has one too. With labkit's IPv6 rules its probe to a service the lab
server offers on `::` times out; without them it connects - which is what the old module left
on a server whose ip6tables was missing or broken: it made the IPv4 rules, skipped IPv6
without a word and reported success. Now the module fails, naming why, before it changes
anything, and `labkit up` fails with it. Both ways ip6tables can be unusable are tried: not
installed (a PATH without it, as on a server with only iptables' IPv4 half), and present but
failing (as ip6tables-legacy does on a kernel without IPv6 netfilter: "Table does not exist").
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from labkit import paths
from tests.labs import down_leftovers, podman, run, wait_port

pytestmark = pytest.mark.integration

LAB = "fwv6"
CT = f"labkit-{LAB}-a-busybox-podman"
PORT6 = 18266
BROKEN = textwrap.dedent("""\
    #!/bin/sh
    echo "ip6tables v1.8.9 (legacy): can't initialize ip6tables table \\`filter': Table does not exist (do you need to insmod?)" >&2
    echo "Perhaps ip6tables or your kernel needs to be upgraded." >&2
    exit 3
    """)


def lab_rules(family: int) -> list[str]:
    out = subprocess.run(["iptables-save" if family == 4 else "ip6tables-save"], capture_output=True, text=True,
                         check=True).stdout
    return [ln for ln in out.splitlines() if f"labkit lab={LAB} " in ln]


def path_without_ip6tables(d: Path, broken: bool) -> str:
    """A PATH like this machine's, but whose ip6tables is missing (or, ``broken``, fails)."""
    d.mkdir()
    for folder in ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"):
        if not os.path.isdir(folder):
            continue
        for name in os.listdir(folder):
            if name.startswith("ip6tables") or (d / name).exists() or (d / name).is_symlink():
                continue
            (d / name).symlink_to(os.path.join(folder, name))
    if broken:
        (d / "ip6tables").write_text(BROKEN)
        (d / "ip6tables").chmod(0o755)
        (d / "ip6tables-restore").symlink_to(shutil.which("ip6tables-restore"))
    return str(d)


def firewall(args: dict, path: str | None = None) -> tuple[int, dict]:
    """The real labkit_firewall module through Ansible on this machine, with ``path`` as PATH."""
    env = {**os.environ, "ANSIBLE_CONFIG": str(paths.roles_dir().parent / "ansible.cfg")}
    if path:
        env["PATH"] = path
    p = subprocess.run([str(Path(sys.executable).parent / "ansible"), "localhost", "-c", "local",
                        "-e", f"ansible_python_interpreter={sys.executable}",
                        "-M", str(paths.roles_dir() / "lab_firewall" / "library"), "-m", "labkit_firewall",
                        "-a", json.dumps(args)], capture_output=True, text=True, env=env, timeout=120)
    return p.returncode, json.loads(p.stdout[p.stdout.find("=> {") + 3:]) if "=> {" in p.stdout else {"out": p.stdout + p.stderr}


def probe6(addr: str) -> str:
    """From the container, to the server's IPv6 listener at ``addr`` (link-local, on its eth0)."""
    p = podman("exec", CT, "sh", "-c", f"printf 'GET /who HTTP/1.0\\r\\n\\r\\n' | nc -w 4 {addr}%eth0 {PORT6} 2>&1")
    text = p.stdout + p.stderr
    return "open" if "HTTP/1." in text else "timeout" if "timed out" in text else f"error: {text.strip()}"


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    d = tmp_path_factory.mktemp("fwv6")
    f = d / "lab.yml"
    f.write_text(f"name: {LAB}\nstudents: [a]\ncontainers: [{{distro: busybox, engine: podman}}]\n"
                 "vm: {enabled: false}\nprovision: {packages: []}\n")
    run("images", "build", "busybox")
    down_leftovers("-f", str(f))
    run("up", "-f", str(f), "--no-facts", "-q")
    bridge = podman("network", "inspect", "--format", "{{.NetworkInterface}}", f"labkit-{LAB}-a").stdout.strip()
    ll = subprocess.run(["ip", "-6", "-o", "addr", "show", "dev", bridge, "scope", "link"], capture_output=True,
                        text=True, check=True).stdout.split()[3].split("/")[0]
    (d / "www").mkdir()
    (d / "www" / "who").write_text("lab-server\n")
    server = subprocess.Popen(["python3", "-m", "http.server", str(PORT6), "--bind", "::", "--directory",
                               str(d / "www")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(PORT6, server)  # bound to ::, so it answers on 127.0.0.1 too
        yield {"file": f, "dir": d, "bridge": bridge, "ll": ll}
    finally:
        server.terminate()
        server.wait(10)
        down_leftovers("-f", str(f))


def test_ipv6_rules_block_what_the_container_reaches_without_them(lab):
    """The attack is real: labkit's IPv6 rules are what keeps the container from the server's
    IPv6 service (removed by hand, as a server without ip6tables had them, it connects)."""
    assert lab_rules(6), "labkit made no IPv6 rule for the lab"
    assert probe6(lab["ll"]) == "timeout"
    # delete them as iptables-restore reads them (each carries a quoted comment)
    data = "*filter\n" + "".join(r.replace("-A ", "-D ", 1) + "\n" for r in lab_rules(6)) + "COMMIT\n"
    subprocess.run(["ip6tables-restore", "-w", "--noflush"], input=data, text=True, check=True)
    assert lab_rules(6) == []
    assert probe6(lab["ll"]) == "open"  # what the old module left, reporting success


@pytest.mark.parametrize("broken", [False, True], ids=["ip6tables-missing", "ip6tables-failing"])
def test_the_firewall_fails_closed_when_ipv6_is_on_and_ip6tables_unusable(lab, broken, tmp_path):
    """ip6tables missing or failing while IPv6 is on: the module fails naming why and how to
    fix it, and changes nothing - not the IPv4 rules either."""
    assert Path("/proc/net/if_inet6").exists()
    before = (lab_rules(4), lab_rules(6))
    student = {"student": "a", "podman_bridge": lab["bridge"]}
    rc, res = firewall({"lab": LAB, "students": [student], "uplinks": ["eth0"]},
                       path_without_ip6tables(tmp_path / "bin", broken))
    assert rc != 0, f"the firewall reported success without IPv6 rules: {res}"
    msg = res.get("msg", "")
    assert "IPv6 is on on this lab server but ip6tables does not work" in msg, res
    assert ("Table does not exist" in msg) if broken else ("ip6tables and ip6tables-restore not found" in msg), msg
    assert "disable_ipv6" in res.get("hint", "") and "apt-get install iptables" in res["hint"]
    assert (lab_rules(4), lab_rules(6)) == before


def test_up_makes_the_ipv6_rules_again(lab):
    """With ip6tables back, `labkit up` makes the IPv6 rules again and the probe is dropped."""
    run("up", "-f", str(lab["file"]), "--no-facts", "-q", "--full")
    assert lab_rules(6)
    assert probe6(lab["ll"]) == "timeout"

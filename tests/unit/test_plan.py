"""The plan is a pure value: names, servers and the extravars contract with the playbooks
are pinned here (golden file), and what `up --plan` / `down --plan` list is computed from it."""
import json
import re
from pathlib import Path

import pytest

from labkit import names
from labkit.lab.spec import parse_lab
from labkit.plan.model import FIRST_PLAY_ONLY, Context, ServerRef, diff, make_plan, split_extravars, teardown

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).parent / "golden" / "up_extravars.json"

LAB = parse_lab({"name": "net101", "students": ["kim", "lee"], "containers": ["debian:12", "busybox", "ubuntu:24.04"],
                 "vm": {"memory": "768m"}, "limits": {"memory": "128m"}, "provision": {"packages": ["less"]}})
CTX = Context(
    servers=(ServerRef("localhost"), ServerRef("server-2", False, "unix:///tmp/labkit-tunnel.sock")),
    lab_dir="/state/labs/net101", assignment={"kim": "localhost", "lee": "server-2"}, registry="mirror:5000",
    vm_local={"box": "labkit/debian12", "memory": 768, "cpus": 1, "accel": "qemu",
              "emulator_path": "/usr/local/libexec/labkit/qemu-system-x86_64-tcg", "boot_timeout": 600},
    vm_remote={"server-2": {"accel": "qemu", "emulator_path": "", "boot_timeout": 600,
                            "vagrant_home": "/var/lib/labkit/vagrant.d", "workdir_base": "/var/lib/labkit/labs/net101",
                            "proxy_command": "ssh -W %h:%p server-2"}})


def test_extravars_match_the_golden_file():
    """A changed name or extravar fails here: update the playbooks and this file together
    (`LABKIT_REGOLDEN=1 pytest tests/unit/test_plan.py` rewrites it)."""
    import os

    got = make_plan(LAB, CTX).extravars()
    if os.environ.get("LABKIT_REGOLDEN"):
        GOLDEN.write_text(json.dumps(got, indent=2, sort_keys=True) + "\n")
    assert got == json.loads(GOLDEN.read_text())


def _jinja_names(text: str) -> set[str]:
    exprs = re.findall(r"\{\{(.*?)\}\}", text, re.S) + re.findall(r"^\s*(?:when|that|loop):\s*(.+)$", text, re.M)
    return {n for e in exprs for n in re.findall(r"\blabkit_[a-z_]+\b", e)}


def _defined_names(text: str) -> set[str]:
    return set(re.findall(r"^\s*(labkit_[a-z_]+):", text, re.M))


@pytest.mark.parametrize("playbook", ["up.yml"])
def test_every_extravar_is_used_and_every_input_is_passed(playbook):
    """The playbook reads exactly the extravars the plan gives (plus what it defines itself)."""
    texts = [(ROOT / "playbooks" / playbook).read_text()]
    texts += [p.read_text() for p in (ROOT / "roles").rglob("*.yml")] + [p.read_text() for p in (ROOT / "roles").rglob("*.j2")]
    used = set().union(*map(_jinja_names, texts))
    defined = set().union(*map(_defined_names, texts))
    given = set(make_plan(LAB, CTX).extravars()) | {"labkit_plan_file"}
    assert given - used == set(), "extravars nobody reads"
    assert used - defined - given == set(), "variables read but neither passed nor defined"


def test_only_the_first_play_reads_the_plan_file():
    """The plan's lists reach up.yml's first play through its vars file; every later play (the
    lab hosts', with the roles they run) finds what it reads on the command line or in the host
    variables the first play gives them (add_host)."""
    import yaml

    plays = yaml.safe_load((ROOT / "playbooks" / "up.yml").read_text())
    assert plays[0]["vars_files"] == ["{{ labkit_plan_file }}"]
    cmdline, first = split_extravars(make_plan(LAB, CTX).extravars(), "/x/plan.json")
    assert set(first) <= set(FIRST_PLAY_ONLY) and "labkit_containers" in first and cmdline["labkit_plan_file"] == "/x/plan.json"
    host_vars = {k for t in plays[0]["tasks"] if "ansible.builtin.add_host" in t for k in t["ansible.builtin.add_host"]}
    roles = {r for play in plays[1:] for t in play["tasks"] for key in ("ansible.builtin.include_role", "ansible.builtin.import_role")
             if key in t for r in [t[key]["name"]]}
    texts = [yaml.safe_dump(plays[1:])] + [p.read_text() for r in roles for p in (ROOT / "roles" / r).rglob("*")
                                           if p.suffix in (".yml", ".j2")]
    read = set().union(*map(_jinja_names, texts)) - set().union(*map(_defined_names, texts)) - host_vars
    assert read & set(FIRST_PLAY_ONLY) == set(), "a later play reads what only the first play has"
    assert read <= set(cmdline), f"read by a later play but not on the command line: {read - set(cmdline)}"


def test_names_come_from_one_module():
    p = make_plan(LAB, CTX)
    kim = [c for c in p.containers if c.student == "kim"]
    assert [c.name for c in kim] == ["labkit-net101-kim-debian12", "labkit-net101-kim-busybox",
                                     "labkit-net101-kim-ubuntu2404"]
    assert {c.server for c in kim} == {"localhost"} and {c.server for c in p.containers if c.student == "lee"} == {
        "server-2"}
    assert [v.name for v in p.vms] == [names.vm("net101", "kim"), names.vm("net101", "lee")]
    assert names.owned_by("labkit-net101-kim-vm", "net101", "kim")
    assert not names.owned_by("labkit-net101-x-kim-vm", "net101", None, ["net101-x"])
    assert names.vm_student("net101", "labkit-net101-kim-vm") == "kim"


def test_the_only_server_is_named_in_the_plan():
    one = Context(servers=(ServerRef("localhost"),), lab_dir="/x")
    p = make_plan(LAB, one, students=["lee"])
    assert {c.server for c in p.hosts} == {"localhost"} and [n.student for n in p.networks] == ["lee"]


def test_diff_lists_exactly_what_is_missing_or_drifted():
    p = make_plan(LAB, CTX)
    assert len(diff(p, [], [])) == len(p.networks) + len(p.containers) + len(p.vms)
    hosts = [{"name": h.name, "role": h.role, "state": "running", "server": h.server,
              "image": getattr(h, "image", "")} for h in p.hosts]
    nets = [{"name": n.name, "server": n.server} for n in p.networks]
    assert diff(p, hosts, nets) == []
    hosts = [h for h in hosts if h["name"] != "labkit-net101-kim-busybox"]
    hosts[0] = {**hosts[0], "state": "exited"}
    hosts[1] = {**hosts[1], "image": "old:1"}
    got = {(c.action, c.name) for c in diff(p, hosts, nets)}
    assert got == {("create", "labkit-net101-kim-busybox"), ("start", hosts[0]["name"]),
                   ("recreate", hosts[1]["name"])}


def test_teardown_lists_everything_that_exists():
    rows = teardown([{"name": "labkit-a-s-vm", "role": "vm", "student": "s", "server": "localhost", "state": "running"}],
                    [{"name": "labkit-a-s", "student": "s", "server": "localhost"}])
    assert [(c.action, c.kind) for c in rows] == [("remove", "network"), ("remove", "vm")]


ENGINES_LAB = parse_lab({"name": "eng", "students": ["s"], "containers": [
    "debian:12", {"distro": "debian:12", "engine": "podman"},
    {"distro": "debian:12", "engine": "podman", "user": "alice"}, {"distro": "debian:12", "engine": "lxc"}]})


def test_diff_of_other_engines_networks_is_per_store():
    """Docker's and Podman's networks of a student share a name: each store's is its own."""
    p = make_plan(ENGINES_LAB, Context(servers=(ServerRef("localhost"),), lab_dir="/x"))
    hosts = [{"name": h.name, "role": h.role, "state": "running", "server": h.server,
              "image": getattr(h, "image", "")} for h in p.hosts]
    nets = [{"name": n.name, "server": n.server} for n in p.networks]
    missing = [(c.name, c.why) for c in diff(p, hosts, nets)]
    assert missing and all(name == "labkit-eng-s" for name, _ in missing)
    assert sorted(why for _, why in missing) == ["podman", "podman (rootless, alice)"]  # LXC's is Docker's
    podman = [n for n in p.engine_networks if n.engine == "podman"]
    nets += [{"name": n.name, "server": n.server, "engine": n.engine, "user": n.user} for n in podman]
    assert diff(p, hosts, nets) == []
    down = teardown([], nets)
    assert sorted(c.why for c in down) == ["", "podman", "podman (rootless, alice)"]
    # a lab of LXC containers alone still needs the student's Docker network
    lxc_only = parse_lab({"name": "eng", "students": ["s"], "containers": [{"distro": "debian:12", "engine": "lxc"}]})
    q = make_plan(lxc_only, Context(servers=(ServerRef("localhost"),), lab_dir="/x"))
    assert [c.why for c in diff(q, [], []) if c.kind == "network"] == ["Docker's, for lxc"]
    assert [c.why for c in diff(q, [], [{"name": "labkit-eng-s", "server": "localhost"}]) if c.kind == "network"] == []


def test_podman_images_read_back_as_planned():
    """Podman keeps a loaded ``labkit/debian:12`` as ``localhost/labkit/debian:12``: read back as
    the plan names it, or every Podman container would be listed as to be recreated."""
    from labkit.engines.podman import plain_image

    assert plain_image("localhost/labkit/debian:12") == "labkit/debian:12"
    assert plain_image("localhost:5000/ubuntu:24.04") == "localhost:5000/ubuntu:24.04"
    assert plain_image("labkit/busybox:1.35") == "labkit/busybox:1.35"


def test_baked_images_go_to_dockers_containers_on_this_machine_only():
    lab = parse_lab({"name": "bk", "students": ["a", "b"], "vm": {"enabled": False},
                     "containers": ["debian:12", "busybox", {"distro": "debian:12", "engine": "podman"}]})
    baked = {"debian:12": "labkit/debian12-pkgs:0123456789ab"}
    ctx = Context((ServerRef("localhost"), ServerRef("far", local=False)), "/tmp/x", {"a": "localhost", "b": "far"},
                  baked=baked)
    images = {c.name: c.image for c in make_plan(lab, ctx).containers}
    assert images == {
        "labkit-bk-a-debian12": "labkit/debian12-pkgs:0123456789ab",  # Docker, here
        "labkit-bk-a-busybox": "labkit/busybox:1.35",
        "labkit-bk-a-debian12-podman": "labkit/debian:12",  # another engine keeps the base image
        "labkit-bk-b-debian12": "labkit/debian:12",  # a remote server has the base image only
        "labkit-bk-b-busybox": "labkit/busybox:1.35",
        "labkit-bk-b-debian12-podman": "labkit/debian:12",
    }


def test_a_baked_image_is_named_by_what_makes_it():
    from labkit.images import build as images
    from labkit.lab import catalog

    d = catalog.get("debian:12")
    t = images.baked_tag(d, ["less", "curl"], "sha256:1")
    assert t == images.baked_tag(d, ["curl", "less", "less"], "sha256:1")  # the set, in any order
    assert t.startswith("labkit/debian12-pkgs:")
    assert t != images.baked_tag(d, ["less"], "sha256:1") != images.baked_tag(d, ["less", "curl"], "sha256:2")
    assert not images._bakeable(catalog.get("busybox"), ["less"]) and not images._bakeable(d, [])

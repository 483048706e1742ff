"""The no-op fast path's rules (labkit.plan.uptodate): when it may be used, and what breaks a stamp."""
from types import SimpleNamespace as NS

import pytest

from labkit.plan import uptodate


def plan(*engines):
    return NS(containers=[NS(engine=e) for e in engines])


LOCAL, REMOTE = NS(local=True), NS(local=False)


@pytest.mark.parametrize("args, why", [
    ((plan("docker", "docker"), [LOCAL], None, False), ""),
    ((plan(), [LOCAL], None, False), ""),  # a VM-only lab
    ((plan("docker"), [LOCAL], ["s1"], False), "--student"),
    ((plan("docker"), [LOCAL], None, "a1b2"), ""),  # content with its checksum: covered (issue 31)
    ((plan("docker"), [LOCAL], None, None), "the lab's content could not be checksummed"),
    ((plan("docker"), [LOCAL], None, "", ["labkit-l-s01-debian12"]), "some hosts only"),
    ((plan("docker"), [LOCAL, REMOTE], None, False), "remote lab servers"),
    ((plan("docker", "podman"), [LOCAL], None, False), "engines other than Docker"),
])
def test_eligible(args, why):
    assert uptodate.eligible(*args) == why


class Api:
    def __init__(self, rows):
        self.rows = rows

    def containers(self, all, filters):  # noqa: A002 - the docker SDK's own keyword
        assert all and filters == {"label": "labkit.lab=l1"}
        return self.rows

    def inspect_image(self, ref):
        return {"Id": "sha256:" + ref}


def row(name, cid="c1", state="running", ip="172.30.0.2", net="n1"):
    return {"Names": ["/" + name], "Id": cid, "State": state, "ImageID": "sha256:i",
            "NetworkSettings": {"Networks": {"labkit-l1-s1": {"NetworkID": net, "IPAddress": ip}}}}


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("LABKIT_HOME", str(tmp_path))
    monkeypatch.setattr(uptodate, "_firewall", lambda lab: ["iptables -A LABKIT-FORWARD ... lab=l1 student=s1"])
    monkeypatch.setattr(uptodate, "_domains", lambda lab: ["5 labkit-l1-s1-vm running"])
    return tmp_path


@pytest.mark.parametrize("change", [
    {"cid": "c2"},             # recreated behind labkit's back
    {"state": "exited"},       # stopped
    {"ip": "172.30.0.9"},      # another address: the firewall's rules name addresses
    {"net": "n2"},             # its network made again
])
def test_a_changed_container_breaks_the_stamp(home, change):
    client = NS(api=Api([row("labkit-l1-s1-debian12")]))
    uptodate.save("l1", "k", client, with_vms=True)
    assert uptodate.unchanged("l1", "k", client, with_vms=True) is not None
    assert uptodate.unchanged("l1", "other key", client, with_vms=True) is None
    changed = NS(api=Api([row("labkit-l1-s1-debian12", **change)]))
    assert uptodate.unchanged("l1", "k", changed, with_vms=True) is None


def test_a_missing_or_extra_container_a_restarted_vm_or_firewall_breaks_it(home, monkeypatch):
    client = NS(api=Api([row("labkit-l1-s1-debian12")]))
    uptodate.save("l1", "k", client, with_vms=True)
    assert uptodate.unchanged("l1", "k", NS(api=Api([])), with_vms=True) is None
    assert uptodate.unchanged("l1", "k", NS(api=Api([row("labkit-l1-s1-debian12"), row("x", cid="c9")])),
                              with_vms=True) is None
    monkeypatch.setattr(uptodate, "_domains", lambda lab: ["6 labkit-l1-s1-vm running"])  # a new domain id
    assert uptodate.unchanged("l1", "k", client, with_vms=True) is None
    monkeypatch.setattr(uptodate, "_domains", lambda lab: ["5 labkit-l1-s1-vm running"])
    monkeypatch.setattr(uptodate, "_firewall", lambda lab: [])  # the lab's rules flushed
    assert uptodate.unchanged("l1", "k", client, with_vms=True) is None
    monkeypatch.setattr(uptodate, "_firewall", lambda lab: None)  # iptables cannot be read: no fast path
    assert uptodate.unchanged("l1", "k", client, with_vms=True) is None


def test_drop_and_no_stamp(home):
    client = NS(api=Api([row("labkit-l1-s1-debian12")]))
    assert uptodate.unchanged("l1", "k", client, with_vms=False) is None
    uptodate.save("l1", "k", client, with_vms=False)
    uptodate.drop("l1")
    assert uptodate.unchanged("l1", "k", client, with_vms=False) is None


def test_asked_changes_with_the_images_and_the_code(home, monkeypatch):
    lab = NS(model_dump=lambda mode: {"name": "l1"})
    ev = {"labkit_containers": [{"image": "labkit/debian:12"}]}
    client = NS(api=Api([]))
    a = uptodate.asked(lab, ev, client)
    assert uptodate.asked(lab, ev, client) == a
    assert uptodate.asked(lab, {"labkit_containers": [{"image": "labkit/debian:13"}]}, client) != a
    monkeypatch.setattr(uptodate, "code_digest", lambda: "another labkit")
    assert uptodate.asked(lab, ev, client) != a


def test_dockers_jump_on_top_of_forward_reads_as_labkits_but_libvirts_does_not(monkeypatch):
    """Docker puts its jump to DOCKER-USER back on top of FORWARD at every network it makes
    (another lab's, anyone's): role lab_firewall leaves that order as it is, so the stamp reads
    it as the same state; libvirt's jumps on top are not (up must move labkit's back)."""
    import subprocess as sp

    jump = "-m comment --comment labkit -j LABKIT-FORWARD"
    head = [f"-A DOCKER-USER {jump}", "-A INPUT -m comment --comment labkit -j LABKIT-INPUT"]

    def reads(*forward):
        text = "\n".join(["-P FORWARD DROP", *forward, *head]) + "\n"
        monkeypatch.setattr(uptodate.shutil, "which", lambda tool: tool if tool == "iptables" else None)
        monkeypatch.setattr(uptodate.subprocess, "run", lambda *a, **k: sp.CompletedProcess(a, 0, text, ""))
        return uptodate._firewall("l1")

    settled = reads(f"-A FORWARD {jump}", "-A FORWARD -j DOCKER-USER")
    assert reads("-A FORWARD -j DOCKER-USER", f"-A FORWARD {jump}") == settled
    assert reads("-A FORWARD -j LIBVIRT_FWX", f"-A FORWARD {jump}", "-A FORWARD -j DOCKER-USER") != settled
    assert reads("-A FORWARD -j DOCKER-USER") != settled  # labkit's own jump gone from FORWARD

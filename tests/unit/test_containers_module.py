"""Pure logic of roles/lab_container/library/labkit_containers.py: how the containers of a lab
server are worked on at once. The real engine is in the integration tests (every `up`, `down`)."""
from __future__ import annotations

import threading
import time

from tests.conftest import role_module


def containers():
    return role_module("lab_container", "labkit_containers")


def test_one_network_at_a_time_per_network_networks_in_parallel():
    """dockerd can miscount a network's endpoints when two of its containers are made or removed
    at once (moby/moby#43286): never two of one network together; different networks together."""
    items = [{"name": f"{s}-{d}", "network": s} for s in ("a", "b", "c") for d in ("x", "y", "z")]
    lock = threading.Lock()
    busy: dict[str, int] = {}
    most: dict[str, int] = {}
    at_once = [0, 0]  # now, highest

    def fn(item):
        with lock:
            busy[item["network"]] = busy.get(item["network"], 0) + 1
            most[item["network"]] = max(most.get(item["network"], 0), busy[item["network"]])
            at_once[0] += 1
            at_once[1] = max(at_once)
        time.sleep(0.05)
        with lock:
            busy[item["network"]] -= 1
            at_once[0] -= 1
        return item["name"]

    got = containers().per_network(items, lambda x: x["network"], fn, workers=8)
    assert got == [i["name"] for i in items]  # the items' order
    assert most == {"a": 1, "b": 1, "c": 1}
    assert at_once[1] == 3


def test_listed_containers_are_grouped_by_their_networks():
    mod = containers()
    row = {"NetworkSettings": {"Networks": {"labkit-l-b": {}, "labkit-l-a": {}}}}
    assert mod._networks_of(row) == ("labkit-l-a", "labkit-l-b")
    assert mod._networks_of({}) == ()


class FakeEngine:
    """What Reconciler asks the engine, recorded (the real engine is in tests/security/test_fw_reboot.py)."""

    def __init__(self, policy):
        self.policy, self.calls = policy, []

    def restart_policy(self, cid):
        return self.policy

    def set_restart_policy(self, cid, name):
        self.calls.append(("update", cid, name))
        self.policy = name

    def start(self, cid):
        self.calls.append(("start", cid))

    def remove(self, cid):
        self.calls.append(("remove", cid))


PARAMS = {"lab": "l", "memory": "256m", "cpus": 1.0, "pids": 256, "cap_drop": ["ALL"], "cap_add": [],
          "security_opts": ["no-new-privileges"], "pull": "never"}
ITEM = {"name": "labkit-l-a-busybox", "image": "labkit/busybox:1.35", "hostname": "a-busybox", "network": "labkit-l-a",
        "student": "a", "distro": "busybox"}


def _reconciler(mod, engine):
    rec = mod.Reconciler(engine, PARAMS)
    rec.image_ids[ITEM["image"]] = "sha256:img"
    return rec


def test_containers_have_no_restart_policy_and_old_ones_are_updated_in_place():
    """Issue 26 item 8: nothing of a lab restarts on its own before `labkit up` made its
    firewall rules again (restart policy `no`); a container an older labkit made with
    `unless-stopped`, as planned otherwise, gets `no` in place - the student's work kept - and
    is started when a reboot left it stopped; a second run leaves it as it is."""
    mod = containers()
    assert mod.RESTART == "no"
    s = mod.settings(ITEM, PARAMS)
    assert s["restart"] == "no"
    old = {"Id": "c1", "ImageID": "sha256:img", "State": "exited",
           "Labels": {mod.SPEC_LABEL: mod.legacy_hash(s)}}
    eng = FakeEngine("unless-stopped")
    assert _reconciler(mod, eng).one(ITEM, old)["action"] == "updated"
    assert eng.calls == [("update", "c1", "no"), ("start", "c1")]
    eng.calls.clear()
    assert _reconciler(mod, eng).one(ITEM, dict(old, State="running"))["action"] == "unchanged"
    assert eng.calls == []
    # a container of this labkit: its label is the new hash, never inspected for the policy
    new = dict(old, State="running", Labels={mod.SPEC_LABEL: mod.spec_hash(s)})
    assert _reconciler(mod, FakeEngine("boom")).one(ITEM, new)["action"] == "unchanged"
    # other drift still recreates
    drift = dict(old, Labels={mod.SPEC_LABEL: "0" * 24})
    eng = FakeEngine("unless-stopped")
    rec = _reconciler(mod, eng)
    rec.create = lambda p, s, h: "c2"
    assert rec.one(ITEM, drift)["action"] == "recreated" and eng.calls == [("remove", "c1")]

"""Pure logic of roles/lab_network/library/labkit_networks.py (the students' Docker networks in
one step): what is made, what is left alone and named, what is removed. A stand-in engine
records the calls; the real engine is in the integration tests (every `up` and `down`)."""
from __future__ import annotations

from tests.conftest import role_module


def networks():
    return role_module("lab_network", "labkit_networks")


class FakeEngine:
    def __init__(self, rows):
        self.rows = rows
        self.created: list[tuple[str, dict]] = []
        self.removed: list[str] = []

    def networks(self, filters):
        return self.rows

    def create(self, name, labels):
        self.created.append((name, labels))
        return f"{len(self.created):064x}"

    def remove(self, net_id):
        if net_id == "stuck":
            raise RuntimeError("endpoint in use")
        self.removed.append(net_id)


def params(**kw):
    return {"lab": "iso", "networks": [], "state": "present", "student": "", "workers": 4} | kw


def test_missing_networks_are_made_labelled_and_existing_ones_kept():
    mod = networks()
    have = {"Name": "labkit-iso-a", "Id": "a" * 64, "Labels": {"labkit.lab": "iso", "labkit.student": "a"}}
    eng = FakeEngine([have, {"Name": "labkit-iso-a-other", "Id": "x" * 64, "Labels": {}}])
    got = mod.present(eng, params(networks=[{"name": "labkit-iso-a", "student": "a"},
                                            {"name": "labkit-iso-b", "student": "b"}]))
    by = {r["student"]: r for r in got}
    assert by["a"]["action"] == "unchanged" and by["a"]["bridge"] == "br-" + "a" * 12
    assert by["b"]["action"] == "created" and by["b"]["bridge"] == "br-" + "0" * 12
    assert eng.created == [("labkit-iso-b", {"labkit.lab": "iso", "labkit.student": "b", "labkit.role": "network"})]


def test_a_network_of_the_planned_name_not_the_labs_is_named_and_left_alone():
    mod = networks()
    eng = FakeEngine([{"Name": "labkit-iso-a", "Id": "f" * 64, "Labels": {"owner": "someone"}}])
    got = mod.present(eng, params(networks=[{"name": "labkit-iso-a", "student": "a"}]))
    assert got[0]["action"] == "failed" and "not lab iso's" in got[0]["error"]
    assert eng.created == [] and eng.removed == []


def test_absent_removes_each_listed_network_and_names_the_one_that_fails():
    mod = networks()
    eng = FakeEngine([{"Name": "labkit-iso-a", "Id": "n1"}, {"Name": "labkit-iso-b", "Id": "stuck"}])
    got = {r["name"]: r for r in mod.absent(eng, params(state="absent"))}
    assert got["labkit-iso-a"]["action"] == "removed" and eng.removed == ["n1"]
    assert got["labkit-iso-b"]["action"] == "failed" and "endpoint in use" in got["labkit-iso-b"]["error"]


class FakeApi:
    """The engine's HTTP API as Engine.remove uses it: refuses the delete ``refusals`` times
    with dockerd's "has active endpoints", with ``attached`` listed on the network."""

    def __init__(self, refusals, attached=None):
        self.refusals, self.attached = refusals, attached or {}
        self.deletes = 0
        self.disconnected: list[str] = []

    def get_json(self, path, net_id):
        return {"Id": net_id, "Containers": self.attached}

    def post_json(self, path, net_id, data):
        self.disconnected.append(data["Container"])

    def delete_call(self, path, net_id):
        self.deletes += 1
        if self.deletes <= self.refusals:
            mod = networks()
            raise mod.APIError("error while removing network: network x id n1 has active endpoints")


def _engine(api):
    mod = networks()
    eng = mod.Engine.__new__(mod.Engine)
    eng.api = api
    return eng


def test_remove_waits_out_an_endpoint_dockerd_still_counts():
    """dockerd refused a network whose containers were removed a moment before: tried again."""
    api = FakeApi(refusals=2)
    _engine(api).remove("n1", settle=5)
    assert api.deletes == 3


def test_remove_names_what_stays_attached():
    api = FakeApi(refusals=10**6, attached={"c" * 64: {"Name": "someone-elses"}})
    try:
        _engine(api).remove("n1", settle=0.6)
    except RuntimeError as e:
        assert "has active endpoints" in str(e) and "attached: someone-elses" in str(e)
    else:
        raise AssertionError("a network that stays in use was reported removed")
    assert api.disconnected and set(api.disconnected) == {"c" * 64}

"""Pure logic of the students' VM networks: the address pool
(roles/lab_network/module_utils/labkit_netpool.py, as labkit.vm.vmnet loads it). No libvirt."""
from __future__ import annotations

import ipaddress

from labkit.vm import vmnet

np = vmnet.netpool()
POOL, PREFIX = vmnet.DEFAULT_POOL, vmnet.PREFIX
DOCKER = [ipaddress.ip_network("10.200.0.0/14")]


def test_pool_holds_a_classroom_and_does_not_touch_the_engine_pools():
    assert np.slots(POOL, PREFIX) == 2048
    assert np.free(POOL, PREFIX, DOCKER) == 2048
    assert not ipaddress.ip_network(POOL).overlaps(DOCKER[0])
    assert not ipaddress.ip_network(POOL).overlaps(ipaddress.ip_network("192.168.122.0/24"))  # libvirt's default


def test_students_get_distinct_subnets_kept_for_the_same_name():
    taken = list(DOCKER)
    got = {}
    for i in range(1, 41):
        sub = np.pick(POOL, PREFIX, f"class40/st{i:02d}", taken)
        assert sub is not None and sub.subnet_of(ipaddress.ip_network(POOL)) and sub.prefixlen == PREFIX
        assert not any(sub.overlaps(t) for t in taken)
        got[i] = sub
        taken.append(sub)
    assert len(set(got.values())) == 40
    # deterministic: the same lab/student, with nothing else taken, gets the same subnet again
    assert np.pick(POOL, PREFIX, "class40/st07", DOCKER) == np.pick(POOL, PREFIX, "class40/st07", DOCKER)


def test_taken_ranges_are_skipped_and_a_full_pool_says_so():
    key = "iso/a"
    first = np.pick(POOL, PREFIX, key, [])
    assert np.pick(POOL, PREFIX, key, [first]) != first
    # an existing libvirt network or route anywhere in the slot (a /24 over it) is skipped too
    wide = ipaddress.ip_network(f"{first.network_address}/24", strict=False)
    assert not np.pick(POOL, PREFIX, key, [wide]).overlaps(wide)
    assert np.pick("10.204.0.0/26", 27, key, [ipaddress.ip_network("10.204.0.0/26")]) is None
    assert np.free("10.200.0.0/16", PREFIX, DOCKER) == 0  # a pool inside the engine's: room for none


def test_vmnet_pool_holds(monkeypatch):
    monkeypatch.setattr(np, "libvirt_networks", lambda uri: [])
    monkeypatch.setattr(np, "host_networks", lambda: [ipaddress.ip_network("10.204.0.0/17")])
    monkeypatch.setattr(np, "docker_pools", lambda path="": DOCKER)
    assert vmnet.free_networks() == (1024, 2048)
    assert vmnet.pool_holds(1024) and not vmnet.pool_holds(1025)
    monkeypatch.setenv("LABKIT_VM_POOL", "10.200.0.0/16")
    chk = vmnet.doctor_check(2, need_vm=True)
    assert chk.name == "VM networks" and chk.status == "fail" and "LABKIT_VM_POOL" in chk.fix


def test_bridge_names_fit_linux_and_tell_labs_apart():
    a, b = np.bridge_name("a", "b-c"), np.bridge_name("a-b", "c")
    assert a != b and len(a) <= 15 and a.startswith("lkv")
    assert np.bridge_name("iso", "a") == np.bridge_name("iso", "a")


def test_network_xml_round_trip():
    sub = ipaddress.ip_network("10.204.3.32/27")
    info = np.parse_network(np.network_xml("labkit-iso-a", "iso", "a", "lkv0123456789", sub))
    assert info["subnet"] == sub and info["gateway"] == "10.204.3.33" and info["bridge"] == "lkv0123456789"
    assert info["dhcp"] == ("10.204.3.34", "10.204.3.62") and info["forward"] == "nat"
    assert (info["lab"], info["student"]) == ("iso", "a")
    assert np.describe(info)["subnet"] == "10.204.3.32/27"


def test_network_dnsmasq_offers_leases_without_pinging_first():
    """dnsmasq pings an address before it offers it and waits 3 s for no echo: 3 s of every VM
    boot on a network that is one student's alone. libvirt passes the option to its dnsmasq."""
    import xml.etree.ElementTree as ET

    xml = np.network_xml("labkit-iso-a", "iso", "a", "lkv0123456789", ipaddress.ip_network("10.204.3.32/27"))
    root = ET.fromstring(xml)
    opts = [o.get("value") for o in root.iter(f"{{{np.DNSMASQ_NS}}}option")]
    assert opts == ["no-ping"]

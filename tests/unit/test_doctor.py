"""The lab-aware doctor's pure sizing logic: memory, VM boots vs cores, disk, registries.
No engine: the machine side is covered by tests/integration/test_15_doctor.py."""
import json

import pytest

from labkit.doctor import machine
from labkit.doctor import sizing as d

MiB, GiB = d.MiB, d.GiB


@pytest.mark.parametrize("text, want", [("256m", 256 * MiB), ("1g", GiB), ("512k", 512 * 1024),
                                        ("1048576", 1048576), ("2G", 2 * GiB)])
def test_parse_bytes_takes_dockers_memory_notation(text, want):
    assert d.parse_bytes(text) == want


def test_mem_available_reads_meminfo():
    text = "MemTotal:       24683520 kB\nMemFree:        19423232 kB\nMemAvailable:   23958528 kB\n"
    assert d.mem_available(text) == 23958528 * 1024
    with pytest.raises(ValueError):
        d.mem_available("MemTotal: 1 kB\n")


def test_qemu_overhead_is_measured_rss_above_vm_memory():
    # 512 MiB guest whose qemu had 623 MiB resident: 111 MiB are QEMU's own
    over, how = d.qemu_overhead([(623 * MiB, 512), (700 * MiB, 640)], "qemu")
    assert over == 111 * MiB and "measured" in how


def test_qemu_overhead_falls_back_to_the_estimate():
    # nothing measured, or a guest that has not touched all its memory: nothing to learn
    for samples in ([], [(400 * MiB, 512)]):
        over, how = d.qemu_overhead(samples, "qemu")
        assert over == d.QEMU_OVERHEAD_MIB["qemu"] * MiB and "estimate" in how
    assert d.qemu_overhead([], "kvm")[0] == d.QEMU_OVERHEAD_MIB["kvm"] * MiB


def test_support_is_capped_by_ansible_forks():
    few = d.support_bytes(hosts=2, vms_booting=1, containers=1)
    assert few == (d.UP_BASE_MIB + 2 * d.FORK_MIB + d.VAGRANT_MIB + d.SHIM_MIB) * MiB
    many = d.support_bytes(hosts=500, vms_booting=100, containers=0)
    assert many == (d.UP_BASE_MIB + d.UP_FORKS * (d.FORK_MIB + d.VAGRANT_MIB)) * MiB


def sizing(vms=0, vm_mib=600, containers=(), support_mib=0):
    return d.Sizing(vms, vm_mib * MiB, [(n, c, e * MiB, lim * MiB, True) for n, c, e, lim in containers],
                    support_mib * MiB)


def test_sizing_expected_and_worst():
    s = sizing(3, 600, [("debian:12", 3, 40, 256), ("busybox", 3, 1, 256)], 100)
    assert s.expected == (3 * 600 + 3 * 40 + 3 * 1 + 100) * MiB
    assert s.worst == (3 * 600 + 6 * 256 + 100) * MiB


def test_memory_fails_when_the_vms_do_not_fit():
    c = d.memory_check(sizing(8, 4096 + 111), available=22 * GiB, vm_how="111 MiB measured")
    assert c.status == "fail" and "8 VM(s)" in c.detail and "22.0 GiB available" in c.detail and c.fix


def test_memory_warns_when_tight_or_when_limits_would_not_fit():
    assert d.memory_check(sizing(1, 900), available=1 * GiB).status == "warn"       # 88% of it
    limits = sizing(0, 0, [("debian:12", 10, 40, 256)])                             # 400 MiB, 2.5 GiB at limits
    c = d.memory_check(limits, available=2 * GiB)
    assert c.status == "warn" and "(tight)" in c.detail
    assert d.memory_check(sizing(1, 600), available=22 * GiB).status == "ok"


def test_memory_detail_says_what_is_measured_and_what_runs_already():
    s = d.Sizing(0, 0, [("ubuntu:24.04", 2, 256 * MiB, 256 * MiB, False), ("debian:12", 2, 42 * MiB, 256 * MiB, True)],
                 0, "1 VM(s), 4 container(s)")
    detail = d.memory_check(s, 22 * GiB).detail
    assert "2 x ubuntu:24.04 256 MiB (its limit: not measured here)" in detail
    assert "2 x debian:12 ~42 MiB (measured)" in detail
    assert "already running, not counted: 1 VM(s), 4 container(s)" in detail


def test_boot_estimate_fits_what_was_measured_under_emulation():
    assert d.boot_seconds(0, 2, 55, True) == 0
    assert d.boot_seconds(1, 2, 55, True) == 55
    # three VMs booting at once on 2 cores took 184-195 s
    assert 184 <= d.boot_seconds(3, 2, 55, True) <= 195
    # more cores share the extra work
    assert d.boot_seconds(3, 16, 55, True) < d.boot_seconds(3, 2, 55, True)
    # KVM: no slow-down until the VMs outnumber the cores
    assert d.boot_seconds(2, 2, 20, False) == 20 and d.boot_seconds(4, 2, 20, False) == 40


def test_cpu_check_under_emulation():
    assert d.cpu_check(0, 1, 2, "qemu", 55, "measured", running=1).status == "ok"
    one = d.cpu_check(1, 1, 2, "qemu", 55, "measured")
    assert one.status == "ok" and "about 55 s" in one.detail
    three = d.cpu_check(3, 1, 2, "qemu", 55, "measured")
    assert three.status == "warn" and "3 VM(s) to boot" in three.detail and "about 190 s each" in three.detail
    assert three.fix
    # far past the 600 s Vagrant is given: `labkit up` would fail
    many = d.cpu_check(12, 1, 2, "qemu", 55, "estimate")
    assert many.status == "fail" and "600 s" in many.detail
    # forks bound how many boot at once
    assert "12 at once" in many.detail
    rounds = d.cpu_check(30, 1, 64, "qemu", 55, "estimate")
    assert "20 at once" in rounds.detail and "2 rounds" in rounds.detail


def test_cpu_check_with_kvm():
    assert d.cpu_check(2, 1, 2, "kvm", 20, "estimate").status == "ok"
    assert d.cpu_check(8, 1, 2, "kvm", 20, "estimate").status == "warn"


def test_disk_check():
    assert d.disk_check("disk (/)", 2 * GiB, 1 * GiB, ["box"]).status == "fail"              # does not fit
    assert d.disk_check("disk (/)", 0, 4 * GiB, []).status == "fail"                         # under the floor
    warn = d.disk_check("disk (/)", 3 * GiB, 7 * GiB, ["image debian:12"])
    assert warn.status == "warn" and "image debian:12" in warn.detail
    assert d.disk_check("disk (/)", 1 * GiB, 70 * GiB, []).status == "ok"


@pytest.mark.parametrize("ref, want", [
    ("docker.io/library/ubuntu:24.04", ("docker.io", "library/ubuntu", "24.04")),
    ("ubuntu:24.04", ("docker.io", "library/ubuntu", "24.04")),
    ("127.0.0.1:5000/library/ubuntu:24.04", ("127.0.0.1:5000", "library/ubuntu", "24.04")),
    ("localhost/mirror/alpine", ("localhost", "mirror/alpine", "latest")),
    ("registry.access.redhat.com/ubi9/ubi-minimal:latest",
     ("registry.access.redhat.com", "ubi9/ubi-minimal", "latest")),
    ("docker.io/rockylinux/rockylinux:9", ("docker.io", "rockylinux/rockylinux", "9")),
])
def test_split_image_ref(ref, want):
    assert d.split_image_ref(ref) == want


def test_registry_bases():
    assert d.registry_bases("docker.io", ["https://mirror.lan/"]) == ["https://mirror.lan",
                                                                     "https://registry-1.docker.io"]
    assert d.registry_bases("127.0.0.1:5000") == ["https://127.0.0.1:5000", "http://127.0.0.1:5000"]


def test_best_probe():
    refused = ("unreachable", "https://r: refused")
    assert d.best_probe([refused, ("found", "http://r has it")])[0] == "found"
    assert d.best_probe([refused, ("missing", "http://r answers HTTP 404")])[0] == "missing"
    both = d.best_probe([refused, ("unreachable", "http://r: refused")])
    assert both == ("unreachable", "https://r: refused; http://r: refused")


def test_registry_mirrors(tmp_path):
    f = tmp_path / "daemon.json"
    assert d.registry_mirrors(f) == []
    f.write_text(json.dumps({"registry-mirrors": ["https://mirror.lan"]}))
    assert d.registry_mirrors(f) == ["https://mirror.lan"]


def test_skipped_vm_checks_are_not_a_pass():
    c = machine.skipped_vm_checks()
    assert c.status == "skipped" and "no VM" in c.detail


def test_one_boot_inverts_the_boot_model():
    assert d.one_boot(190, 3, 2, True) == pytest.approx(190 / 3.45)
    assert d.one_boot(55, 1, 2, True) == 55


def test_measured_reads_every_labs_measurements(labkit_home):
    def lab(name, spec, rows):
        folder = labkit_home / "labs" / name
        folder.mkdir(parents=True)
        if spec is not None:
            (folder / "lab.json").write_text(json.dumps({"name": name, **spec}))
        (folder / "measurements.json").write_text(json.dumps({r["host"]: r for r in rows}))

    lab("one", {"students": ["s01"], "vm": {"enabled": True, "memory": 512}}, [
        {"host": "labkit-one-s01-vm", "role": "vm", "memory_bytes": 623 * MiB, "ready_seconds": 77.0},
        {"host": "labkit-one-s01-debian12", "role": "container", "memory_bytes": 42 * MiB},
        {"host": "labkit-one-s01-busybox", "role": "container", "memory_bytes": None},   # not measured
    ])
    # three VMs at once, with an old-style row (how it booted unknown): its boot time says nothing
    lab("three", {"students": ["a", "b", "c"], "vm": {"enabled": True, "memory": 768}}, [
        {"host": "labkit-three-a-vm", "role": "vm", "memory_bytes": 900 * MiB, "ready_seconds": 190.0},
        {"host": "labkit-three-a-debian12", "role": "container", "memory_bytes": 60 * MiB},
    ])
    # taken down (no lab.json): vm.memory unknown, but a row that says how it booted still counts
    lab("gone", None, [
        {"host": "labkit-gone-a-vm", "role": "vm", "memory_bytes": 700 * MiB, "ready_seconds": 172.5,
         "accel": "qemu", "boots_at_once": 3, "server_cores": 2, "vm_cpus": 1},
    ])

    m = d.measured()
    assert sorted(m.vm_samples) == [(623 * MiB, 512, None), (900 * MiB, 768, None)]
    assert sorted(m.boots) == [(50.0, "qemu"), (77.0, None)]
    assert m.container_mem == {"debian12": 60 * MiB}

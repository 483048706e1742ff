"""The fact checks fail, naming the fact, the hosts and the values (pure logic on probed facts)."""
import pytest

from labkit.observe import checks
from labkit.observe.facts import HostFacts, _parse

SERVER = HostFacts("lab-server", "server", kernel_release="6.18.44", kernel_version="#1 SMP", boot_id="aaaa",
                   pid1="systemd", hostname="srv", os_id="debian", os_version="12", os_pretty="Debian 12",
                   ns_pid="pid:[1]", ns_mnt="mnt:[1]", ns_uts="uts:[1]", ns_net="net:[1]")


def container(**kw):
    base = dict(host="labkit-l-s1-debian11", role="container", student="s1", distro="debian:11",
                kernel_release="6.18.44", kernel_version="#1 SMP", boot_id="aaaa", pid1="sleep", hostname="s1-debian11",
                os_id="debian", os_version="11", os_pretty="Debian 11", pkg_mgr="apt-get", kernel_modules="no",
                ns_pid="pid:[2]", ns_mnt="mnt:[2]", ns_uts="uts:[2]", ns_net="net:[2]")
    base.update(kw)
    return HostFacts(**base)


def vm(**kw):
    base = dict(host="labkit-l-s1-vm", role="vm", kernel_release="6.1.0-28-cloud-amd64", kernel_version="#1 Debian",
                boot_id="bbbb", pid1="systemd", virt="qemu", own_kernel_image="/boot/vmlinuz-6.1.0-28-cloud-amd64",
                kernel_modules="yes", os_id="debian", os_version="12", pkg_mgr="apt-get")
    base.update(kw)
    return HostFacts(**base)


def test_passing_lab():
    c = container()
    for fn in (checks.k1, checks.k2, checks.k4, checks.k5, checks.k6):
        assert fn(c, SERVER)
    assert checks.k7(c, SERVER, [c])
    v = vm()
    assert "qemu" in checks.k3(v, SERVER)
    assert checks.k5(v, SERVER) and checks.k6(v, SERVER)


def test_a_vm_listed_among_containers_fails_k1_k2_naming_both_kernels():
    v = vm()
    with pytest.raises(checks.FactFailed, match=r"K1: labkit-l-s1-vm kernel 6.1.0-28-cloud-amd64 != server 6.18.44"):
        checks.k1(v, SERVER)
    with pytest.raises(checks.FactFailed, match=r"K2: labkit-l-s1-vm boot_id bbbb != server aaaa"):
        checks.k2(v, SERVER)


@pytest.mark.parametrize("fn, host, msg", [
    (checks.k3, vm(boot_id="aaaa"), "K3: labkit-l-s1-vm boot_id aaaa == server's"),
    (checks.k3, vm(own_kernel_image=""), "/boot/vmlinuz-6.1.0-28-cloud-amd64 is missing"),
    (checks.k3, vm(virt="none"), "virtualization is 'none'"),
    (checks.k4, container(os_version="12"), "K4: labkit-l-s1-debian11 made from debian:11 reports os-release debian 12"),
    (checks.k4, container(distro="busybox", os_id="debian"), "should have no os-release"),
    (checks.k5, container(own_kernel_image="/boot/vmlinuz-x"), "K5: debian:11 carries kernel files"),
    (checks.k5, vm(kernel_modules="no"), "VM without its own kernel files"),
    (checks.k6, container(pid1="systemd"), "container PID 1 is the init system 'systemd'"),
    (checks.k6, container(pkg_mgr="none"), "package manager 'none', expected debian:11's 'apt-get'"),
    (checks.k6, vm(pid1="bash"), "VM PID 1 is 'bash'"),
])
def test_failures_name_fact_host_and_values(fn, host, msg):
    with pytest.raises(checks.FactFailed) as ei:
        fn(host, SERVER)
    assert msg in str(ei.value)


def test_k7_shared_namespaces_fail():
    a = container()
    b = container(host="labkit-l-s1-debian12", distro="debian:12", ns_pid="pid:[3]", ns_mnt="mnt:[3]", ns_net="net:[3]")
    with pytest.raises(checks.FactFailed, match="share the uts namespace"):
        checks.k7(a, SERVER, [a, b])
    with pytest.raises(checks.FactFailed, match="shares the server's net namespace"):
        checks.k7(container(ns_net="net:[1]"), SERVER, [])


def test_k8_k9_need_measurements():
    c = container()
    with pytest.raises(checks.FactFailed, match="not recorded"):
        checks.k8(c, None, [])
    with pytest.raises(checks.FactFailed, match="not below the VM's"):
        checks.k8(c, {"ready_seconds": 90, "ready_how": "x"}, [60.0])
    assert "0.20s" in checks.k8(c, {"ready_seconds": 0.2, "ready_how": "x"}, [60.0])
    with pytest.raises(checks.FactFailed, match="K9"):
        checks.k9(c, {"memory_bytes": 0, "disk_bytes": 1})


def test_probe_output_parsing():
    assert _parse("a=1\nb=x=y\nnoise\n") == {"a": "1", "b": "x=y"}

"""Pure logic of labkit.vm.virt: no QEMU, no libvirt."""
from __future__ import annotations

import os
import subprocess

import pytest

from labkit.errors import LabkitError
from labkit.vm import virt

INTEL = "processor\t: 0\nflags\t\t: fpu vme de pse msr vmx sse2\n"
AMD = "processor\t: 0\nflags\t\t: fpu svm lm\nbugs\t\t: sysret_ss_attrs\n"
NONE = "processor\t: 0\nflags\t\t: fpu vme de pse hypervisor\nvmx flags\t: ept\n"


@pytest.mark.parametrize("text,want", [(INTEL, {"vmx"}), (AMD, {"svm"}), (NONE, set()), ("", set())])
def test_cpu_virt_flags(text, want):
    assert virt.cpu_virt_flags(text) == want


def test_vmx_flags_line_is_not_the_flags_line():
    # "vmx flags" (sub-features) must not be read as the CPU having vmx
    assert virt.cpu_virt_flags("vmx flags\t: vmx ept\n") == set()


@pytest.mark.parametrize("force,want", [(None, None), ("auto", None), ("", None), ("KVM", "kvm"),
                                        ("qemu", "qemu"), ("tcg", "qemu")])
def test_normalize_force(force, want):
    assert virt.normalize_force(force) == want


def test_normalize_force_rejects_unknown():
    with pytest.raises(LabkitError) as e:
        virt.normalize_force("xen")
    assert "auto, kvm, qemu" in e.value.hint


def test_forced_modes_win_over_everything():
    assert virt.decide("kvm", set(), False, None).mode == "kvm"
    assert virt.decide("qemu", {"vmx"}, True, (True, "ok")).mode == "qemu"


def test_auto_without_flags_is_qemu():
    a = virt.decide(None, set(), True, None)
    assert a.mode == "qemu" and "vmx/svm" in a.reason and a.emulated


def test_auto_without_dev_kvm_is_qemu():
    assert "/dev/kvm" in virt.decide(None, {"vmx"}, False, None).reason


def test_auto_failed_probe_is_qemu_with_detail():
    a = virt.decide(None, {"vmx"}, True, (False, "KVM: entry failed, emulation failure"))
    assert a.mode == "qemu" and "emulation failure" in a.reason


def test_auto_passing_probe_is_kvm():
    assert virt.decide("auto", {"svm"}, True, (True, "guest ran")).mode == "kvm"


@pytest.mark.parametrize("out", ["KVM internal error. Suberror: 1\nemulation failure\n",
                                 "qemu: kvm_set_msrs: failed to set MSR 0x48b",
                                 "Could not access KVM kernel module: Permission denied"])
def test_probe_failed_markers(out):
    assert virt.probe_failed(out)


def test_probe_clean_output():
    assert virt.probe_failed("") is None


def test_detect_accel_forced_does_not_probe(monkeypatch):
    monkeypatch.setattr(virt, "_run_probe", lambda: pytest.fail("probed"))
    assert virt.detect_accel("qemu").mode == "qemu"
    assert virt.detect_accel("kvm").mode == "kvm"


def test_detect_accel_caches_probe_per_boot(monkeypatch, tmp_path):
    monkeypatch.setenv("LABKIT_HOME", str(tmp_path))
    calls = []
    monkeypatch.setattr(virt, "_read", lambda p: INTEL if p == "/proc/cpuinfo" else "boot-1\n")
    monkeypatch.setattr(virt.os, "access", lambda p, m: True)
    monkeypatch.setattr(virt.os.path, "exists", lambda p: True)
    monkeypatch.setattr(virt, "_run_probe", lambda: calls.append(1) or (False, "emulation failure"))
    assert virt.detect_accel().mode == "qemu"
    assert virt.detect_accel("auto").mode == "qemu"
    assert len(calls) == 1


def _run_wrapper(tmp_path, args):
    """Run the wrapper text with a fake qemu that prints its argv, one per line."""
    fake = tmp_path / "fakeqemu"
    fake.write_text('#!/bin/sh\nfor a in "$@"; do echo "$a"; done\n')
    fake.chmod(0o755)
    w = tmp_path / "wrapper"
    w.write_text(virt.wrapper_text(qemu=str(fake), tb_size=128))
    w.chmod(0o755)
    return subprocess.run([str(w), *args], capture_output=True, text=True, check=True).stdout.split("\n")[:-1]


def test_wrapper_rewrites_accel_tcg(tmp_path):
    out = _run_wrapper(tmp_path, ["-name", "guest=x", "-accel", "tcg", "-m", "512"])
    assert out == ["-name", "guest=x", "-accel", "tcg,tb-size=128", "-m", "512"]


def test_wrapper_leaves_machine_accel_alone(tmp_path):
    # libvirt probes with "-machine none,accel=tcg": adding -accel there makes QEMU refuse
    args = ["-S", "-machine", "none,accel=tcg", "-qmp", "unix:/x"]
    assert _run_wrapper(tmp_path, args) == args


@pytest.mark.parametrize("args", [["-S", "-no-user-config", "-machine", "none,accel=kvm:tcg", "-qmp", "x"],
                                  ["-accel", "kvm", "-m", "1"], ["-help"],
                                  ["-accel", "tcg,tb-size=64"]])
def test_wrapper_passes_other_runs_untouched(tmp_path, args):
    assert _run_wrapper(tmp_path, args) == args


def test_wrapper_keeps_args_with_spaces(tmp_path):
    args = ["-accel", "tcg", "-name", "a b"]
    assert _run_wrapper(tmp_path, args) == ["-accel", "tcg,tb-size=128", "-name", "a b"]


def test_tcg_emulator_wrapper_is_idempotent(monkeypatch, tmp_path):
    monkeypatch.setenv("LABKIT_HOME", str(tmp_path))
    monkeypatch.setattr(virt, "world_reachable", lambda p: True)
    p = virt.tcg_emulator_wrapper()
    assert p.parent == tmp_path / "bin"
    m = p.stat().st_mtime_ns
    assert virt.tcg_emulator_wrapper() == p and p.stat().st_mtime_ns == m
    assert os.access(p, os.X_OK) and "tb-size=128" in p.read_text()


def test_wrapper_moves_out_of_private_home_as_root(monkeypatch, tmp_path):
    monkeypatch.setenv("LABKIT_HOME", str(tmp_path))
    monkeypatch.setattr(virt, "world_reachable", lambda p: False)
    monkeypatch.setattr(virt, "SHARED_WRAPPER_DIR", tmp_path / "shared")
    monkeypatch.setattr(virt.os, "geteuid", lambda: 0)
    assert virt.tcg_emulator_wrapper().parent == tmp_path / "shared"
    monkeypatch.setattr(virt.os, "geteuid", lambda: 1000)
    with pytest.raises(LabkitError):
        virt.tcg_emulator_wrapper()


def test_world_reachable(tmp_path):
    d = tmp_path / "a"
    d.mkdir(mode=0o700)
    assert not virt.world_reachable(d / "x")

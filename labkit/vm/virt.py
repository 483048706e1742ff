"""Decide how VMs run here: KVM when it really works, QEMU emulation (TCG) otherwise.

``/dev/kvm`` existing is not enough: on some machines it exists while the CPU exposes no
vmx/svm and every KVM guest dies ("emulation failure", "failed to set MSR"). So ``auto``
requires the CPU flag, a read-writable /dev/kvm and a real probe (a tiny QEMU run with
``-accel kvm``), whose result is cached per boot in ``state_dir()/kvm-probe.json``.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from labkit import paths
from labkit.errors import EngineError, SpecError

QEMU = "/usr/bin/qemu-system-x86_64"
TB_SIZE_MB = 128
MODES = ("kvm", "qemu")
FORCE_CHOICES = (None, "auto", "kvm", "qemu")
_KVM_FAILURES = ("emulation failure", "failed to set msr", "kvm_init", "could not access kvm",
                 "kvm: ", "kvm_run", "failed to initialize kvm", "no accelerator found")


@dataclass(frozen=True)
class Accel:
    mode: str  # "kvm" or "qemu" (libvirt's domain type / vagrant-libvirt's driver)
    reason: str

    @property
    def emulated(self) -> bool:
        return self.mode == "qemu"


# ---------------------------------------------------------------------------- pure logic


def cpu_virt_flags(cpuinfo: str) -> set[str]:
    """The hardware virtualization flags (vmx, svm) listed in /proc/cpuinfo text."""
    found: set[str] = set()
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "flags":
            found.update(f for f in value.split() if f in ("vmx", "svm"))
    return found


def normalize_force(force: str | None) -> str | None:
    """None/"auto" -> None; "kvm"/"qemu" (any case, "tcg" as an alias of qemu) -> itself."""
    if force is None:
        return None
    f = force.strip().lower()
    if f in ("", "auto"):
        return None
    if f == "tcg":
        return "qemu"
    if f in MODES:
        return f
    raise SpecError(f"unknown acceleration {force!r}", "use one of: auto, kvm, qemu")


def probe_failed(output: str) -> str | None:
    """The first KVM failure marker found in QEMU's output, or None."""
    low = output.lower()
    for marker in _KVM_FAILURES:
        if marker in low:
            for line in output.splitlines():
                if marker in line.lower():
                    return line.strip()
            return marker
    return None


def decide(force: str | None, flags: set[str], dev_ok: bool, probe: tuple[bool, str] | None) -> Accel:
    """Pure decision: forced mode wins; else KVM needs flags, /dev/kvm and a passing probe.

    ``probe`` is (ok, detail) or None when no probe was run.
    """
    f = normalize_force(force)
    if f == "kvm":
        return Accel("kvm", "forced kvm")
    if f == "qemu":
        return Accel("qemu", "forced qemu (TCG emulation)")
    if not flags:
        return Accel("qemu", "CPU has no vmx/svm flag: using QEMU emulation (TCG)")
    if not dev_ok:
        return Accel("qemu", "/dev/kvm missing or not read-writable: using QEMU emulation (TCG)")
    if probe is None:
        return Accel("qemu", "KVM probe not run: using QEMU emulation (TCG)")
    ok, detail = probe
    if not ok:
        return Accel("qemu", f"KVM probe failed ({detail}): using QEMU emulation (TCG)")
    return Accel("kvm", f"KVM works ({'/'.join(sorted(flags))}, probe passed)")


def wrapper_text(qemu: str = QEMU, tb_size: int = TB_SIZE_MB) -> str:
    """The emulator wrapper: adds tb-size to a TCG accel, leaves everything else untouched."""
    return f"""#!/bin/sh
# labkit: QEMU with the TCG translation cache capped at {tb_size} MiB (default is ~1 GiB,
# which makes an emulated 512 MiB guest take ~1.6 GB of host RAM). Only a run with a plain
# "-accel tcg" argument pair (how libvirt starts a TCG domain) is changed; libvirt's
# capability probes ("-machine none,accel=...") and everything else pass through untouched.
real={qemu}
case " $* " in
  *" -accel tcg "*) ;;
  *) exec "$real" "$@" ;;
esac
n=$#
prev=
for a in "$@"; do
  if [ "$prev" = "-accel" ] && [ "$a" = "tcg" ]; then a="tcg,tb-size={tb_size}"; fi
  prev="$a"
  set -- "$@" "$a"
done
shift "$n"
exec "$real" "$@"
"""


# ---------------------------------------------------------------------------- machine side


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def _boot_id() -> str:
    return _read("/proc/sys/kernel/random/boot_id").strip() or "unknown"


def _run_probe(timeout: float = 4.0) -> tuple[bool, str]:
    """Start a tiny KVM guest (no disk, halts in the firmware) and see whether KVM dies."""
    if not shutil.which(QEMU) and not Path(QEMU).exists():
        return False, f"{QEMU} not installed"
    cmd = [QEMU, "-accel", "kvm", "-cpu", "host", "-m", "32", "-nodefaults", "-display", "none",
           "-serial", "none", "-monitor", "none", "-no-reboot", "-boot", "n", "-net", "none"]
    try:
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    except OSError as e:
        return False, str(e)
    try:
        out, _ = p.communicate(timeout=timeout)
        # it exited by itself within the window: that is a failure unless it was a clean halt
        bad = probe_failed(out or "")
        if bad or p.returncode != 0:
            return False, bad or f"qemu exited rc={p.returncode}: {(out or '').strip()[:200]}"
        return True, "guest ran"
    except subprocess.TimeoutExpired:
        p.kill()
        out, _ = p.communicate()
        bad = probe_failed(out or "")
        return (False, bad) if bad else (True, f"guest ran {timeout:.0f}s")


def _cached_probe() -> tuple[bool, str]:
    cache = paths.state_dir() / "kvm-probe.json"
    boot = _boot_id()
    try:
        data = json.loads(cache.read_text())
        if data.get("boot_id") == boot:
            return bool(data["ok"]), str(data["detail"]) + " (cached for this boot)"
    except (OSError, ValueError, KeyError):
        pass
    ok, detail = _run_probe()
    cache.write_text(json.dumps({"boot_id": boot, "ok": ok, "detail": detail, "at": time.time()}))
    return ok, detail


def detect_accel(force: str | None = None) -> Accel:
    """Pick "kvm" or "qemu" for this machine; ``force`` in {None, "auto", "kvm", "qemu"}."""
    f = normalize_force(force)
    if f is not None:
        return decide(f, set(), False, None)
    flags = cpu_virt_flags(_read("/proc/cpuinfo"))
    dev_ok = os.path.exists("/dev/kvm") and os.access("/dev/kvm", os.R_OK | os.W_OK)
    probe = _cached_probe() if flags and dev_ok else None
    return decide(None, flags, dev_ok, probe)


SHARED_WRAPPER_DIR = Path("/usr/local/libexec/labkit")


def world_reachable(path: Path) -> bool:
    """True when every parent folder of ``path`` can be traversed by any user.

    libvirt execs the emulator as its own user (Debian: libvirt-qemu), so a wrapper under
    a 0700 home folder (root's, or any bookworm user's) cannot be started.
    """
    for parent in path.resolve().parents:
        try:
            if not parent.stat().st_mode & 0o001:
                return False
        except OSError:
            return False
    return True


def _write_if_changed(path: Path, text: str) -> None:
    if path.exists() and path.read_text() == text:
        if path.stat().st_mode & 0o777 != 0o755:
            path.chmod(0o755)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.chmod(0o755)
    os.replace(tmp, path)


def tcg_emulator_wrapper(session: bool = False) -> Path:
    """Write (if needed) and return the tb-size-capping QEMU wrapper.

    Used as vagrant-libvirt's ``emulator_path`` in qemu mode. It lives in
    ``state_dir()/bin`` when libvirt's QEMU user can reach that folder; otherwise (state
    under a 0700 home, e.g. root's) it is placed in ``/usr/local/libexec/labkit`` when we
    are root. The file is only rewritten when its content changed, so its mtime (which
    keys libvirt's capability cache) stays stable across runs.
    """
    text = wrapper_text()
    path = paths.state_dir() / "bin" / "qemu-system-x86_64-tcg"
    # ``session``: libvirt's session instance runs QEMU as this account, which reaches its own folder
    if not session and not world_reachable(path.parent if path.parent.exists() else paths.state_dir()):
        if os.geteuid() != 0:
            raise EngineError(
                f"libvirt's QEMU user cannot reach {path.parent} (a parent folder is not o+x)",
                "set LABKIT_HOME to a folder every user can traverse, or run as root")
        path = SHARED_WRAPPER_DIR / "qemu-system-x86_64-tcg"
    _write_if_changed(path, text)
    return path

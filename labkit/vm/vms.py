"""Lab VMs seen from Python, which only reads them (playbooks/down.yml removes them, on every
lab server alike): libvirt answering, ssh configs, this machine's VM folders and proxies.

A lab VM is the libvirt domain ``labkit-<lab>-<student>-vm`` made by Vagrant in
``lab_dir(lab)/vagrant/<student>/`` (role ``lab_vm``); its disk is the volume
``labkit-<lab>-<student>-vm.img`` in libvirt's ``default`` pool.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

from labkit import names, paths
from labkit.doctor.check import libvirt_denied
from labkit.errors import EngineError


def uri(local: bool = True) -> str:
    """The libvirt instance of the lab's VMs on a lab server: on this machine the account's
    (``labkit.paths.libvirt_uri``: root's system instance, an ordinary account's session
    instance); on a remote lab server its system instance (labkit works there as root)."""
    return paths.libvirt_uri() if local else paths.SYSTEM_URI


POOL = "default"
MGMT_NETWORK = "labkit"


def vm_name(lab: str, student: str) -> str:
    """The libvirt domain (and inventory host) name of a student's VM (labkit.names owns it)."""
    return names.vm(lab, student)


def _virsh(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(["virsh", "-q", "-c", uri(), *args], capture_output=True,
                              text=True, timeout=timeout)
    except FileNotFoundError as e:
        raise EngineError("virsh not found", "run scripts/setup-vm.sh as root") from e


LIBVIRT_HINT = ("start it: `bash scripts/setup.sh` (starts virtlogd and libvirtd), or run "
                "`virtlogd -d; libvirtd -d` as root; then check `virsh -c qemu:///system version`")


SESSION_HINT = ("libvirt's session instance of this account starts on demand (virtqemud or libvirtd, "
                "`virsh -c qemu:///session uri`): libvirt must be installed, and XDG_RUNTIME_DIR a "
                "folder of this account's (labkit sets one when there is no login session)")


def pool_folder(xml: str) -> Path | None:
    """The folder of a directory storage pool, from its ``virsh pool-dumpxml``; None without one."""
    return Path(xml.split("<path>", 1)[1].split("</path>", 1)[0].strip()) if "<path>" in xml else None


def libvirt_hint() -> str:
    """How to get this account's libvirt instance answering: root's system instance is started;
    an ordinary account's session instance starts on demand (never: start a daemon as root)."""
    return LIBVIRT_HINT if uri() == paths.SYSTEM_URI else SESSION_HINT


def libvirt_answers(timeout: float = 20) -> str | None:
    """None when libvirtd answers on ``uri()``, else why not (one line)."""
    try:
        p = _virsh("uri", timeout=timeout)  # (`virsh version` probes QEMU: seconds)
    except subprocess.TimeoutExpired:
        return f"no answer within {timeout:.0f}s"
    if p.returncode == 0:
        return None
    lines = [ln for ln in p.stderr.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else f"virsh exit {p.returncode}"


def check_libvirt() -> None:
    """EngineError naming libvirtd unless it answers (checked before a VM is planned)."""
    why = libvirt_answers()
    denied = libvirt_denied(why or "") if uri() == paths.SYSTEM_URI else None
    if denied:  # it answers; this ordinary account lacks the right: who grants it, never "start libvirtd"
        raise EngineError(*denied)
    if why:
        raise EngineError(f"libvirtd is not answering at {uri()} ({why})", libvirt_hint())


def _known_labs() -> list[str]:
    d = paths.state_dir() / "labs"
    return [p.name for p in d.iterdir() if p.is_dir()] if d.exists() else []


def _vm_folders(lab: str, student: str | None) -> tuple[Path, list[Path]]:
    """``lab_dir(lab)/vagrant`` and the VM folders in it (one student's, or all)."""
    base = paths.state_dir() / "labs" / lab / "vagrant"
    return base, [base / student] if student else (sorted(p for p in base.iterdir() if p.is_dir())
                                                   if base.exists() else [])


def remove_vm_folders(lab: str, student: str | None = None) -> list[str]:
    """Remove this machine's VM folders of the lab (Vagrant's for local VMs; the ssh_config
    and key copy of a remote server's VM, which down.yml removed there)."""
    base, dirs = _vm_folders(lab, student)
    removed = []
    for d in dirs:
        if d.exists():
            shutil.rmtree(d, ignore_errors=True)
            removed.append(str(d))
    if base.exists() and not any(base.iterdir()):
        base.rmdir()
    return removed


def read_ssh_config(path: Path) -> dict[str, str]:
    """The ``Key value`` settings of a one-host OpenSSH config (the lab_vm role's ssh_config)."""
    conf = {}
    for line in path.read_text().splitlines():
        parts = line.split(None, 1)
        if len(parts) == 2 and not parts[0].startswith("#"):
            conf[parts[0]] = parts[1].strip()
    return conf


def proxied_addresses(lab: str, student: str | None = None) -> list[str]:
    """``host:port`` of the lab's VMs this machine reaches through a lab server (ProxyCommand)."""
    _, dirs = _vm_folders(lab, student)
    out = []
    for d in dirs:
        try:
            conf = read_ssh_config(d / "ssh_config")
        except OSError:
            continue
        if "ProxyCommand" in conf and "HostName" in conf:
            out.append(f"{conf['HostName']}:{conf.get('Port', '22')}")
    return out


def stop_proxies(addresses: list[str]) -> list[int]:
    """Stop the ProxyCommand ssh processes (``-W host:port``) still open to VMs that are gone:
    a connection Ansible kept open to a VM destroyed under it never closes by itself."""
    stopped = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            argv = (p / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and os.path.basename(argv[0]) == b"ssh" and any(
                a == b"-W" and i + 1 < len(argv) and argv[i + 1].decode(errors="replace") in addresses
                for i, a in enumerate(argv)):
            try:
                os.kill(int(p.name), signal.SIGTERM)
                stopped.append(int(p.name))
            except (ProcessLookupError, PermissionError):
                pass
    return stopped


_FACTS_SCRIPT = r"""
r=$(uname -r)
echo "kernel_release=$r"
if [ -e "/boot/vmlinuz-$r" ]; then echo kernel_in_boot=true; else echo kernel_in_boot=false; fi
echo "boot_id=$(cat /proc/sys/kernel/random/boot_id)"
echo "pid1=$(cat /proc/1/comm)"
echo "virt=$(systemd-detect-virt 2>/dev/null || echo none)"
if [ -r /etc/os-release ]; then . /etc/os-release; echo "os_id=${ID:-}"; echo "os_version_id=${VERSION_ID:-}"; fi
"""


def parse_facts(text: str) -> dict:
    """``key=value`` lines of the facts script -> dict (kernel_in_boot as a bool)."""
    facts: dict = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            facts[key.strip()] = value.strip()
    if "kernel_in_boot" in facts:
        facts["kernel_in_boot"] = facts["kernel_in_boot"] == "true"
    return facts


def vm_facts(ssh_config: Path, host: str, timeout: float = 60) -> dict:
    """Facts of a VM, read over SSH with the OpenSSH config the lab_vm role wrote.

    Keys: kernel_release, kernel_in_boot (bool: /boot/vmlinuz-<release> exists), boot_id,
    pid1, virt (systemd-detect-virt), os_id, os_version_id. Raises EngineError.
    """
    cmd = ["ssh", "-F", str(ssh_config), "-o", "BatchMode=yes", "-o", "ConnectTimeout=15", host,
           "sh -s"]
    try:
        p = subprocess.run(cmd, input=_FACTS_SCRIPT, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise EngineError(f"ssh to {host} timed out after {timeout:.0f}s",
                          f"is the VM running? virsh -c {uri()} list --all") from e
    if p.returncode != 0:
        raise EngineError(f"ssh to {host} failed (rc={p.returncode}): {p.stderr.strip()}",
                          f"check {ssh_config} and that the VM runs: virsh -c {uri()} list --all")
    return parse_facts(p.stdout)

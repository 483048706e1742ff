"""Facts that need the engines themselves: K10 (Windows image), K11 (engine in the VM), K12 (chroot)."""
from __future__ import annotations

import hashlib
import io
import json
import os
import shlex
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import cast

from labkit.engines import docker as engine
from labkit.engines import shared_images
from labkit.observe.checks import _fail
from labkit.observe.facts import HostFacts
from labkit.paths import state_dir

WINDOWS_TAG = "labkit/k10-windows:test"


def windows_image_tar() -> bytes:
    """A `docker save` archive of a tiny image whose platform is windows/amd64, made here."""
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as t:
        data = b"labkit K10: a file in a Windows image\r\n"
        ti = tarfile.TarInfo("Files/Windows/labkit.txt")
        ti.size = len(data)
        t.addfile(ti, io.BytesIO(data))
    lb = layer.getvalue()
    config = json.dumps({
        "architecture": "amd64", "os": "windows", "os.version": "10.0.20348.1",
        "config": {"Cmd": ["cmd.exe", "/c", "ver"]},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(lb).hexdigest()]},
        "history": [{"created_by": "labkit fact K10"}],
    }).encode()
    cid = hashlib.sha256(config).hexdigest()
    manifest = json.dumps([{"Config": f"{cid}.json", "RepoTags": [WINDOWS_TAG], "Layers": ["layer/layer.tar"]}])
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as t:
        for name, data in ((f"{cid}.json", config), ("layer/layer.tar", lb), ("manifest.json", manifest.encode())):
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            t.addfile(ti, io.BytesIO(data))
    return out.getvalue()


def k10() -> str:
    """Load a windows/amd64 image into the Linux engine: the engine must refuse it."""
    import docker

    c = engine.client()
    info = c.info()
    try:
        c.images.load(windows_image_tar())
    except (docker.errors.APIError, docker.errors.ImageLoadError) as e:
        text = (getattr(e, "explanation", None) or str(e)).strip()
        return f"engine ({info.get('OSType')}/{info.get('Architecture')}, {info.get('KernelVersion')}) refused: {text}"
    try:
        c.images.remove(WINDOWS_TAG, force=True)
    except docker.errors.DockerException:
        pass
    _fail("K10", f"the engine on {info.get('OSType')} kernel {info.get('KernelVersion')} accepted a windows/amd64 image")
    return ""


K11_IMAGE = "labkit/busybox:1.35"  # what K11 runs inside the VM, carried in from the lab server


def k11(vm: HostFacts, ssh_config: Path | None, image: str = K11_IMAGE) -> str:
    """Start a container inside the VM (its own engine; the image carried in from the server)."""
    import testinfra

    host = testinfra.get_host(f"ssh://{vm.host}", ssh_config=str(ssh_config), sudo=True)
    if host.run("command -v docker").rc != 0:
        _fail("K11", f"{vm.host} has no container engine (docker) inside; the box installs docker.io")
    if host.run(f"docker image inspect {shlex.quote(image)}").rc != 0:
        saved = _image_tar(image)
        ssh = ["ssh", "-F", str(ssh_config), vm.host, "sudo", "docker", "load"]
        p = subprocess.run(ssh, input=saved, capture_output=True, timeout=300)
        if p.returncode != 0:
            _fail("K11", f"cannot carry {image} into {vm.host}: {p.stderr.decode(errors='replace').strip()}")
    out = host.run(f"docker run --rm --network none {shlex.quote(image)} "
                   "sh -c 'uname -r; cat /proc/sys/kernel/random/boot_id'")
    if out.rc != 0:
        _fail("K11", f"container in {vm.host} did not run: {out.stderr.strip()}")
    kernel, boot_id = (out.stdout.split() + ["", ""])[:2]
    if (kernel, boot_id) != (vm.kernel_release, vm.boot_id):
        _fail("K11", f"container in {vm.host} reports kernel {kernel} boot_id {boot_id}, "
                     f"VM has {vm.kernel_release} {vm.boot_id}")
    return f"container in {vm.host}: kernel {kernel}, boot_id {boot_id[:8]}... = the VM's"


def _image_tar(image: str) -> bytes:
    """The image as a `docker save` tar: from this machine's Docker, or, for an ordinary account
    that may not use it (a classroom machine), from the shared read-only copy the instructor's
    `labkit prepare --classroom` wrote for a lab with a VM."""
    if engine.usable_here():
        return subprocess.run(["docker", "save", image], capture_output=True, check=True).stdout
    tar = shared_images.SHARED_DIR / f"{shared_images.stem(image)}.tar"
    if not tar.is_file():
        _fail("K11", f"{image} is not in this machine's shared images ({tar}) and this account may not use "
                     "Docker: the instructor's `labkit prepare --classroom -f LAB` writes it for a lab with a VM")
    return tar.read_bytes()


def chroot_dir(image: str = "labkit/debian:11") -> Path:
    """A distro root file system on the server, exported once from a local image."""
    import docker

    img = engine.client().images.get(image)
    root = state_dir() / "chroots" / (img.id or image).split(":")[-1][:16]
    if (root / "etc" / "os-release").exists():
        return root
    root.mkdir(parents=True, exist_ok=True)
    c = engine.client().containers.create(image, command=["true"], labels={"labkit.role": "k12-export"})
    try:
        stream = b"".join(cast(Iterator[bytes], c.export()))  # the SDK's stubs say str: it streams bytes
    finally:
        try:
            c.remove(force=True)
        except docker.errors.DockerException:
            pass
    with tarfile.open(fileobj=io.BytesIO(stream)) as t:
        if hasattr(tarfile, "tar_filter"):  # Python 3.11.4+ (and 3.12+)
            t.extractall(root, filter="tar")
        else:  # Debian 12's Python 3.11.2 has no extraction filters: the same rule by hand
            t.extractall(root, members=safe_members(t, root))
    return root


def safe_members(t: tarfile.TarFile, root: Path) -> list[tarfile.TarInfo]:
    """The members of ``t`` that stay inside ``root`` (what ``filter="tar"`` allows): leading
    slashes stripped, no path escaping through ``..``, no device files; setuid bits cleared."""
    base = os.path.realpath(root)
    out = []
    for m in t.getmembers():
        m.name = m.name.lstrip("/")
        if m.isdev():
            continue
        dest = os.path.realpath(os.path.join(base, m.name))
        if dest != base and not dest.startswith(base + os.sep):
            continue
        if m.islnk() and not os.path.realpath(os.path.join(base, m.linkname.lstrip("/"))).startswith(base + os.sep):
            continue
        m.mode &= 0o777 if not m.isdir() else 0o1777
        out.append(m)
    return out


def k12(server: HostFacts, image: str = "labkit/debian:11") -> str:
    """chroot into a distro's files: its os-release, the server's kernel, no new pid/net namespace."""
    root = chroot_dir(image)
    run = lambda *a: subprocess.run(["chroot", str(root), *a], capture_output=True, text=True, timeout=30)  # noqa: E731
    osr = run("/bin/sh", "-c", ". /etc/os-release; echo $ID $VERSION_ID")
    uname = run("/bin/uname", "-r")
    if osr.returncode or uname.returncode:
        _fail("K12", f"chroot into {root} failed: {osr.stderr.strip() or uname.stderr.strip()}")
    p = subprocess.Popen(["chroot", str(root), "/bin/sleep", "30"])
    try:
        ns = {n: Path(f"/proc/{p.pid}/ns/{n}").readlink().name for n in ("pid", "net")}
    finally:
        p.kill()
        p.wait()
    mine = {n: Path(f"/proc/self/ns/{n}").readlink().name for n in ("pid", "net")}
    if uname.stdout.strip() != server.kernel_release:
        _fail("K12", f"chroot reports kernel {uname.stdout.strip()} != server {server.kernel_release}")
    if ns != mine:
        _fail("K12", f"the chroot process got new namespaces {ns} (server {mine})")
    if osr.stdout.split()[0] == "" or osr.stdout.strip() == f"{server.os_id} {server.os_version}":
        _fail("K12", f"chroot os-release '{osr.stdout.strip()}' is not the distro's own")
    return (f"chroot {root.name}: os-release {osr.stdout.strip()}, kernel {uname.stdout.strip()} = server, "
            f"pid/net namespaces = server's")

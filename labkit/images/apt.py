"""The offline bundle's Debian packages: the lab servers' Debian releases and architectures
(``Target``), and for each a flat apt repository (``Packages``, ``Packages.gz``, ``Release``,
``pool/*.deb``) with the packages they need and their whole dependency closure, resolved and
downloaded from the Debian mirror with a private apt configuration, written as one tar
(``labkit.images.bundle`` says what a bundle is and why the repository is unsigned).
"""
from __future__ import annotations

import gzip
import hashlib
import io
import os
import re
import subprocess
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labkit.errors import BundleError, SpecError
from labkit.images.files import locked, sha256, size
from labkit.log import Log, quiet
from labkit.paths import state_dir
from labkit.servers.base import from_inventory

KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
_ARCH_RE = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_RELEASE_RE = re.compile(r"^[a-z][a-z0-9-]*$")


@dataclass(frozen=True)
class Target:
    """A Debian release and architecture the bundle carries packages for."""

    release: str
    arch: str

    def __str__(self) -> str:
        return f"{self.release}/{self.arch}"

    @property
    def slug(self) -> str:
        return f"{self.release}-{self.arch}"


def this_target() -> Target:
    """This machine's Debian release and architecture."""
    rel = _os_release().get("VERSION_CODENAME", "")
    try:
        arch = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        arch = ""
    if not rel or not arch:
        raise SpecError("cannot tell this machine's Debian release and architecture (/etc/os-release, dpkg)",
                        "name the lab servers' ones: `labkit bundle create DIR --release bookworm --arch amd64`")
    return Target(rel, arch)


def _os_release() -> dict[str, str]:
    out: dict[str, str] = {}
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            k, sep, v = line.partition("=")
            if sep:
                out[k.strip()] = v.strip().strip('"')
    except OSError:
        pass
    return out


def targets_from_options(releases: list[str], arches: list[str]) -> list[Target]:
    """``--release``/``--arch`` (each repeatable, every pair made); the missing half is this machine's."""
    for r in releases:
        if not _RELEASE_RE.fullmatch(r):
            raise SpecError(f"--release {r!r}: not a Debian release codename", "e.g. --release bookworm")
    for a in arches:
        if not _ARCH_RE.fullmatch(a):
            raise SpecError(f"--arch {a!r}: not a Debian architecture", "e.g. --arch amd64")
    if releases and arches:
        rels, archs = list(releases), list(arches)
    else:
        here = this_target()
        rels = list(releases) or [here.release]
        archs = list(arches) or [here.arch]
    return [Target(r, a) for r in dict.fromkeys(rels) for a in dict.fromkeys(archs)]


def targets_from_inventory(inventory: str | Path, log: Log = quiet) -> dict[str, Target]:
    """Each lab server's Debian release and architecture: the inventory's ``labkit_release`` /
    ``labkit_arch`` host variables when set, else asked over SSH (this machine's for a local one)."""
    out: dict[str, Target] = {}
    for s in from_inventory(inventory):
        hv = s.hostvars
        if hv.get("labkit_release") and hv.get("labkit_arch"):
            out[s.name] = _checked(s.name, str(hv["labkit_release"]), str(hv["labkit_arch"]),
                                   f"its labkit_release/labkit_arch in {inventory}")
            continue
        if s.local:
            out[s.name] = this_target()
            continue
        script = '. /etc/os-release && echo "$ID $VERSION_CODENAME" && dpkg --print-architecture'
        try:
            p = s.run(["sh", "-c", script], timeout=60)
            ok = p.returncode == 0
            why = (p.stderr.strip().splitlines() or [f"exit {p.returncode}"])[-1] if not ok else ""
        except subprocess.TimeoutExpired:
            ok, why = False, "no answer over SSH within 60 s"
        if not ok:
            raise SpecError(f"lab server {s.name}: cannot ask its Debian release and architecture ({why})",
                            f"make it reachable, or set labkit_release and labkit_arch for {s.name} in "
                            f"{inventory}, or pass --release/--arch")
        lines = p.stdout.split()
        if len(lines) != 3 or lines[0] != "debian":
            raise SpecError(f"lab server {s.name} runs {' '.join(lines[:2]) or 'an unknown system'}: bundles carry "
                            "Debian packages only", "use Debian lab servers, or make the bundle with --no-debs "
                            "and let the servers install from their own mirror")
        out[s.name] = _checked(s.name, lines[1], lines[2], "its answer over SSH")
        log(f"lab server {s.name}: Debian {out[s.name]}")
    return out


def _checked(server: str, release: str, arch: str, source: str) -> Target:
    """A server's release and architecture, which become apt source lines and paths here: checked."""
    if not _RELEASE_RE.fullmatch(release) or not _ARCH_RE.fullmatch(arch):
        raise SpecError(f"lab server {server}: {release!r}/{arch!r} ({source}) is not a Debian release and "
                        "architecture", f"set labkit_release and labkit_arch for {server} (e.g. bookworm, amd64), "
                        "or pass --release/--arch")
    return Target(release, arch)


# --------------------------------------------------------------------------- apt repository

def _mirrors() -> tuple[str, str | None]:
    """The Debian mirror (and security mirror) this machine uses, from its apt sources."""
    uris: list[str] = []
    src = Path("/etc/apt")
    files = [src / "sources.list"] + sorted((src / "sources.list.d").glob("*.list")) + \
        sorted((src / "sources.list.d").glob("*.sources"))
    for f in files:
        try:
            text = f.read_text()
        except OSError:
            continue
        for line in text.splitlines():
            line = line.split("#", 1)[0].strip()
            if line.startswith("URIs:"):
                uris += line.split()[1:]
            elif line.startswith("deb "):
                uris += [w for w in line.split()[1:] if "://" in w][:1]
    main = next((u for u in uris if u.rstrip("/").endswith("/debian")), "http://deb.debian.org/debian")
    sec = next((u for u in uris if u.rstrip("/").endswith("/debian-security")), None)
    return main.rstrip("/"), (sec.rstrip("/") if sec else None)


@dataclass
class AptRoot:
    """A private apt configuration for one target: its own sources, lists, cache and an
    empty dpkg status, so the closure includes what this machine already has installed."""

    target: Target
    mirror: str
    security: str | None
    root: Path = field(init=False)

    def __post_init__(self) -> None:
        self.root = state_dir() / "cache" / "apt" / self.target.slug
        for d in ("etc/sources.list.d", "etc/preferences.d", "etc/apt.conf.d", "lists/partial",
                  "cache/archives/partial", "dpkg"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        (self.root / "dpkg" / "status").write_text("")
        r = self.target.release
        signed = f"[signed-by={KEYRING}]"
        lines = [f"deb {signed} {self.mirror} {r} main", f"deb {signed} {self.mirror} {r}-updates main"]
        if self.security:
            lines.append(f"deb {signed} {self.security} {r}-security main")
        (self.root / "etc" / "sources.list").write_text("\n".join(lines) + "\n")

    def options(self) -> list[str]:
        r = self.root
        opts = {
            "Dir::Etc::SourceList": r / "etc/sources.list", "Dir::Etc::SourceParts": r / "etc/sources.list.d",
            "Dir::Etc::Preferences": r / "etc/preferences", "Dir::Etc::PreferencesParts": r / "etc/preferences.d",
            "Dir::Etc::Parts": r / "etc/apt.conf.d", "Dir::State": r, "Dir::State::Lists": r / "lists",
            "Dir::State::status": r / "dpkg/status", "Dir::Cache": r / "cache",
            "APT::Architecture": self.target.arch, "APT::Architectures::": self.target.arch,
            "APT::Install-Recommends": "0", "APT::Install-Suggests": "0", "Acquire::Languages": "none",
            "APT::Sandbox::User": "root" if os.geteuid() == 0 else "",
            "Debug::NoLocking": "1",  # our own lock (below) guards this private root
        }
        out = []
        for k, v in opts.items():
            if v != "":
                out += ["-o", f"{k}={v}"]
        return out

    def run(self, tool: str, *args: str, timeout: int = 900) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive", LC_ALL="C")
        env.pop("APT_CONFIG", None)
        return subprocess.run([tool, *self.options(), *args], capture_output=True, text=True, timeout=timeout,
                              env=env)


_INST = re.compile(r"^Inst (\S+) (?:\[\S+\] )?\((\S+) .*\[([^\]]+)\]\)")


def parse_simulation(text: str) -> list[tuple[str, str, str]]:
    """``apt-get -s install`` output -> [(package, version, arch)] to install."""
    return [(m[1], m[2], m[3]) for m in map(_INST.match, text.splitlines()) if m]


def _apt_error(p: subprocess.CompletedProcess[str]) -> str:
    lines = [ln for ln in (p.stderr + p.stdout).splitlines() if ln.startswith(("E:", "Err:"))]
    return "; ".join(lines[-3:]) or (p.stderr.strip().splitlines() or [f"exit {p.returncode}"])[-1]


def packages_index(records: str, files: dict[str, str]) -> tuple[str, dict[str, str]]:
    """apt's records (``apt-cache show``) of the closure, each ``Filename`` pointed at the
    repository's ``pool/``: the flat repository's ``Packages``, and each file's SHA-256 as the
    mirror gave it. ``files``: package=version -> file name in ``pool/``."""
    out, sha = [], {}
    left = dict(files)
    for rec in records.strip().split("\n\n"):
        fields = dict(re.findall(r"^([\w-]+): (.*)$", rec, re.M))
        key = f"{fields.get('Package')}={fields.get('Version')}"
        if key not in left:
            continue  # another record of a version already indexed
        name = left.pop(key)
        out.append(re.sub(r"^Filename: .*$", f"Filename: pool/{name}", rec.strip(), flags=re.M) + "\n")
        sha[key] = fields.get("SHA256", "")
    if left:
        raise BundleError(f"apt has no record of {', '.join(sorted(left)[:5])}", "try again")
    return "\n".join(out), sha


def release_file(files: dict[str, bytes], target: Target) -> str:
    """The repository's ``Release``: apt checks ``Packages`` against these hashes."""
    date = time.strftime("%a, %d %b %Y %H:%M:%S UTC", time.gmtime())
    lines = ["Origin: labkit", "Label: labkit offline bundle", f"Suite: {target.release}",
             f"Codename: {target.release}", f"Architectures: {target.arch} all", f"Date: {date}", "SHA256:"]
    lines += [f" {hashlib.sha256(data).hexdigest()} {len(data):>10} {name}" for name, data in sorted(files.items())]
    return "\n".join(lines) + "\n"


def build_apt_repo(target: Target, packages: list[str], out: Path, mirror: str | None = None,
                   log: Log = quiet) -> dict[str, Any]:
    """Resolve ``packages`` with every dependency for ``target`` from the Debian mirror (its
    downloads kept in labkit's cache), and write the flat repository as one tar at ``out``."""
    if not Path(KEYRING).is_file():
        raise BundleError(f"{KEYRING} is missing: the Debian mirror's signatures cannot be checked",
                          "apt-get install debian-archive-keyring")
    main, sec = _mirrors()
    if mirror:
        main, sec = mirror.rstrip("/"), None
    apt = AptRoot(target, main, sec)
    lock = locked(apt.root / ".lock")
    try:
        log(f"Debian packages for {target}: resolving {', '.join(packages)} from {main}")
        p = apt.run("apt-get", "update")
        if p.returncode != 0 or "Err:" in p.stdout:
            raise BundleError(f"cannot read the package lists of Debian {target} from {main}: {_apt_error(p)}",
                              "check the release and architecture, and that the mirror answers (or pass "
                              "--mirror URL of a reachable Debian mirror)")
        p = apt.run("apt-get", "-s", "install", *packages)
        if p.returncode != 0:
            raise BundleError(f"Debian {target} cannot provide {', '.join(packages)}: {_apt_error(p)}",
                              "check the release and architecture (`--release`, `--arch`) and the lab_server "
                              "role's package lists")
        closure = parse_simulation(p.stdout)
        p = apt.run("apt-get", "-y", "--download-only", "install", *packages)
        if p.returncode != 0:
            raise BundleError(f"downloading the Debian packages for {target} failed: {_apt_error(p)}",
                              "check that the mirror answers and there is disk space, then try again")
        archives = apt.root / "cache" / "archives"
        files, local = {}, {}
        for name, version, arch in closure:
            deb = archives / f"{name}_{version.replace(':', '%3a')}_{arch}.deb"
            if not deb.is_file():
                raise BundleError(f"apt reported {name} {version} downloaded but {deb} is missing",
                                  f"remove {archives} and try again")
            local[f"{name}={version}"] = deb
            files[f"{name}={version}"] = deb.name.replace("%3a", "_")
        p = apt.run("apt-cache", "show", *local)
        if p.returncode != 0:
            raise BundleError(f"apt-cache show failed for Debian {target}: {_apt_error(p)}")
        index, want = packages_index(p.stdout, files)
        # the cached copies must be what the mirror's index says (a damaged cache is never carried on)
        for key, deb in local.items():
            if want[key] != sha256(deb):
                deb.unlink(missing_ok=True)
                raise BundleError(f"{deb}: does not match the mirror's SHA-256 (damaged download cache)",
                                  "it was removed: run the same `labkit bundle create` again")
        packages_bytes = index.encode()
        packages_gz = gzip.compress(packages_bytes, mtime=0)
        release = release_file({"Packages": packages_bytes, "Packages.gz": packages_gz}, target).encode()
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tar.part")
        with tarfile.open(tmp, "w") as tar:
            for name, data in (("Packages", packages_bytes), ("Packages.gz", packages_gz), ("Release", release)):
                info = tarfile.TarInfo(name)
                info.size, info.mtime, info.mode = len(data), int(time.time()), 0o644
                tar.addfile(info, io.BytesIO(data))
            for key, deb in local.items():
                tar.add(deb, arcname=f"pool/{files[key]}")
        tmp.replace(out)
    finally:
        lock.close()
    return {"release": target.release, "arch": target.arch, "packages": list(packages),
            "closure": sorted({n for n, _, _ in closure}), "debs": len(closure),
            "debs_bytes": size(local.values())}


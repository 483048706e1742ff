"""Offline bundles: everything a classroom without internet needs, built once on a connected
machine and carried to the lab servers (and other instructor machines) as files.

A bundle is a folder:

- ``images/<distro>.tar`` (``docker save``) and ``box/<box>.box``: the lab's hosts;
- ``apt/<release>-<arch>.tar``: a flat apt repository (``Packages``, ``Packages.gz``,
  ``Release``, ``pool/*.deb``) with the Debian packages every lab server needs (role
  ``lab_server``'s ``lab_server_packages``, each engine's that ``labkit prepare --podman``
  or ``--lxc`` installs, and ``lab_server_vm_packages`` when the bundle carries the box; and
  ``python3-venv`` for an instructor machine to install labkit's wheelhouse: see
  ``server_packages``) *with their whole dependency closure*, for each release and architecture
  of the servers. It is one file so that it is copied to a server in one transfer;
  ``labkit prepare`` unpacks it there and installs from it alone, never from a mirror;
- ``wheels/``: a wheelhouse, labkit's own wheel and the wheels of exactly the dependency
  versions it runs with here (``wheels/requirements.txt`` pins them), for one CPython
  version and architecture, so that ``pip install --no-index --find-links DIR/wheels labkit``
  installs it on a machine without PyPI;
- ``manifest.json`` (what each file is) and ``SHA256SUMS`` (every file).

Trust: the apt repository is unsigned and used with ``[trusted=yes]``. Its trust anchor is
the bundle's ``SHA256SUMS``, which labkit checks on the instructor machine before it touches a
server, and against which every copy is checked on the server after the transfer; the
repository's ``Packages`` index then pins every ``.deb`` by SHA-256, which apt checks. A key
carried inside the same bundle would add nothing: whoever can change the bundle can change
the key. The packages themselves come from the Debian mirror, whose signatures apt checks
when ``bundle create`` downloads them (``debian-archive-keyring``).

``load`` refuses a bundle whose checksums do not match, naming the file, and skips what is
already present with the same recipe. The ``lab_server`` role does the same on remote servers.
"""
from __future__ import annotations

import fcntl
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from labkit.engines import docker as engine
from labkit.errors import BoxError, BundleError, ImageError, SpecError
from labkit.images import build as images
from labkit.lab import catalog
from labkit.log import Log, quiet
from labkit.paths import _PKG, roles_dir, state_dir

MANIFEST = "manifest.json"
SUMS = "SHA256SUMS"
FORMAT = 2
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
# The CPython and glibc of each Debian release (the wheelhouse's default target).
DEBIAN_PYTHON = {"bookworm": "3.11", "trixie": "3.13"}
DEBIAN_GLIBC = {"bookworm": (2, 36), "trixie": (2, 41)}
WHEEL_ARCH = {"amd64": "x86_64", "arm64": "aarch64"}
# Besides the servers' packages: what a Debian machine needs to install labkit from the
# wheelhouse (`python3 -m venv`), for an instructor machine with no mirror.
INSTRUCTOR_PACKAGES = ["python3-venv"]
_ARCH_RE = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_RELEASE_RE = re.compile(r"^[a-z][a-z0-9-]*$")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _mib(n: int) -> str:
    return f"{n / 2**20:.0f} MiB" if n >= 2**20 else f"{n / 1024:.0f} KiB"


def _size(paths) -> int:
    return sum(p.stat().st_size for p in paths)


# --------------------------------------------------------------------------- what servers need

_LIST_KEY = re.compile(r"^lab_server_(?:([a-z0-9]+)_)?packages$")


def role_packages() -> dict[str, list[str]]:
    """The lab_server role's Debian package lists, read from its defaults (the one list of
    them), by what needs them: ``server`` (every lab server's, ``lab_server_packages``),
    ``vm`` (the VM stack, ``lab_server_vm_packages``) and each engine that ``labkit prepare
    --ENGINE`` sets up besides Docker (``lab_server_ENGINE_packages``: ``podman``, ``lxc``)."""
    import yaml

    path = roles_dir() / "lab_server" / "defaults" / "main.yml"
    try:
        d = yaml.safe_load(path.read_text()) or {}
        out = {(m.group(1) or "server"): list(v) for k, v in d.items() if (m := _LIST_KEY.match(k))}
        if "server" not in out or "vm" not in out:
            raise KeyError("lab_server_packages" if "server" not in out else "lab_server_vm_packages")
        return out
    except (OSError, KeyError, TypeError, AttributeError, yaml.YAMLError) as e:
        raise BundleError(f"{path}: cannot read the lab servers' package lists ({e})",
                          "is labkit installed completely?") from None


def server_packages(lists: dict[str, list[str]], box: bool) -> list[str]:
    """What a bundle's apt repository is made of (each package once, in this order): every
    server's packages, every engine's (``prepare --podman``, ``--lxc``), the VM stack's when the
    bundle carries a box (the lab has VMs), and what an instructor machine needs.

    The engines' come always, whatever engines the bundled lab uses: `prepare --podman` (or
    ``--lxc``) is a choice made on the servers, not in the lab file, and a classroom may move
    a lab to another engine without a new bundle. They are cheap: on bookworm/amd64 they make
    a containers-only bundle's .debs 158 instead of 104, 134 MiB instead of 96 (Podman with
    its rootless pieces 31 MiB, LXC 9 MiB), and with the VM stack 341 instead of 311, 201 MiB
    instead of 170; `prepare` copies to a server only what that server lacks of what it
    installs. (The VM stack, 74 MiB more, stays tied to the box: without a box no server runs
    a VM.)"""
    groups = ["server"] + [k for k in lists if k not in ("server", "vm")] + (["vm"] if box else [])
    want = [p for g in groups for p in lists[g]] + INSTRUCTOR_PACKAGES
    return list(dict.fromkeys(want))


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
    out = {}
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
        if not _RELEASE_RE.match(r):
            raise SpecError(f"--release {r!r}: not a Debian release codename", "e.g. --release bookworm")
    for a in arches:
        if not _ARCH_RE.match(a):
            raise SpecError(f"--arch {a!r}: not a Debian architecture", "e.g. --arch amd64")
    here = None if (releases and arches) else this_target()
    rels = list(releases) or [here.release]
    archs = list(arches) or [here.arch]
    return [Target(r, a) for r in dict.fromkeys(rels) for a in dict.fromkeys(archs)]


def targets_from_inventory(inventory: str | Path, log: Log = quiet) -> dict[str, Target]:
    """Each lab server's Debian release and architecture: the inventory's ``labkit_release`` /
    ``labkit_arch`` host variables when set, else asked over SSH (this machine's for a local one)."""
    from labkit.servers.base import from_inventory

    out: dict[str, Target] = {}
    for s in from_inventory(inventory):
        hv = s.hostvars
        if hv.get("labkit_release") and hv.get("labkit_arch"):
            out[s.name] = Target(str(hv["labkit_release"]), str(hv["labkit_arch"]))
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
        out[s.name] = Target(lines[1], lines[2])
        log(f"lab server {s.name}: Debian {out[s.name]}")
    return out


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

    def __post_init__(self):
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

    def run(self, tool: str, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive", LC_ALL="C")
        env.pop("APT_CONFIG", None)
        return subprocess.run([tool, *self.options(), *args], capture_output=True, text=True, timeout=timeout,
                              env=env)


_INST = re.compile(r"^Inst (\S+) (?:\[\S+\] )?\((\S+) .*\[([^\]]+)\]\)")


def parse_simulation(text: str) -> list[tuple[str, str, str]]:
    """``apt-get -s install`` output -> [(package, version, arch)] to install."""
    return [m.groups() for m in map(_INST.match, text.splitlines()) if m]


def _apt_error(p: subprocess.CompletedProcess) -> str:
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


def _locked(path: Path):
    f = path.open("w")
    fcntl.flock(f, fcntl.LOCK_EX)
    return f


def build_apt_repo(target: Target, packages: list[str], out: Path, mirror: str | None = None,
                   log: Log = quiet) -> dict:
    """Resolve ``packages`` with every dependency for ``target`` from the Debian mirror (its
    downloads kept in labkit's cache), and write the flat repository as one tar at ``out``."""
    if not Path(KEYRING).is_file():
        raise BundleError(f"{KEYRING} is missing: the Debian mirror's signatures cannot be checked",
                          "apt-get install debian-archive-keyring")
    main, sec = _mirrors()
    if mirror:
        main, sec = mirror.rstrip("/"), None
    apt = AptRoot(target, main, sec)
    lock = _locked(apt.root / ".lock")
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
            if want[key] != _sha256(deb):
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
            "debs_bytes": _size(local.values())}


# --------------------------------------------------------------------------- wheelhouse

def pinned_requirements(python: str | None = None, machine: str | None = None) -> list[str]:
    """labkit's runtime dependencies, with theirs, as ``name==version`` of the versions
    installed here (the ones labkit is tested and runs with), markers evaluated for ``python``
    (``X.Y``) and ``machine`` (``x86_64``)."""
    import importlib.metadata as md

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    env = {}
    if python:
        env.update(python_version=python, python_full_version=f"{python}.0")
    if machine:
        env["platform_machine"] = machine
    seen: dict[str, frozenset[str]] = {}
    todo = [("labkit", frozenset())]
    while todo:
        name, extras = todo.pop()
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            raise BundleError(f"{name}, a dependency of labkit, is not installed here",
                              "reinstall labkit (scripts/setup.sh) and try again") from None
        for text in dist.requires or []:
            req = Requirement(text)
            envs = [dict(env, extra=e) for e in extras] or [dict(env, extra="")]
            if req.marker and not any(req.marker.evaluate(e) for e in envs):
                continue
            key = canonicalize_name(req.name)
            new = seen.get(key, frozenset()) | frozenset(req.extras)
            if key not in seen or new != seen[key]:
                seen[key] = new
                todo.append((req.name, frozenset(req.extras)))
    return [f"{k}=={md.version(k)}" for k in sorted(seen)]


def _source_root() -> Path:
    root = _PKG.parent
    pyproject = root / "pyproject.toml"
    if not pyproject.is_file() or 'name = "labkit"' not in pyproject.read_text():
        raise BundleError(f"labkit's wheel is built from its source checkout, and this labkit ({_PKG}) is "
                          "not running from one", "run `labkit bundle create` from a clone (scripts/setup.sh), "
                          "or pass --no-wheels")
    return root


def _pip(*args: str, timeout: int = 1800) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
                          capture_output=True, text=True, timeout=timeout)


def _pip_error(p: subprocess.CompletedProcess) -> str:
    lines = [ln for ln in (p.stderr + p.stdout).splitlines() if ln.startswith("ERROR")]
    return "; ".join(ln[:300] for ln in lines[-2:]) or f"exit {p.returncode}"


def build_wheelhouse(out: Path, python: str, machine: str, glibc: tuple[int, int], log: Log = quiet) -> dict:
    """labkit's wheel and its pinned dependencies' wheels for CPython ``python`` on ``machine``
    into ``out`` (binary wheels only: nothing is built on the machine that installs them)."""
    from packaging.utils import canonicalize_name, parse_wheel_filename
    from packaging.version import Version

    pins = pinned_requirements(python, machine)
    tag = f"cp{python.replace('.', '')}"
    cache = state_dir() / "cache" / "wheels" / f"{tag}-{machine}"
    cache.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    lock = _locked(cache / ".lock")
    try:
        with tempfile.TemporaryDirectory(prefix="labkit-wheel-") as tmp:
            log("wheels: building labkit's own wheel")
            p = _pip("wheel", "--no-deps", "-q", "-w", tmp, str(_source_root()))
            built = list(Path(tmp).glob("labkit-*.whl"))
            if p.returncode != 0 or len(built) != 1:
                raise BundleError(f"building labkit's wheel failed: {_pip_error(p)}",
                                  "check that PyPI (or your index) answers: the build needs hatchling")
            shutil.copy2(built[0], out / built[0].name)
        (cache / "requirements.txt").write_text("\n".join(pins) + "\n")
        platforms = [f"manylinux_2_{m}_{machine}" for m in range(glibc[1], 16, -1)] + [f"manylinux2014_{machine}"]
        log(f"wheels: {len(pins)} pinned dependencies for CPython {python} {machine}")
        p = _pip("download", "--no-deps", "--only-binary=:all:", "--python-version", python,
                 "--implementation", "cp", "--abi", tag, "--abi", "abi3", "--abi", "none",
                 *[a for pl in platforms for a in ("--platform", pl)], "-d", str(cache),
                 "-r", str(cache / "requirements.txt"))
        if p.returncode != 0:
            raise BundleError(f"downloading labkit's dependencies as wheels for CPython {python} {machine} "
                              f"failed: {_pip_error(p)}",
                              "check that PyPI (or your index) answers and has wheels of these versions for "
                              "that Python (`--python X.Y` picks another)")
        by_pin: dict[tuple[str, Version], Path] = {}
        for whl in cache.glob("*.whl"):
            try:
                name, ver, _build, _tags = parse_wheel_filename(whl.name)
            except ValueError:
                continue
            by_pin[(canonicalize_name(name), ver)] = whl
        files = []
        for pin in pins:
            name, ver = pin.split("==")
            whl = by_pin.get((canonicalize_name(name), Version(ver)))
            if whl is None:
                raise BundleError(f"pip reported {pin} downloaded but no wheel of it is in {cache}",
                                  f"remove {cache} and try again")
            shutil.copy2(whl, out / whl.name)
            files.append(whl.name)
    finally:
        lock.close()
    labkit_whl = built[0].name
    version = labkit_whl.split("-")[1]
    (out / "requirements.txt").write_text("\n".join(pins + [f"labkit=={version}"]) + "\n")
    return {"dir": out.name, "python": python, "machine": machine, "labkit": labkit_whl,
            "requirements": f"{out.name}/requirements.txt", "files": sorted(files + [labkit_whl])}


def wheel_target(targets: list[Target], python: str | None) -> tuple[str, str, tuple[int, int]]:
    """CPython version, machine and glibc of the wheelhouse: ``python`` if given, else the
    first target release's (bookworm: 3.11), else this interpreter's."""
    first = targets[0] if targets else None
    if first and first.arch not in WHEEL_ARCH:
        raise SpecError(f"no wheels for architecture {first.arch}", f"one of {', '.join(WHEEL_ARCH)}")
    machine = WHEEL_ARCH[first.arch] if first else os.uname().machine
    glibc = DEBIAN_GLIBC.get(first.release) if first else None
    if glibc is None:
        lib = os.confstr("CS_GNU_LIBC_VERSION") or "glibc 2.17"
        glibc = tuple(int(x) for x in lib.split()[-1].split(".")[:2])  # type: ignore[assignment]
    py = python or (DEBIAN_PYTHON.get(first.release) if first else None) or \
        f"{sys.version_info.major}.{sys.version_info.minor}"
    if not re.match(r"^3\.\d+$", py):
        raise SpecError(f"--python {py!r}: give a CPython version as X.Y", "e.g. --python 3.11")
    if tuple(int(x) for x in py.split(".")) < (3, 11):
        raise SpecError(f"labkit needs Python >= 3.11; the wheelhouse target is {py}",
                        "pass --python 3.11 (or newer), or --no-wheels")
    return py, machine, glibc  # type: ignore[return-value]


# --------------------------------------------------------------------------- create / verify / load

def create(out: str | Path, distros: list[str], box: str | None = None, log: Log = quiet, *,
           apt_targets: list[Target] | None = None, wheels: bool = False, python: str | None = None,
           mirror: str | None = None) -> dict:
    """Write a bundle into ``out``: the local images of ``distros`` (and ``box``), the lab
    servers' Debian packages for each of ``apt_targets`` and, with ``wheels``, labkit's
    wheelhouse. Returns the manifest, with the size of each part."""
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    for f in (SUMS, MANIFEST):  # written last: until then DIR is no bundle (a failed create leaves none)
        (out / f).unlink(missing_ok=True)
    manifest: dict = {"format": FORMAT, "images": [], "box": None, "apt": [], "wheels": None}
    sizes: dict[str, int] = {}
    for ref in dict.fromkeys(distros):  # each once: one image serves each engine's containers of a distro
        d = catalog.get(ref)
        img = images._image(d.image)
        if img is None:
            raise ImageError(f"{d.image} ({d.ref}) is not on this machine", f"build it: `labkit images build {d.ref}`")
        path = out / "images" / f"{d.slug}.tar"
        log(f"{d.image}: saving to {path}")
        with path.open("wb") as f:
            for chunk in img.save(named=True):
                f.write(chunk)
        manifest["images"].append({"distro": d.ref, "image": d.image, "file": f"images/{path.name}",
                                   "recipe": (img.labels or {}).get("labkit.recipe", "")})
        sizes["images"] = sizes.get("images", 0) + path.stat().st_size
    if box:
        from labkit.vm import boxes

        built = boxes._box_dir(box) / (boxes._box_dir(box).name + ".box")
        if not built.is_file():
            raise BoxError(f"the box {box} has not been built here", "run `labkit box build` first")
        (out / "box").mkdir(exist_ok=True)
        target = out / "box" / built.name
        log(f"{box}: copying {built} to {target}")
        shutil.copyfile(built, target)
        manifest["box"] = {"name": box, "file": f"box/{built.name}", "recipe": boxes.recipe_hash()}
        sizes["box"] = target.stat().st_size
    shutil.rmtree(out / "apt", ignore_errors=True)  # labkit's own parts of DIR: written afresh
    shutil.rmtree(out / "wheels", ignore_errors=True)
    if apt_targets:
        want = server_packages(role_packages(), bool(box))
        for t in apt_targets:
            rel = f"apt/{t.slug}.tar"
            entry = build_apt_repo(t, want, out / rel, mirror, log)
            entry["file"] = rel
            manifest["apt"].append(entry)
            sizes[f"apt {t}"] = (out / rel).stat().st_size
            log(f"Debian packages for {t}: {entry['debs']} .debs ({_mib(sizes[f'apt {t}'])}) in {rel}")
    if wheels:
        py, machine, glibc = wheel_target(list(apt_targets or []), python)
        w = build_wheelhouse(out / "wheels", py, machine, glibc, log)
        manifest["wheels"] = w
        sizes["wheels"] = _size(out / "wheels" / f for f in w["files"])
        log(f"wheels: {len(w['files'])} for CPython {py} {machine} ({_mib(sizes['wheels'])}) in wheels/")
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2))
    files = bundle_files(manifest) + [MANIFEST]
    (out / SUMS).write_text("".join(f"{_sha256(out / f)}  {f}\n" for f in files))
    total = sum(sizes.values())
    parts = [f"{len(manifest['images'])} image(s)"] + (["1 box"] if box else []) + \
        [f"Debian packages for {e['release']}/{e['arch']} ({e['debs']})" for e in manifest["apt"]] + \
        ([f"{len(manifest['wheels']['files'])} wheels"] if manifest["wheels"] else [])
    log(f"bundle written: {out} ({', '.join(parts)}; {_mib(total)}: "
        + ", ".join(f"{k} {_mib(v)}" for k, v in sizes.items()) + ")")
    manifest["sizes"] = sizes
    return manifest


def bundle_files(manifest: dict) -> list[str]:
    """Every file the manifest names (what SHA256SUMS must list), relative to the bundle."""
    files = [e["file"] for e in manifest.get("images") or []]
    if manifest.get("box"):
        files.append(manifest["box"]["file"])
    files += [e["file"] for e in manifest.get("apt") or []]
    w = manifest.get("wheels")
    if w:
        files += [f"{w['dir']}/{f}" for f in w["files"]] + [w["requirements"]]
    return files


def verify(bundle: str | Path) -> dict:
    """Check every file against SHA256SUMS; return the manifest. LabkitError names a bad file."""
    b = Path(bundle)
    sums = b / SUMS
    if not sums.is_file():
        raise BundleError(f"{b}: not a labkit bundle (no {SUMS})", "make one with `labkit bundle create DIR`")
    listed = set()
    for n, line in enumerate(sums.read_text().splitlines(), 1):
        parts = line.split(None, 1)
        if len(parts) != 2 or not re.fullmatch(r"[0-9a-f]{64}", parts[0]):
            raise BundleError(f"{sums}:{n}: not a checksum line ({line[:80]!r})", "copy the whole bundle folder again")
        want, name = parts[0], parts[1].strip()
        f = b / name
        if not f.is_file():
            raise BundleError(f"{b}: {name} is listed in {SUMS} but missing", "copy the whole bundle folder again")
        if _sha256(f) != want:
            raise BundleError(f"{b}: {name} does not match its checksum (corrupt or changed copy)",
                              "copy the bundle again from the machine that made it")
        listed.add(name)
    if MANIFEST not in listed:
        raise BundleError(f"{b}: {MANIFEST} is not listed in {SUMS}", "copy the whole bundle folder again")
    try:
        manifest = json.loads((b / MANIFEST).read_text())
    except ValueError as e:
        raise BundleError(f"{b}: {MANIFEST} is not JSON ({e})", "copy the whole bundle folder again") from None
    unlisted = [f for f in bundle_files(manifest) if f not in listed]
    if unlisted:
        raise BundleError(f"{b}: {', '.join(unlisted[:3])} named in {MANIFEST} but not in {SUMS}",
                          "copy the whole bundle folder again, or make it again with `labkit bundle create`")
    return manifest


def load(bundle: str | Path, log: Log = quiet) -> list[str]:
    """Load a verified bundle on this server: images (unless present with the same recipe) and the box."""
    b = Path(bundle)
    manifest = verify(b)
    done = []
    for e in manifest["images"]:
        img = images._image(e["image"])
        if img is not None and (img.labels or {}).get("labkit.recipe") == e["recipe"]:
            log(f"{e['image']}: present with the same recipe, skipped")
            continue
        with (b / e["file"]).open("rb") as f:
            engine.client().images.load(f)  # streamed, not read into memory
        log(f"{e['image']}: loaded")
        done.append(e["image"])
    if manifest.get("box"):
        from labkit.vm import boxes

        if boxes.box_present(manifest["box"]["name"]):
            log(f"{manifest['box']['name']}: present, skipped")
        else:
            boxes._vagrant_add(manifest["box"]["name"], b / manifest["box"]["file"])
            log(f"{manifest['box']['name']}: added")
            done.append(manifest["box"]["name"])
    return done

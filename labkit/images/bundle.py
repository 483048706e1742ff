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

import json
import re
import shutil
from pathlib import Path
from typing import Any

import yaml

from labkit.engines import docker as engine
from labkit.errors import BoxError, BundleError, ImageError
from labkit.images import build as images
from labkit.images.apt import (
    KEYRING,
    AptRoot,
    Target,
    build_apt_repo,
    packages_index,
    parse_simulation,
    release_file,
    targets_from_inventory,
    targets_from_options,
    this_target,
)
from labkit.images.files import mib, sha256, size
from labkit.images.wheels import (
    DEBIAN_GLIBC,
    DEBIAN_PYTHON,
    WHEEL_ARCH,
    build_wheelhouse,
    pinned_requirements,
    wheel_target,
)
from labkit.lab import catalog
from labkit.log import Log, quiet
from labkit.paths import roles_dir
from labkit.vm import boxes

# the parts, in their own modules (apt, wheels), are this module's API too: `bundle.Target`...
__all__ = [
    "DEBIAN_GLIBC", "DEBIAN_PYTHON", "FORMAT", "INSTRUCTOR_PACKAGES", "KEYRING", "MANIFEST", "SUMS", "WHEEL_ARCH",
    "AptRoot", "Target", "build_apt_repo", "build_wheelhouse", "bundle_files", "create", "load", "packages_index",
    "parse_simulation", "pinned_requirements", "release_file", "role_packages", "server_packages",
    "targets_from_inventory", "targets_from_options", "this_target", "verify", "wheel_target",
]

MANIFEST = "manifest.json"
SUMS = "SHA256SUMS"
FORMAT = 2
# Besides the servers' packages: what a Debian machine needs to install labkit from the
# wheelhouse (`python3 -m venv`), for an instructor machine with no mirror.
INSTRUCTOR_PACKAGES = ["python3-venv"]


# --------------------------------------------------------------------------- what servers need

_LIST_KEY = re.compile(r"^lab_server_(?:([a-z0-9]+)_)?packages$")


def role_packages() -> dict[str, list[str]]:
    """The lab_server role's Debian package lists, read from its defaults (the one list of
    them), by what needs them: ``server`` (every lab server's, ``lab_server_packages``),
    ``vm`` (the VM stack, ``lab_server_vm_packages``) and each engine that ``labkit prepare
    --ENGINE`` sets up besides Docker (``lab_server_ENGINE_packages``: ``podman``, ``lxc``)."""
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


# --------------------------------------------------------------------------- create / verify / load

def create(out: str | Path, distros: list[str], box: str | None = None, log: Log = quiet, *,
           apt_targets: list[Target] | None = None, wheels: bool = False, python: str | None = None,
           mirror: str | None = None) -> dict[str, Any]:
    """Write a bundle into ``out``: the local images of ``distros`` (and ``box``), the lab
    servers' Debian packages for each of ``apt_targets`` and, with ``wheels``, labkit's
    wheelhouse. Returns the manifest, with the size of each part."""
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    for name in (SUMS, MANIFEST):  # written last: until then DIR is no bundle (a failed create leaves none)
        (out / name).unlink(missing_ok=True)
    manifest: dict[str, Any] = {"format": FORMAT, "images": [], "box": None, "apt": [], "wheels": None}
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
            log(f"Debian packages for {t}: {entry['debs']} .debs ({mib(sizes[f'apt {t}'])}) in {rel}")
    if wheels:
        py, machine, glibc = wheel_target(list(apt_targets or []), python)
        w = build_wheelhouse(out / "wheels", py, machine, glibc, log)
        manifest["wheels"] = w
        sizes["wheels"] = size(out / "wheels" / f for f in w["files"])
        log(f"wheels: {len(w['files'])} for CPython {py} {machine} ({mib(sizes['wheels'])}) in wheels/")
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2))
    files = bundle_files(manifest) + [MANIFEST]
    (out / SUMS).write_text("".join(f"{sha256(out / f)}  {f}\n" for f in files))
    total = sum(sizes.values())
    parts = [f"{len(manifest['images'])} image(s)"] + (["1 box"] if box else []) + \
        [f"Debian packages for {e['release']}/{e['arch']} ({e['debs']})" for e in manifest["apt"]] + \
        ([f"{len(manifest['wheels']['files'])} wheels"] if manifest["wheels"] else [])
    log(f"bundle written: {out} ({', '.join(parts)}; {mib(total)}: "
        + ", ".join(f"{k} {mib(v)}" for k, v in sizes.items()) + ")")
    manifest["sizes"] = sizes
    return manifest


def bundle_files(manifest: dict[str, Any]) -> list[str]:
    """Every file the manifest names (what SHA256SUMS must list), relative to the bundle."""
    files = [e["file"] for e in manifest.get("images") or []]
    if manifest.get("box"):
        files.append(manifest["box"]["file"])
    files += [e["file"] for e in manifest.get("apt") or []]
    w = manifest.get("wheels")
    if w:
        files += [f"{w['dir']}/{f}" for f in w["files"]] + [w["requirements"]]
    return files


def verify(bundle: str | Path) -> dict[str, Any]:
    """Check every file against SHA256SUMS; return the manifest. LabkitError names a bad file."""
    b = Path(bundle)
    sums = b / SUMS
    if not sums.is_file():
        raise BundleError(f"{b}: not a labkit bundle (no {SUMS})", "make one with `labkit bundle create DIR`")
    listed: set[str] = set()
    for n, line in enumerate(sums.read_text().splitlines(), 1):
        parts = line.split(None, 1)
        if len(parts) != 2 or not re.fullmatch(r"[0-9a-f]{64}", parts[0]):
            raise BundleError(f"{sums}:{n}: not a checksum line ({line[:80]!r})", "copy the whole bundle folder again")
        want, name = parts[0], parts[1].strip()
        f = b / name
        if not f.is_file():
            raise BundleError(f"{b}: {name} is listed in {SUMS} but missing", "copy the whole bundle folder again")
        if sha256(f) != want:
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
    done: list[str] = []
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
        if boxes.box_present(manifest["box"]["name"]):
            log(f"{manifest['box']['name']}: present, skipped")
        else:
            boxes._vagrant_add(manifest["box"]["name"], b / manifest["box"]["file"])
            log(f"{manifest['box']['name']}: added")
            done.append(manifest["box"]["name"])
    return done

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
- ``manifest.json`` (what each file is) and ``SHA256SUMS`` (every file, the manifest too).

Trust: a bundle is as trustworthy as the way its digest reached you. ``create`` ends by printing
the bundle's digest, the SHA-256 of its ``SHA256SUMS`` (``sha256sum DIR/SHA256SUMS`` prints it
again on the machine that made it); ``SHA256SUMS`` lists every file of the bundle, the manifest
included. ``labkit prepare --bundle DIR`` and ``labkit bundle load DIR`` require that digest
(``--insecure-skip-digest`` is the explicit, logged way not to) and check it before anything
of the bundle is read, let alone copied, loaded, installed or run; then every file against the
verified ``SHA256SUMS``, refusing a file it does not list (and any link or special file); then
every name the manifest carries (distros, images, the box, files, releases, packages, wheels)
against a strict pattern, before any reaches a command, a template or a path. What is used
afterwards is checked again as it is used: an image is loaded from the open file that was hashed,
the box added from a copy made as it was hashed, and on a server every copy is checked against
the verified sums (passed to the role, never read again from the bundle) before it is used.

The apt repository is unsigned and used with ``[trusted=yes]``, which is sound here: its tar is
pinned by the verified ``SHA256SUMS``, the part a server gets is cut from a private copy checked
against that sum (``roles/lab_server/files/apt_subset.py``) and checked again on the server, and
its ``Packages`` index pins every ``.deb`` by SHA-256, which apt checks (``[trusted=yes]`` only
skips the signature of ``Release``, whose hashes of the index apt still checks). A signing key
carried inside the bundle would add nothing the digest does not: whoever can change the bundle
can change the key. The packages themselves come from the Debian mirror, whose signatures apt
checks when ``bundle create`` downloads them (``debian-archive-keyring``).

``load`` skips what is already present with the same recipe. The ``lab_server`` role does the
same on remote servers.
"""
from __future__ import annotations

import hashlib
import json
import re
import shutil
import tempfile
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
from labkit.images.files import copy_hashed, mib, sha256, size
from labkit.images.trust import (
    _FILES,
    DIGEST_RE,
    FORMAT,
    MANIFEST,
    SUMS,
    Verified,
    authenticate,
    bundle_files,
    check,
    check_manifest,
    check_name,
    digest_of,
    opened,
    verify,
)
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
from labkit.paths import roles_dir, state_dir
from labkit.vm import boxes

# the parts, in their own modules (apt, wheels, trust), are this module's API too: `bundle.Target`...
__all__ = [
    "DEBIAN_GLIBC", "DEBIAN_PYTHON", "DIGEST_RE", "FORMAT", "INSTRUCTOR_PACKAGES", "KEYRING", "MANIFEST", "SUMS",
    "WHEEL_ARCH", "AptRoot", "Target", "Verified", "authenticate", "build_apt_repo", "build_wheelhouse",
    "bundle_files", "check", "check_manifest", "check_name", "create", "digest_of", "load", "packages_index",
    "parse_simulation", "pinned_requirements", "release_file", "role_packages", "server_packages",
    "targets_from_inventory", "targets_from_options", "this_target", "verify", "wheel_target",
]

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


# --------------------------------------------------------------------------- create

def create(out: str | Path, distros: list[str], box: str | None = None, log: Log = quiet, *,
           apt_targets: list[Target] | None = None, wheels: bool = False, python: str | None = None,
           mirror: str | None = None) -> dict[str, Any]:
    """Write a bundle into ``out``: the local images of ``distros`` (and ``box``), the lab
    servers' Debian packages for each of ``apt_targets`` and, with ``wheels``, labkit's
    wheelhouse. Returns the manifest, with the size of each part and the bundle's ``digest``
    (``sha256:...``), which ``prepare`` and ``load`` require."""
    out = Path(out)
    if box is not None:
        check_name("box name", box, "the lab's vm.box")
    _check_destination(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    for name in (SUMS, MANIFEST):  # written last: until then DIR is no bundle (a failed create leaves none)
        (out / name).unlink(missing_ok=True)
    manifest: dict[str, Any] = {"format": FORMAT, "images": [], "box": None, "apt": [], "wheels": None}
    sizes: dict[str, int] = {}
    for ref in dict.fromkeys(distros):  # each once: one image serves each engine's containers of a distro
        d = catalog.get(ref)
        check_name("image name", d.image, f"the image of {d.ref}")
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
    manifest = check_manifest(manifest, "the new manifest")  # never write what `verify` would refuse
    files = bundle_files(manifest)
    for part in ("images", "box"):  # files of an earlier bundle in DIR (other distros, another box)
        for old in sorted((out / part).glob("*")) if (out / part).is_dir() else []:
            if f"{part}/{old.name}" not in files:
                log(f"{part}/{old.name}: not part of this bundle, removed")
                old.unlink()
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2))
    sums = "".join(f"{sha256(out / f)}  {f}\n" for f in files + [MANIFEST]).encode()
    (out / SUMS).write_bytes(sums)
    total = sum(sizes.values())
    parts = [f"{len(manifest['images'])} image(s)"] + (["1 box"] if box else []) + \
        [f"Debian packages for {e['release']}/{e['arch']} ({e['debs']})" for e in manifest["apt"]] + \
        ([f"{len(manifest['wheels']['files'])} wheels"] if manifest["wheels"] else [])
    log(f"bundle written: {out} ({', '.join(parts)}; {mib(total)}: "
        + ", ".join(f"{k} {mib(v)}" for k, v in sizes.items()) + ")")
    digest = "sha256:" + hashlib.sha256(sums).hexdigest()
    log(f"bundle digest: {digest}")
    log("  `labkit prepare --bundle-digest` and `labkit bundle load --digest` require it: keep it apart from "
        "the bundle (a note, a message), it is what proves the bundle is this one")
    manifest["sizes"] = sizes
    manifest["digest"] = digest
    return manifest


def _check_destination(out: Path) -> None:
    """DIR holds nothing but an earlier bundle's parts: what `verify` refuses (a file SHA256SUMS
    does not list) is refused here, before anything is written."""
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise BundleError(f"{out}: not a folder", "give the path of a new or empty folder")
    if not out.exists():
        return
    stray = [p.name for p in out.iterdir() if p.name not in (SUMS, MANIFEST, *_FILES) or p.is_symlink()
             or (p.name in _FILES and not p.is_dir()) or (p.name in (SUMS, MANIFEST) and not p.is_file())]
    for part in ("images", "box"):
        d = out / part
        if d.is_dir() and not d.is_symlink():
            stray += [f"{part}/{p.name}" for p in d.iterdir()
                      if p.is_symlink() or not p.is_file() or not _FILES[part].fullmatch(f"{part}/{p.name}")]
    if stray:
        raise BundleError(f"{out} holds {', '.join(sorted(stray)[:3])}, which is no part of a bundle (a bundle "
                          "holds only the files its SHA256SUMS lists)", "give a new or empty folder, or remove them")


# --------------------------------------------------------------------------- load

def load(bundle: str | Path, log: Log = quiet, *, digest: str | None = None, insecure: bool = False) -> list[str]:
    """Load a bundle on this machine, its digest checked first (``authenticate``): images (unless
    present with the same recipe) and the box. Each is used from what was hashed as it is used."""
    v = authenticate(bundle, digest, insecure=insecure, flag="--digest", log=log)
    b, manifest = v.path, v.manifest
    done: list[str] = []
    for e in manifest["images"]:
        img = images._image(e["image"])
        if img is not None and (img.labels or {}).get("labkit.recipe") == e["recipe"]:
            log(f"{e['image']}: present with the same recipe, skipped")
            continue
        with opened(b, e["file"], v.sums) as f:
            engine.client().images.load(f)  # streamed from the file that was hashed, not read into memory
        log(f"{e['image']}: loaded")
        done.append(e["image"])
    if manifest.get("box"):
        name = manifest["box"]["name"]
        if boxes.box_present(name):
            log(f"{name}: present, skipped")
        else:
            cache = state_dir() / "cache"
            cache.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(prefix="labkit-box-", dir=cache) as tmp:  # 0700
                copy = Path(tmp) / "box.box"
                with opened(b, manifest["box"]["file"], v.sums, hash_it=False) as f:
                    got = copy_hashed(f, copy)
                if got != v.sums[manifest["box"]["file"]]:
                    raise BundleError(f"{b}: {manifest['box']['file']} changed after it was checked",
                                      "nothing of it was used; make sure nobody else writes to the bundle, and "
                                      "copy it again")
                boxes._vagrant_add(name, copy)
            log(f"{name}: added")
            done.append(name)
    return done



"""A bundle's trust: its digest, its SHA256SUMS and the names its manifest carries, checked
before anything of it is used (``labkit.images.bundle`` says what a bundle is and why this is
what makes it safe to use; this module is its checks)."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from labkit.errors import BundleError, SpecError, UsageError
from labkit.images.apt import Target
from labkit.images.files import hash_open, mib, open_regular
from labkit.lab.spec import BOX_RE
from labkit.log import Log, quiet

MANIFEST = "manifest.json"
SUMS = "SHA256SUMS"
FORMAT = 2


# --------------------------------------------------------------------------- names a bundle may carry

# Every string of a manifest is checked against one of these before it is used (fullmatch):
# none admits a space, a quote, `;`, `$`, a backquote, `{`, `%`, a newline or a leading `-`,
# and a file name is one component under its part's folder (no `..`, no absolute path).
_NAMES: dict[str, re.Pattern[str]] = {
    "box name": re.compile(BOX_RE),  # the lab file's vm.box pattern: one definition of a box name
    "image name": re.compile(r"(?:[a-z0-9][a-z0-9.-]{0,63}(?::[0-9]{1,5})?/)?[a-z0-9]+(?:[._-][a-z0-9]+)*"
                             r"(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"),
    "distro": re.compile(r"[a-z0-9][a-z0-9._-]{0,63}(?::[A-Za-z0-9][A-Za-z0-9._-]{0,63})?"),
    "recipe": re.compile(r"[A-Za-z0-9._:-]{0,128}"),
    "Debian package": re.compile(r"[a-z0-9][a-z0-9+.-]{0,127}"),
    "Debian release": re.compile(r"[a-z][a-z0-9-]{0,31}"),
    "Debian architecture": re.compile(r"[a-z0-9][a-z0-9-]{0,31}"),
    "Python version": re.compile(r"3\.[0-9]{1,2}"),
    "machine": re.compile(r"[a-z0-9_]{1,32}"),
    "wheel": re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,199}\.whl"),
}
_FILES: dict[str, re.Pattern[str]] = {
    "images": re.compile(r"images/[a-z0-9][a-z0-9._-]{0,127}\.tar"),
    "box": re.compile(r"box/[A-Za-z0-9][A-Za-z0-9._-]{0,127}\.box"),
    "apt": re.compile(r"apt/[a-z0-9][a-z0-9-]{0,63}\.tar"),
    "wheels": re.compile(r"wheels/(?:[A-Za-z0-9][A-Za-z0-9._+-]{0,199}\.whl|requirements\.txt)"),
}
DIGEST_RE = re.compile(r"sha256:([0-9a-f]{64})")
_SUMS_LINE = re.compile(r"([0-9a-f]{64}) [ *](\S+)")
_SUMS_MAX = 1 << 20  # bytes: a bundle's SHA256SUMS is a few KiB
_REFUSED = ("labkit never passes a name it could not hand safely to a shell, a template or a path: make "
            "the bundle again with `labkit bundle create`, and use only bundles whose digest you got from "
            "whoever made them")


def check_name(kind: str, value: Any, where: str) -> str:
    """``value`` if it is a string matching the pattern of ``kind`` (``_NAMES``); BundleError naming
    ``where`` otherwise (the value shown escaped: it may come from anyone)."""
    if not isinstance(value, str) or len(value) > 255 or not _NAMES[kind].fullmatch(value):
        raise BundleError(f"{where} is {_shown(value)}, not a valid {kind}", _REFUSED)
    return value


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _file(part: str, value: Any, where: str) -> str:
    if not isinstance(value, str) or not _FILES[part].fullmatch(value):
        raise BundleError(f"{where} is {_shown(value)}, not a file of the bundle's {part}/ folder", _REFUSED)
    return value


def _entry(value: Any, keys: set[str], optional: set[str], where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BundleError(f"{where} is {_shown(value)}, not a mapping", _REFUSED)
    unknown, missing = set(value) - keys - optional, keys - set(value)
    if unknown or missing:
        what = f"unknown key(s) {', '.join(map(_shown, sorted(unknown, key=str)))}" if unknown else \
            f"no {', '.join(sorted(missing))}"
        raise BundleError(f"{where} has {what}", "a bundle made by another labkit version? make it again with "
                          "this one (`labkit bundle create`)")
    return value


def _count(value: Any, where: str) -> int:
    if type(value) is not int or value < 0:
        raise BundleError(f"{where} is {_shown(value)}, not a count", _REFUSED)
    return value


def _names(kind: str, value: Any, where: str) -> list[str]:
    if not isinstance(value, list):
        raise BundleError(f"{where} is {_shown(value)}, not a list", _REFUSED)
    return [check_name(kind, v, f"{where}[{i}]") for i, v in enumerate(value)]


def check_manifest(m: Any, where: str = MANIFEST) -> dict[str, Any]:
    """The manifest with every value checked (types, names, file paths), rebuilt from the checked
    values only. BundleError names the first bad field."""
    m = _entry(m, {"format", "images", "box"}, {"apt", "wheels"}, where)
    if type(m["format"]) is not int or not 1 <= m["format"] <= FORMAT:
        raise BundleError(f"{where}: format {_shown(m['format'])}, and this labkit reads formats 1 to {FORMAT}",
                          "make the bundle again with this labkit version")
    out: dict[str, Any] = {"format": m["format"], "images": [], "box": None, "apt": [], "wheels": None}
    if not isinstance(m["images"], list):
        raise BundleError(f"{where}: images is {_shown(m['images'])}, not a list", _REFUSED)
    for i, e in enumerate(m["images"]):
        w = f"{where}: images[{i}]"
        e = _entry(e, {"distro", "image", "file", "recipe"}, set(), w)
        out["images"].append({"distro": check_name("distro", e["distro"], f"{w}.distro"),
                              "image": check_name("image name", e["image"], f"{w}.image"),
                              "file": _file("images", e["file"], f"{w}.file"),
                              "recipe": check_name("recipe", e["recipe"], f"{w}.recipe")})
    if m["box"] is not None:
        e = _entry(m["box"], {"name", "file", "recipe"}, set(), f"{where}: box")
        out["box"] = {"name": check_name("box name", e["name"], f"{where}: box.name"),
                      "file": _file("box", e["file"], f"{where}: box.file"),
                      "recipe": check_name("recipe", e["recipe"], f"{where}: box.recipe")}
    apt = m.get("apt") or []
    if not isinstance(apt, list):
        raise BundleError(f"{where}: apt is {_shown(apt)}, not a list", _REFUSED)
    for i, e in enumerate(apt):
        w = f"{where}: apt[{i}]"
        e = _entry(e, {"release", "arch", "file", "packages", "closure"}, {"debs", "debs_bytes"}, w)
        t = Target(check_name("Debian release", e["release"], f"{w}.release"),
                   check_name("Debian architecture", e["arch"], f"{w}.arch"))
        if e["file"] != f"apt/{t.slug}.tar":
            raise BundleError(f"{w}.file is {_shown(e['file'])}, not apt/{t.slug}.tar", _REFUSED)
        out["apt"].append({"release": t.release, "arch": t.arch, "file": e["file"],
                           "packages": _names("Debian package", e["packages"], f"{w}.packages"),
                           "closure": _names("Debian package", e["closure"], f"{w}.closure"),
                           "debs": _count(e.get("debs", 0), f"{w}.debs"),
                           "debs_bytes": _count(e.get("debs_bytes", 0), f"{w}.debs_bytes")})
    if m.get("wheels") is not None:
        w = f"{where}: wheels"
        e = _entry(m["wheels"], {"dir", "python", "machine", "labkit", "requirements", "files"}, set(), w)
        if e["dir"] != "wheels" or e["requirements"] != "wheels/requirements.txt":
            raise BundleError(f"{w}: dir {_shown(e['dir'])} and requirements {_shown(e['requirements'])}, not "
                              "wheels and wheels/requirements.txt", _REFUSED)
        files = _names("wheel", e["files"], f"{w}.files")
        if check_name("wheel", e["labkit"], f"{w}.labkit") not in files:
            raise BundleError(f"{w}.labkit ({_shown(e['labkit'])}) is not one of its files", _REFUSED)
        out["wheels"] = {"dir": "wheels", "python": check_name("Python version", e["python"], f"{w}.python"),
                         "machine": check_name("machine", e["machine"], f"{w}.machine"), "labkit": e["labkit"],
                         "requirements": e["requirements"], "files": files}
    return out


# --------------------------------------------------------------------------- verify

@dataclass(frozen=True)
class Verified:
    """A checked bundle: its manifest (every name checked), each file's SHA-256 (from the
    ``SHA256SUMS`` that matched ``digest``), and the digest (None: not authenticated)."""

    path: Path
    manifest: dict[str, Any]
    sums: dict[str, str]
    digest: str | None


def bundle_files(manifest: dict[str, Any]) -> list[str]:
    """Every file the manifest names (what SHA256SUMS must list), relative to the bundle."""
    files = [e["file"] for e in manifest.get("images") or []]
    if manifest.get("box"):
        files.append(manifest["box"]["file"])
    files += [e["file"] for e in manifest.get("apt") or []]
    w = manifest.get("wheels")
    if w:
        files += [f"{w['dir']}/{f}" for f in w["files"]] + [w["requirements"]]
    return list(dict.fromkeys(files))


def digest_of(bundle: str | Path) -> str:
    """The bundle's digest as ``create`` printed it: ``sha256:`` and the SHA-256 of its SHA256SUMS."""
    return "sha256:" + hashlib.sha256(_read_sums(Path(bundle))).hexdigest()


def _read_sums(b: Path) -> bytes:
    try:
        with open_regular(b / SUMS) as f:
            data = f.read(_SUMS_MAX + 1)
    except FileNotFoundError:
        raise BundleError(f"{b}: not a labkit bundle (no {SUMS})", "make one with `labkit bundle create DIR`") from None
    except OSError as e:
        raise BundleError(f"{b / SUMS}: cannot be read as a file ({e.strerror or e})",
                          "copy the whole bundle folder again") from None
    if len(data) > _SUMS_MAX:
        raise BundleError(f"{b / SUMS}: larger than {mib(_SUMS_MAX)}, which no bundle's is",
                          "copy the bundle again from the machine that made it")
    return data


def verify(bundle: str | Path, digest: str | None = None) -> dict[str, Any]:
    """``check(bundle, digest)``'s manifest."""
    return check(bundle, digest).manifest


def check(bundle: str | Path, digest: str | None) -> Verified:
    """Check a bundle: first ``digest`` (``sha256:HEX``, as ``create`` printed it) against its
    SHA256SUMS, before anything else of it is read; then every line and name of SHA256SUMS, the
    manifest (listed there, every value checked: ``check_manifest``), that SHA256SUMS lists
    every file the manifest names and the folder holds nothing else (no link, no special file),
    and every file's checksum. ``digest=None`` checks that the bundle is whole, not whose it is.
    BundleError names the first problem."""
    b = Path(bundle)
    if digest is not None and not DIGEST_RE.fullmatch(digest):
        raise SpecError(f"bundle digest {_shown(digest)}: not sha256: and 64 hexadecimal digits",
                        "give the digest `labkit bundle create` printed, e.g. sha256:3f2a...")
    if not b.is_dir():
        raise BundleError(f"{b}: not a labkit bundle (not a folder)", "make one with `labkit bundle create DIR`")
    data = _read_sums(b)
    if digest is not None and "sha256:" + hashlib.sha256(data).hexdigest() != digest:
        raise BundleError(f"{b}: its {SUMS} does not match the bundle digest given ({digest}): the bundle was "
                          "changed after `labkit bundle create` printed that digest, or it is another bundle",
                          "nothing of it was used; get the bundle again from the machine that made it, and the "
                          "digest from whoever made it, by another way than the bundle itself")
    sums: dict[str, str] = {}
    lines = data.decode("utf-8", "replace").split("\n")  # only \n ends a line: a \r is part of a name
    for n, line in enumerate(lines[:-1] if lines[-1] == "" else lines, 1):
        m = _SUMS_LINE.fullmatch(line)
        if not m:
            raise BundleError(f"{b / SUMS}:{n}: not a checksum line ({_shown(line)})", "copy the whole bundle folder again")
        want, name = m.groups()
        if name != MANIFEST and not any(rx.fullmatch(name) for rx in _FILES.values()):
            raise BundleError(f"{b / SUMS}:{n}: {_shown(name)} is no file a bundle holds ({MANIFEST}, or one file "
                              f"of {', '.join(f'{d}/' for d in _FILES)})", _REFUSED)
        if name in sums:
            raise BundleError(f"{b / SUMS}:{n}: {name} is listed twice", "copy the whole bundle folder again")
        sums[name] = want
    if MANIFEST not in sums:
        raise BundleError(f"{b}: {MANIFEST} is not listed in {SUMS}", "copy the whole bundle folder again")
    try:
        with open_regular(b / MANIFEST) as f:
            raw = f.read()
    except OSError as e:
        raise BundleError(f"{b}: {MANIFEST} is listed in {SUMS} but cannot be read ({e.strerror or e})",
                          "copy the whole bundle folder again") from None
    if hashlib.sha256(raw).hexdigest() != sums[MANIFEST]:
        raise BundleError(f"{b}: {MANIFEST} does not match its checksum (corrupt or changed copy)",
                          "copy the bundle again from the machine that made it")
    try:
        parsed = json.loads(raw)
    except (ValueError, RecursionError) as e:
        raise BundleError(f"{b}: {MANIFEST} is not JSON ({_shown(str(e))})", "copy the whole bundle folder again") \
            from None
    manifest = check_manifest(parsed, f"{b / MANIFEST}")
    named = bundle_files(manifest)
    unlisted = [f for f in named if f not in sums]
    if unlisted:
        raise BundleError(f"{b}: {', '.join(unlisted[:3])} named in {MANIFEST} but not in {SUMS}",
                          "copy the whole bundle folder again, or make it again with `labkit bundle create`")
    stray = _unlisted(b, set(sums))
    if stray:
        raise BundleError(f"{b} holds {', '.join(stray[:3])}: not a file {SUMS} lists (a bundle holds only the "
                          "regular files it lists, in its parts' folders)",
                          "remove it, or copy the bundle again from the machine that made it")
    for name, want in sums.items():
        if name == MANIFEST:
            continue
        try:
            with open_regular(b / name) as f:
                got = hash_open(f)
        except FileNotFoundError:
            raise BundleError(f"{b}: {name} is listed in {SUMS} but missing", "copy the whole bundle folder again") \
                from None
        except OSError as e:
            raise BundleError(f"{b}: {name} cannot be read as a file ({e.strerror or e})",
                              "copy the whole bundle folder again") from None
        if got != want:
            raise BundleError(f"{b}: {name} does not match its checksum (corrupt or changed copy)",
                              "copy the bundle again from the machine that made it")
    return Verified(b, manifest, sums, digest)


def _unlisted(b: Path, listed: set[str]) -> list[str]:
    """What the bundle folder holds besides its listed files: other files, links, special files."""
    out = []
    for root, dirs, files in os.walk(b):
        rel = Path(root).relative_to(b)
        for name in dirs + files:
            p = Path(root) / name
            r = (rel / name).as_posix()
            if p.is_symlink():
                out.append(f"{r} (a symbolic link)")
            elif name in files and r not in listed and r != SUMS:
                out.append(r)
            elif name in dirs and r not in _FILES:  # the parts' folders, even empty; no other
                out.append(f"{r}/ (a folder)")
    return sorted(out)


def authenticate(bundle: str | Path, digest: str | None, *, insecure: bool = False, flag: str = "--bundle-digest",
                 log: Log = quiet) -> Verified:
    """``check(bundle, digest)``, the digest required: without one, SpecError, unless ``insecure``
    (``--insecure-skip-digest``: the bundle is then only checked to be whole, and that is logged)."""
    if digest is not None and insecure:
        raise UsageError(f"{flag} and --insecure-skip-digest both given", "drop --insecure-skip-digest")
    if digest is None and not insecure:
        raise SpecError(f"the bundle {bundle} needs its digest ({flag} sha256:...): it is what proves the bundle is "
                        "the one that was made, and nothing of the bundle is used before it is checked",
                        "pass the digest `labkit bundle create` printed (on that machine, `sha256sum "
                        "DIR/SHA256SUMS` prints it again), or --insecure-skip-digest to trust whoever could write "
                        "to the bundle")
    v = check(bundle, digest)
    if digest is None:
        log(f"WARNING: {bundle} is used without its digest (--insecure-skip-digest): it is whole, but anyone who "
            "could write to it could have made it")
    return v


@contextlib.contextmanager
def opened(b: Path, name: str, sums: dict[str, str], hash_it: bool = True) -> Iterator[BinaryIO]:
    """A bundle file opened (no link followed) and, with ``hash_it``, checked against the verified
    sums through the same open file: what is read next is what was checked."""
    try:
        f = open_regular(b / name)
    except OSError as e:
        raise BundleError(f"{b}: {name} cannot be read as a file ({e.strerror or e})",
                          "copy the whole bundle folder again") from None
    with f:
        if hash_it and hash_open(f) != sums[name]:
            raise BundleError(f"{b}: {name} changed after it was checked",
                              "nothing of it was used; make sure nobody else writes to the bundle, and copy it again")
        yield f

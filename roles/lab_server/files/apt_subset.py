#!/usr/bin/env python3
"""The part of a bundle's apt repository one lab server needs, run on the controller.

Given the repository's tar (``apt/<release>-<arch>.tar`` of a labkit bundle) and its SHA-256
from the bundle's checked SHA256SUMS (``--sha256``: labkit checked those against the digest
``labkit bundle create`` printed), the tar is copied into a private folder as it is hashed and
refused unless it matches; only that copy is read afterwards (the bundle's own file may be
changed by whoever can write to it). Then, given the server's dpkg status file and the packages it lacks,
apt itself (private configuration: the repository's index is its only source, the server's
status its installed packages) decides which .debs the server must install or upgrade; those,
and an index of them, are written to a smaller tar. Only that is copied to the server.

Prints JSON: {"sha256": ..., "bytes": ..., "debs": [...]}. Exit 1 with apt's own error when
the packages cannot be installed on that server from the bundle.

Standard library and apt-get only (the controller is Debian-family, like the servers)."""
from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

INST = re.compile(r"^Inst (\S+) (?:\[\S+\] )?\((\S+) .*\[([^\]]+)\]\)")


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fail(msg: str) -> None:
    print(msg, file=sys.stderr)
    sys.exit(1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", required=True, type=Path)
    ap.add_argument("--file", required=True, help="the repository's tar, relative to the bundle")
    ap.add_argument("--sha256", required=True, help="its SHA-256, from the bundle's checked SHA256SUMS")
    ap.add_argument("--status", required=True, type=Path, help="the server's /var/lib/dpkg/status")
    ap.add_argument("--arch", required=True, help="the server's dpkg architecture")
    ap.add_argument("--foreign", default="", help="the server's foreign architectures, space-separated")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("packages", nargs="+")
    a = ap.parse_args()

    if not re.fullmatch(r"[0-9a-f]{64}", a.sha256):
        fail(f"--sha256 {a.sha256!r}: not a SHA-256")
    with tempfile.TemporaryDirectory(prefix="labkit-apt-") as tmp:  # 0700: only this user reads or writes it
        w = Path(tmp)
        repo = w / "repo.tar"  # the one copy read from here on
        if copy_hashed(a.bundle / a.file, repo) != a.sha256:
            fail(f"{a.bundle / a.file}: does not match the bundle's checked SHA256SUMS (corrupt, or changed after "
                 "labkit checked it): nothing of it was used")
        subset(a, w, repo)


def copy_hashed(src: Path, dst: Path) -> str:
    """``src`` (no link followed) copied to the new file ``dst``; the SHA-256 of what was written."""
    h = hashlib.sha256()
    fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f, dst.open("xb") as out:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
            out.write(chunk)
    return h.hexdigest()


def subset(a: argparse.Namespace, w: Path, repo: Path) -> None:
    """The server's part of the checked copy ``repo``, apt working in ``w``."""
    for d in ("idx", "parts", "prefs", "lists/partial", "cache/archives/partial"):
        (w / d).mkdir(parents=True)
    with tarfile.open(repo) as tar:
        index = tar.extractfile("Packages").read()
    (w / "idx" / "Packages").write_bytes(index)
    (w / "sources.list").write_text(f"deb [trusted=yes] file:{w / 'idx'} ./\n")
    opts = {"Dir::Etc::SourceList": w / "sources.list",
            "Dir::Etc::SourceParts": w / "parts", "Dir::Etc::Preferences": w / "prefs/none",
            "Dir::Etc::PreferencesParts": w / "prefs", "Dir::State": w, "Dir::State::Lists": w / "lists",
            "Dir::State::status": a.status.resolve(), "Dir::Cache": w / "cache", "APT::Architecture": a.arch,
            "APT::Install-Recommends": "0", "Acquire::Languages": "none", "Debug::NoLocking": "1"}
    argv = [x for k, v in opts.items() for x in ("-o", f"{k}={v}")]
    argv += ["-o", f"APT::Architectures::={a.arch}"]
    for f in a.foreign.split():
        argv += ["-o", f"APT::Architectures::={f}"]
    env = dict(os.environ, LC_ALL="C")
    env.pop("APT_CONFIG", None)
    p = subprocess.run(["apt-get", *argv, "update"], capture_output=True, text=True, env=env)
    if p.returncode != 0:
        fail(f"reading the bundle's index failed: {p.stderr.strip()[-500:]}")
    p = subprocess.run(["apt-get", *argv, "-s", "install", *a.packages], capture_output=True, text=True, env=env)
    if p.returncode != 0:
        errors = [ln for ln in (p.stdout + p.stderr).splitlines() if ln.startswith(("E:", " ")) and ln.strip()]
        fail("apt cannot install " + " ".join(a.packages) + " on this server from the bundle alone: "
             + " | ".join(x.strip() for x in errors[-8:]))
    need = {(m.group(1), m.group(2)) for m in map(INST.match, p.stdout.splitlines()) if m}

    stanzas = {}
    for rec in index.decode().strip().split("\n\n"):
        f = dict(re.findall(r"^([\w-]+): (.*)$", rec, re.M))
        stanzas.setdefault((f.get("Package"), f.get("Version")), (rec.strip() + "\n", f.get("Filename")))
    missing = sorted(f"{n}={v}" for n, v in need if (n, v) not in stanzas)
    if missing:
        fail(f"apt chose {', '.join(missing)}, which the bundle's index does not list")
    chosen = {stanzas[k][1]: stanzas[k][0] for k in sorted(need)}
    packages = "\n".join(chosen.values()).encode()
    packages_gz = gzip.compress(packages, mtime=0)
    release = "Origin: labkit\nLabel: labkit offline bundle (one server's part)\nSHA256:\n" + "".join(
        f" {hashlib.sha256(d).hexdigest()} {len(d):>10} {n}\n" for n, d in (("Packages", packages),
                                                                          ("Packages.gz", packages_gz)))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(repo) as src, tarfile.open(a.out, "w") as dst:
        for name, data in (("Packages", packages), ("Packages.gz", packages_gz), ("Release", release.encode())):
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), int(time.time()), 0o644
            dst.addfile(info, io.BytesIO(data))
        for member in src:
            if member.name in chosen:
                dst.addfile(member, src.extractfile(member))
    print(json.dumps({"sha256": sha256(a.out), "bytes": a.out.stat().st_size,
                      "debs": sorted(f"{n}={v}" for n, v in need)}))


if __name__ == "__main__":
    main()

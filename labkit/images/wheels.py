"""The offline bundle's wheelhouse: labkit's own wheel and the wheels of exactly the
dependency versions it runs with here, for one CPython version and architecture, so that
``pip install --no-index --find-links DIR/wheels labkit`` installs it without PyPI.
"""
from __future__ import annotations

import importlib.metadata as md
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, cast

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import Version

from labkit.errors import BundleError, SpecError
from labkit.images.apt import Target
from labkit.images.files import locked
from labkit.log import Log, quiet
from labkit.paths import _PKG, state_dir

# The CPython and glibc of each Debian release (the wheelhouse's default target).
DEBIAN_PYTHON = {"bookworm": "3.11", "trixie": "3.13"}
DEBIAN_GLIBC = {"bookworm": (2, 36), "trixie": (2, 41)}
WHEEL_ARCH = {"amd64": "x86_64", "arm64": "aarch64"}


def pinned_requirements(python: str | None = None, machine: str | None = None) -> list[str]:
    """labkit's runtime dependencies, with theirs, as ``name==version`` of the versions
    installed here (the ones labkit is tested and runs with), markers evaluated for ``python``
    (``X.Y``) and ``machine`` (``x86_64``)."""
    env: dict[str, str] = {}
    if python:
        env.update(python_version=python, python_full_version=f"{python}.0")
    if machine:
        env["platform_machine"] = machine
    seen: dict[str, frozenset[str]] = {}
    todo: list[tuple[str, frozenset[str]]] = [("labkit", frozenset())]
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


def _pip(*args: str, timeout: int = 1800) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
                          capture_output=True, text=True, timeout=timeout)


def _pip_error(p: subprocess.CompletedProcess[str]) -> str:
    lines = [ln for ln in (p.stderr + p.stdout).splitlines() if ln.startswith("ERROR")]
    return "; ".join(ln[:300] for ln in lines[-2:]) or f"exit {p.returncode}"


def build_wheelhouse(out: Path, python: str, machine: str, glibc: tuple[int, int],
                     log: Log = quiet) -> dict[str, Any]:
    """labkit's wheel and its pinned dependencies' wheels for CPython ``python`` on ``machine``
    into ``out`` (binary wheels only: nothing is built on the machine that installs them)."""
    pins = pinned_requirements(python, machine)
    tag = f"cp{python.replace('.', '')}"
    cache = state_dir() / "cache" / "wheels" / f"{tag}-{machine}"
    cache.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    lock = locked(cache / ".lock")
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
            pin_name, pin_version = pin.split("==")
            pinned = by_pin.get((canonicalize_name(pin_name), Version(pin_version)))
            if pinned is None:
                raise BundleError(f"pip reported {pin} downloaded but no wheel of it is in {cache}",
                                  f"remove {cache} and try again")
            shutil.copy2(pinned, out / pinned.name)
            files.append(pinned.name)
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
        glibc = cast(tuple[int, int], tuple(int(x) for x in lib.split()[-1].split(".")[:2]))
    py = python or (DEBIAN_PYTHON.get(first.release) if first else None) or \
        f"{sys.version_info.major}.{sys.version_info.minor}"
    if not re.match(r"^3\.\d+$", py):
        raise SpecError(f"--python {py!r}: give a CPython version as X.Y", "e.g. --python 3.11")
    if tuple(int(x) for x in py.split(".")) < (3, 11):
        raise SpecError(f"labkit needs Python >= 3.11; the wheelhouse target is {py}",
                        "pass --python 3.11 (or newer), or --no-wheels")
    return py, machine, glibc

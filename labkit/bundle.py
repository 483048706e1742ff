"""Offline bundles: build images and the box once, carry them to other lab servers as files.

A bundle is a folder: ``images/<distro>.tar`` (``docker save``), ``box/<box>.box``, a
``manifest.json`` (what each file is, its recipe) and ``SHA256SUMS``. ``load`` refuses a
bundle whose checksums do not match, naming the file, and skips what is already present
with the same recipe. The ``lab_server`` role does the same on remote servers.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from . import catalog, engine, images
from .errors import BoxError, BundleError, ImageError

MANIFEST = "manifest.json"
SUMS = "SHA256SUMS"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def create(out: str | Path, distros: list[str], box: str | None = None, log=print) -> Path:
    """Write a bundle of the local images of ``distros`` (and ``box``) into ``out``."""
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    manifest: dict = {"format": 1, "images": [], "box": None}
    for ref in distros:
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
    if box:
        from . import boxes

        built = boxes._box_dir(box) / (boxes._box_dir(box).name + ".box")
        if not built.is_file():
            raise BoxError(f"the box {box} has not been built here", "run `labkit box build` first")
        (out / "box").mkdir(exist_ok=True)
        target = out / "box" / built.name
        log(f"{box}: copying {built} to {target}")
        shutil.copyfile(built, target)
        manifest["box"] = {"name": box, "file": f"box/{built.name}", "recipe": boxes.recipe_hash()}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2))
    files = [e["file"] for e in manifest["images"]] + ([manifest["box"]["file"]] if box else []) + [MANIFEST]
    (out / SUMS).write_text("".join(f"{_sha256(out / f)}  {f}\n" for f in files))
    log(f"bundle written: {out} ({len(manifest['images'])} image(s){', 1 box' if box else ''})")
    return out


def verify(bundle: str | Path) -> dict:
    """Check every file against SHA256SUMS; return the manifest. LabkitError names a bad file."""
    b = Path(bundle)
    sums = b / SUMS
    if not sums.is_file():
        raise BundleError(f"{b}: not a labkit bundle (no {SUMS})", "make one with `labkit bundle create DIR`")
    for line in sums.read_text().splitlines():
        want, name = line.split(None, 1)
        f = b / name.strip()
        if not f.is_file():
            raise BundleError(f"{b}: {name} is listed in {SUMS} but missing", "copy the whole bundle folder again")
        if _sha256(f) != want:
            raise BundleError(f"{b}: {name} does not match its checksum (corrupt or changed copy)",
                              "copy the bundle again from the machine that made it")
    return json.loads((b / MANIFEST).read_text())


def load(bundle: str | Path, log=print) -> list[str]:
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
        from . import boxes

        if boxes.box_present(manifest["box"]["name"]):
            log(f"{manifest['box']['name']}: present, skipped")
        else:
            boxes._vagrant_add(manifest["box"]["name"], b / manifest["box"]["file"])
            log(f"{manifest['box']['name']}: added")
            done.append(manifest["box"]["name"])
    return done

"""The lab's own content as a checksum, and the content cache's decisions (pure: no engine).

``digest`` is what the no-op of ``labkit up`` (``labkit.plan.uptodate``) and the lab images
of the content cache are keyed on: every file of the folders the lab's content comes from
(each playbook's and prepare playbook's folder, ``roles_path``, ``collections_path``, the
``extra_vars`` file) and the lab file's ``provision`` section (roles, their vars, group_vars,
extra_vars). A change to any of them is a change to the content.

The content cache (``labkit up`` on Docker): when every student gets the same content,
the content is converged on one host per distro (the builder: the first new container of
that distro), the result is committed as a lab image, and the other students' new
containers start from it; the content then runs on every host as its idempotence pass.
``why_not`` says when it does not apply; ``images_for`` decides each container's image.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from labkit.lab.spec import Lab

REPO = "labkit-content"          # the lab images' repository: labkit-content:<lab>-<distro>-<key>
LABEL_LAB = "labkit.content.lab"
LABEL_KEY = "labkit.content.key"
LABEL_BASE = "labkit.content.base"
LABEL_DISTRO = "labkit.content.distro"
MAX_FILES = 20000                # a content folder larger than this is not checksummed: no no-op, no cache
_SKIP_DIRS = {".git", "__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache", ".tox", ".venv", "node_modules"}
# the groups every student's hosts of a distro share (labkit.ansible.inventory): plays and vars
# aimed at these treat every student alike
_SHARED = ("all", "lab", "python", "no_python", "containers", "vms", "docker", "podman", "lxc")


class TooLarge(Exception):
    """A content folder holds more than MAX_FILES files."""


def _folders(lab: Lab) -> list[Path]:
    p = lab.provision
    out = [Path(f).parent for f in [*p.prepare, *p.playbooks]] + [Path(d) for d in
                                                                 [*p.roles_path, *p.collections_path]]
    if isinstance(p.extra_vars, str) and p.extra_vars.startswith("@"):
        out.append(Path(p.extra_vars[1:]))
    return sorted(dict.fromkeys(x.resolve() for x in out))


def digest(lab: Lab) -> str:
    """The checksum of the lab's content (files and the provision section). Raises TooLarge."""
    h = hashlib.sha256()
    h.update(json.dumps(lab.provision.model_dump(mode="json"), sort_keys=True, default=str).encode())
    n = 0
    for top in _folders(lab):
        files = [top] if top.is_file() else sorted(top.rglob("*")) if top.is_dir() else []
        for f in files:
            if not f.is_file() or _SKIP_DIRS.intersection(f.parts) or f.suffix == ".pyc":
                continue
            n += 1
            if n > MAX_FILES:
                raise TooLarge(f"{top}: more than {MAX_FILES} files")
            h.update(f"{f}\0".encode())
            h.update(hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()


def _patterns(playbook: Path, seen: set[Path]) -> list[str]:
    """Every play's ``hosts`` in a playbook (following import_playbook)."""
    if playbook in seen:
        return []
    seen.add(playbook)
    try:
        plays = yaml.safe_load(playbook.read_text())
    except (OSError, yaml.YAMLError):
        return ["?unreadable"]
    out: list[str] = []
    for play in plays if isinstance(plays, list) else []:
        if not isinstance(play, dict):
            continue
        imp = play.get("import_playbook") or play.get("ansible.builtin.import_playbook")
        if isinstance(imp, str):
            out += _patterns((playbook.parent / imp).resolve(), seen) if "{{" not in imp else ["?" + imp]
        elif "hosts" in play:
            out.append(str(play["hosts"]))
    return out


def _shared(pattern: str, distro_groups: Iterable[str]) -> bool:
    """A host pattern every student's hosts of a distro match alike (``python``, ``debian12``,
    ``family_debian``, their unions): not one that names a student, a server or a host."""
    ok = set(_SHARED) | set(distro_groups)
    for part in pattern.replace(",", ":").split(":"):
        part = part.lstrip("&!").strip()
        if part and part not in ok and not part.startswith("family_"):
            return False
    return True


def why_not(lab: Lab, distro_groups: Iterable[str], off: bool = False) -> str:
    """Why the content cache does not apply to this lab ("" when it does)."""
    p = lab.provision
    if off:
        return "--no-content-cache"
    if not (p.playbooks or p.roles):
        return "no playbooks or roles"
    groups = list(distro_groups)
    for g in p.group_vars:
        if not _shared(g, groups):
            return f"provision.group_vars.{g} is not the same for every student"
    pats = [p.hosts, *(r.hosts for r in p.roles if r.hosts)]
    for pb in [*p.prepare, *p.playbooks]:
        pats += _patterns(Path(pb).resolve(), set())
    for pat in pats:
        if not _shared(pat, groups):
            return f"a play's hosts '{pat}' do not treat every student alike"
    return ""


def image_ref(lab: str, distro_slug: str, key: str) -> str:
    """The lab image of one distro for one content key."""
    return f"{REPO}:{lab}-{distro_slug}-{key[:16]}"


@dataclass(frozen=True)
class Choice:
    """What the cache does in this ``up``: each container's image (name -> reference), and the
    builders to converge and commit first (container name -> the lab image it makes)."""

    images: Mapping[str, str] = field(default_factory=dict)
    builders: Mapping[str, str] = field(default_factory=dict)


def images_for(planned: Sequence[Any], existing: Mapping[str, str], lab_images: Mapping[str, str | None],
               wanted: Mapping[str, str], base_ids: Mapping[str, str | None]) -> Choice:
    """Each planned container's image under the cache.

    ``planned``: ContainerItems (name, distro, image = the base image); ``existing``: container
    name -> the image reference it was made from; ``lab_images``: lab image reference -> the
    base image id it was made from (None: it does not exist); ``wanted``: distro -> the lab
    image of the current content; ``base_ids``: base reference -> its id now.

    A container that exists keeps its image (the content pass brings it up to date), unless it
    was made from a lab image of an older base image (without the cache it would be remade from
    the new base: so it is, from the new lab image). A new container starts from the lab image
    when it exists; when it does not, the first new container of the distro is the builder
    (made from the base image, converged, committed) and the others wait for its image.
    """
    images: dict[str, str] = {}
    builders: dict[str, str] = {}
    for c in planned:
        want = wanted.get(c.image)
        if want is None:
            continue
        have = existing.get(c.name)
        if have is not None and have in lab_images and lab_images.get(have) == base_ids.get(c.image):
            images[c.name] = have  # an older lab image of the same base: kept
            continue
        if have == c.image:
            continue  # made from the base image: kept
        if lab_images.get(want) is None and want not in builders.values():
            builders[c.name] = want  # made from the base image, converged, committed
            continue
        images[c.name] = want
    # a builder alone (no other new container waits for its image) is no cache: plain
    for b, ref in list(builders.items()):
        if ref not in images.values():
            del builders[b]
    return Choice(images, builders)

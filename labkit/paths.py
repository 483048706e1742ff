"""Where labkit keeps its state, and where its Ansible content lives."""
from __future__ import annotations

import os
import re
from pathlib import Path

PKG_DIR = Path(__file__).resolve().parent  # the labkit package itself
_PKG = PKG_DIR


def state_dir() -> Path:
    """Root of labkit's state: ``$LABKIT_HOME`` or ``~/.local/share/labkit``."""
    env = os.environ.get("LABKIT_HOME")
    base = Path(env) if env else Path.home() / ".local" / "share" / "labkit"
    base.mkdir(parents=True, exist_ok=True)
    return base


def lab_dir(lab: str) -> Path:
    """Per-lab working folder (inventory, ssh config, Vagrant folders, runner artifacts)."""
    d = state_dir() / "labs" / lab
    d.mkdir(parents=True, exist_ok=True)
    return d


def vagrant_home() -> Path:
    """A private VAGRANT_HOME, so labkit's boxes never mix with the user's."""
    d = state_dir() / "vagrant.d"
    d.mkdir(parents=True, exist_ok=True)
    return d


def ansible_root() -> Path:
    """Folder holding ``playbooks/``, ``roles/`` and ``inventories/``.

    In a source checkout (editable install) that is the repository root; in a
    wheel the same folders are shipped as ``labkit/_ansible``.
    """
    shipped = _PKG / "_ansible"
    if (shipped / "playbooks").is_dir():
        return shipped
    return _PKG.parent


def playbooks_dir() -> Path:
    return ansible_root() / "playbooks"


def roles_dir() -> Path:
    return ansible_root() / "roles"


_SLUG = re.compile(r"[^a-z0-9]+")


def slug(text: str) -> str:
    """``debian:12`` -> ``debian12``: a name part legal for Docker and libvirt."""
    return _SLUG.sub("", text.lower())

"""Mitogen for the lab's own content: its strategy keeps one Python interpreter per host for a
whole run, where plain Ansible starts one (and compiles its module code again) per task.

Measured on this 2-core machine (docs/benchmarks.md (i)): the webclass role with nothing to
change on 40 Docker containers 46.5 s against 171.7 s, on one emulated VM over SSH 19-20 s
against 57-60 s, with the same result (ok/changed per host).

Only the content runs use it (``labkit up``'s content, ``run``, ``test``), never labkit's own
playbooks. Hosts whose connection Mitogen takes over get its short name (``docker``,
``podman``; the VMs' ``ssh`` already is); the rest (LXC, a remote server's containers, a
rootless user's Podman) keep their plugin, which Mitogen's strategy leaves alone. A play that
names its own ``strategy:`` runs without Mitogen. ``provision.mitogen: false`` in the lab file,
or ``LABKIT_MITOGEN=0``, turns it off.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from labkit import paths
from labkit.errors import UsageError

ENV = "LABKIT_MITOGEN"
STRATEGY = "mitogen_linear"
# Mitogen's multiplexer listens on a UNIX socket in TMPDIR named like tempfile.mktemp's
# "mitogen_unix_XXXXXXXX.sock"; the kernel binds paths of at most 107 bytes
SOCKET_NAME = len("mitogen_unix_") + 8 + len(".sock")


def socket_fits(tmpdir: Path) -> bool:
    """Whether Mitogen's socket can be made in ``tmpdir`` (a deep LABKIT_HOME may leave no room:
    the run then goes as plain Ansible)."""
    return paths.socket_fits(tmpdir / ("x" * SOCKET_NAME))


def strategy_dir() -> Path | None:
    """The folder of Mitogen's strategy plugins, or None when ansible_mitogen is not installed."""
    spec = importlib.util.find_spec("ansible_mitogen")
    if spec is None or not spec.submodule_search_locations:
        return None
    d = Path(next(iter(spec.submodule_search_locations))) / "plugins" / "strategy"
    return d if (d / f"{STRATEGY}.py").is_file() else None


def wanted(lab_setting: bool) -> bool:
    """Whether the lab's content runs with Mitogen: the lab file's ``provision.mitogen`` and
    ``LABKIT_MITOGEN`` (``0`` turns it off, ``1`` on; anything else is refused)."""
    v = os.environ.get(ENV, "").strip()
    if v not in ("", "0", "1"):
        raise UsageError(f"{ENV}={v!r}: expected 0 (off) or 1 (on)", f"unset {ENV} to follow the lab file")
    if v:
        return v == "1"
    return lab_setting


def run_env(lab_setting: bool, tmpdir: Path) -> dict[str, str]:
    """Ansible's settings for one content run whose TMPDIR is ``tmpdir``: Mitogen's strategy when
    it is wanted (``wanted``), installed and its socket fits there; else empty (plain Ansible)."""
    return env() if wanted(lab_setting) and socket_fits(tmpdir) else {}


def env() -> dict[str, str]:
    """Ansible's settings for a run with Mitogen's strategy (empty when Mitogen is not installed:
    the run then goes as plain Ansible)."""
    d = strategy_dir()
    if d is None:
        return {}
    return {"ANSIBLE_STRATEGY_PLUGINS": str(d), "ANSIBLE_STRATEGY": STRATEGY}

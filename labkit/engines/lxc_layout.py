"""The LXC layout (folder, marker file, root's id map, init) as written once in role lab_lxc's
``module_utils/labkit_lxc_layout.py``, which the Ansible module labkit_lxc imports on the
server; loaded here from the roles labkit ships, as ``labkit.vm.vmnet`` loads the VM pool.
Likewise ``module_utils/labkit_lxc_rootfs.py``: paths of a container's root file system,
resolved inside it (what labkit reads there, e.g. a student's ``/etc/passwd``)."""
from __future__ import annotations

import importlib.util
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

from labkit.paths import roles_dir


def source_path(name: str = "labkit_lxc_layout") -> Path:
    return roles_dir() / "lab_lxc" / "module_utils" / f"{name}.py"


@cache
def layout(name: str = "labkit_lxc_layout") -> ModuleType:
    path = source_path(name)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:  # pragma: no cover - the file ships with labkit
        raise ImportError(f"cannot load {path}")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def server_source() -> bytes:
    """What a remote lab server's Python runs for labkit's reads there: the layout and the
    root file system's paths, then ``lxc_server.py`` (which finds their names already defined)."""
    future = b"from __future__ import annotations\n"  # must stay the first statement of the whole
    server = Path(__file__).with_name("lxc_server.py").read_bytes().replace(future, b"", 1)
    return (future + source_path().read_bytes() + b"\n" + source_path("labkit_lxc_rootfs").read_bytes() + b"\n"
            + server)


_L = layout()
LXC_PATH: str = _L.LXC_PATH
MARKER: str = _L.MARKER
IDMAP_BASE: int = _L.IDMAP_BASE
IDMAP_RANGE: int = _L.IDMAP_RANGE
IDMAP_SLOTS: int = _L.IDMAP_SLOTS
IDMAP: str = _L.IDMAP
BUSYBOX: str = _L.BUSYBOX

_R = layout("labkit_lxc_rootfs")
RootfsError: type[Exception] = _R.RootfsError
rootfs_open: Any = _R.rootfs_open    # (path) -> a descriptor of the root
rootfs_read: Any = _R.rootfs_read    # (root descriptor, path inside, byte limit) -> bytes of a regular file

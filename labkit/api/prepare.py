"""``labkit prepare``: lab servers of an inventory made ready (role lab_server)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from labkit.ansible.labvars import unsafe
from labkit.ansible.runner import EventHandler as OnEvent
from labkit.ansible.runner import RunResult, run_playbook
from labkit.engines.lxc_layout import IDMAP
from labkit.errors import SpecError
from labkit.images.bundle import authenticate
from labkit.log import Log, quiet
from labkit.servers.base import from_inventory, pin_host_keys
from labkit.vm import boxes, virt


def prepare(inventory: str | Path, bundle: str | Path | None = None, log: Log = quiet, on_event: OnEvent | None = None,
            verbosity: int = 0, show_output: bool = False, podman: bool = False, lxc: bool = False, *,
            digest: str | None = None, insecure: bool = False) -> RunResult:
    """Prepare every lab server of ``inventory`` (role lab_server), loading images from ``bundle``;
    with ``podman``, Podman installed and set up there too (rootful and rootless); with ``lxc``,
    LXC (tools, Python binding, BusyBox, root's id map).

    ``bundle`` is used only once it has matched ``digest`` (``sha256:...``, as ``labkit bundle
    create`` printed it) and every file and name of it has been checked (``bundle.check``);
    ``insecure`` (``--insecure-skip-digest``) skips the digest only. The role gets the checked
    manifest and checksums, and never reads them from the bundle again."""
    if digest is not None and not bundle:
        raise SpecError("--bundle-digest without --bundle", "pass the bundle too: --bundle DIR --bundle-digest ...")
    extravars: dict[str, Any] = {"lab_server_podman": True} if podman else {}
    if lxc:  # root's id map as labkit's LXC engine checks it (its one definition: the LXC layout)
        extravars.update(lab_server_lxc=True, lab_server_lxc_idmap=IDMAP)
    if bundle:
        # a changed, corrupt or strange bundle is refused here, before anything of it is used
        v = authenticate(bundle, digest, insecure=insecure, flag="--bundle-digest", log=log)
        manifest = v.manifest
        # what comes from the bundle is data, never a template (!unsafe), on top of its names' checks
        extravars["lab_server_bundle"] = unsafe(str(Path(bundle).resolve()))
        extravars["lab_server_bundle_manifest"] = unsafe(manifest)
        extravars["lab_server_bundle_sums"] = unsafe(v.sums)
        covers = [f"{e['release']}/{e['arch']}" for e in manifest["apt"]]
        log(f"missing Debian packages: from the bundle only (Debian {', '.join(covers)})" if covers else
            "missing Debian packages: from each server's mirror (the bundle carries none)")
        if manifest["box"]:  # servers get the VM stack: emulation's QEMU wrapper, the box's volumes
            extravars["lab_server_tcg_wrapper"] = virt.wrapper_text()
            extravars["lab_server_box_volume_prefix"] = unsafe(boxes.box_volume_prefix(manifest["box"]["name"]))
    inv = Path(inventory)
    if not inv.exists():
        raise SpecError(f"{inv}: inventory not found", "see inventories/classroom/ for an example")
    # each server's host key pinned at first contact (printed), checked by every later command
    pin_host_keys(from_inventory(inv), log)
    return run_playbook("lab_server.yml", lab="_servers", inventory=inv.resolve(), extravars=extravars,
                        on_event=on_event, verbosity=verbosity, show_output=show_output)

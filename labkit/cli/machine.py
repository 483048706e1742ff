"""This machine and its servers: ``doctor``, ``init``, ``schema``, ``prepare``, and the
``images``, ``bundle`` and ``box`` groups."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from labkit import api
from labkit.api import classroom_machine
from labkit.cli.common import handle_errors, lab_options, progress, select
from labkit.cli.render import boxes_table, cell, doctor_table, err, images_table, out, recap, say
from labkit.doctor.machine import run_for_lab
from labkit.engines import shared_images
from labkit.errors import UsageError
from labkit.images import build as images
from labkit.images import bundle as bundle_mod
from labkit.lab import catalog
from labkit.lab import molecule as molecule_mod
from labkit.lab.spec import load_lab
from labkit.lab.spec import schema as lab_schema
from labkit.paths import PKG_DIR
from labkit.vm import boxes


@click.command()
@lab_options
@click.option("--build", is_flag=True, help="Check for `labkit up --build`: missing local images and the box "
              "count as buildable (warn), not as failures.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@handle_errors
def doctor(lab_file: str | None, lab_name: str | None, build: bool, as_json: bool) -> None:
    """Check this machine for everything `labkit up` needs for this lab (images, box, memory,
    CPU, disk); print the fix for each problem; exit 1 when `up` would fail."""
    lab = select(lab_file, lab_name, default_ok=True)
    checks = run_for_lab(lab, build=build)
    if as_json:
        click.echo(json.dumps([c.as_dict() for c in checks], indent=2))
    else:
        out.print(doctor_table(lab.name, checks))
    blocking = [c for c in checks if c.status == "fail"]
    verb = "labkit up --build" if build else "labkit up"
    if blocking:
        err.print(f"[bold red]{len(blocking)} problem(s) block `{verb}`:[/] "
                  + ", ".join(c.name for c in blocking), markup=True)
        sys.exit(1)
    warns = [c.name for c in checks if c.status == "warn"]
    skipped = [c.name for c in checks if c.status == "skipped"]
    err.print(f"nothing blocks `{verb}`" + (f"; warnings: {', '.join(warns)}" if warns else "")
              + (f"; not checked: {', '.join(skipped)}" if skipped else ""), markup=False)


@click.command()
@click.argument("path", required=False)
@click.option("--molecule", is_flag=True,
              help="Write an ansible-native Molecule scenario for an existing role instead (PATH: its name, "
                   "default 'default'): create and destroy through labkit, the lab's inventory, the role's own "
                   "converge and tests.")
@click.option("--role", "role_dir", type=click.Path(file_okay=False),
              help="With --molecule: the role's folder (default: this one).")
@click.option("--force", is_flag=True, help="Overwrite an existing file (with --molecule: labkit's files of an "
              "existing scenario; the role's own playbooks and tests are kept).")
@handle_errors
def init(path: str | None, molecule: bool, role_dir: str | None, force: bool) -> None:
    """Write a commented lab file to start from (default: ./lab.yml), or with --molecule a Molecule
    scenario whose hosts are a labkit lab (`labkit init --molecule [SCENARIO]`)."""
    if molecule:
        _init_molecule(path or "default", role_dir or ".", force)
        return
    if role_dir:
        raise UsageError("--role names the role of a Molecule scenario", "add --molecule, or drop --role")
    p = Path(path or "lab.yml")
    if p.is_dir():
        raise UsageError(f"{p} is a folder", "give the path of the lab file to write, e.g. lab.yml")
    if p.exists() and not force:
        raise UsageError(f"{p} exists", "pass --force to overwrite it, or give another path")
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text((PKG_DIR / "templates" / "lab.yml").read_text())
    load_lab(p)  # what we write must itself be valid
    say(f"wrote {p}: edit it, then `labkit up -f {p}`")


def _init_molecule(scenario: str, role_dir: str, force: bool) -> None:
    sc = molecule_mod.plan(role_dir, scenario, force=force)
    molecule_mod.write(sc)
    lab = load_lab(sc.directory / "lab.yml")
    hosts = ", ".join(c.distro for c in lab.containers) + (" and a VM" if lab.vm.enabled else "")
    say(f"wrote {sc.directory}: " + ", ".join(sorted(sc.files)) + f" (lab '{lab.name}': {hosts})")
    for r in sc.reused:
        say(f"reused: {r}")
    for n in sc.notes:
        err.print(f"[yellow]note:[/] {cell(n)}", markup=True)
    where = "" if Path(role_dir).resolve() == Path.cwd() else f"cd {role_dir} && "
    say(f"next: `{where}molecule test" + ("" if scenario == "default" else f" -s {scenario}") + "` "
        "(Molecule from labkit's environment; labkit brings the hosts up and down)")


@click.command()
@handle_errors
def schema() -> None:
    """Print the lab file's JSON schema (for editor completion)."""
    click.echo(json.dumps(lab_schema(), indent=2))


# --------------------------------------------------------------------------- images

@click.group("images")
def images_group() -> None:
    """Base images: build offline (Debian, BusyBox), pull (registry distros), list, remove."""


@images_group.command("build")
@click.argument("distros", nargs=-1)
@click.option("--force", is_flag=True, help="Rebuild even when the image is up to date.")
@handle_errors
def images_build(distros: tuple[str, ...], force: bool) -> None:
    """Build local images (default: every offline distro of the catalogue)."""
    refs = list(distros) or catalog.names("local")
    images.build(refs, force=force, log=say)


@images_group.command("pull")
@click.argument("distros", nargs=-1, required=True)
@click.option("--registry", help="Pull through this registry (mirror), e.g. localhost:5000.")
@handle_errors
def images_pull(distros: tuple[str, ...], registry: str | None) -> None:
    """Pull registry-backed distros (ubuntu, fedora, alpine, rockylinux, amazonlinux, ...)."""
    images.pull(distros, registry or catalog.default_registry(), log=say)


@images_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@handle_errors
def images_list(as_json: bool) -> None:
    """The catalogue with each image's state on this machine."""
    rows = images.list_images()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    out.print(images_table(rows))


@images_group.command("rm")
@click.argument("distros", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Remove every local (offline-built) image.")
@handle_errors
def images_rm(distros: tuple[str, ...], all_: bool) -> None:
    """Remove images by distro reference."""
    refs = list(distros) or (catalog.names("local") if all_ else [])
    if not refs:
        raise UsageError("name the distros to remove, or pass --all", "e.g. `labkit images rm debian:11`")
    images.remove(refs, log=say)


@click.command()
@click.option("-i", "--inventory", type=click.Path(exists=True),
              help="Inventory whose group lab_servers lists the servers (see inventories/classroom/). "
                   "Required, except with --classroom.")
@click.option("--bundle", "bundle_dir", type=click.Path(file_okay=False, exists=True),
              help="Offline bundle (labkit bundle create) whose images every server gets; its Debian "
                   "packages, when it has them, are installed from it alone (never a mirror). Needs "
                   "--bundle-digest.")
@click.option("--bundle-digest", "digest", metavar="sha256:HEX",
              help="The digest `labkit bundle create` printed: the bundle is refused, before anything of it is "
                   "used, unless its SHA256SUMS has this digest.")
@click.option("--insecure-skip-digest", "insecure", is_flag=True,
              help="Use the bundle without its digest: it is checked to be whole, not to be the one that was "
                   "made (anyone who could write to it could have made it).")
@click.option("--podman", is_flag=True,
              help="Also install and set up Podman on every server (labs with `engine: podman` containers there).")
@click.option("--lxc", is_flag=True,
              help="Also install and set up LXC on every server (labs with `engine: lxc` containers there).")
@click.option("--classroom", is_flag=True,
              help="Prepare THIS machine, as root, for students without root (no sudo, no docker group): "
                   "rootless Podman's ids for each --account/--group member and the lab's images in a shared, "
                   "read-only copy. See docs/instructors/shared-machine.md.")
@click.option("--account", "accounts", multiple=True, metavar="NAME",
              help="With --classroom: an account to prepare (repeatable).")
@click.option("--group", metavar="GROUP", help="With --classroom: prepare every member of this group.")
@lab_options
@click.option("-v", "--verbose", count=True, help="Show Ansible's own output.")
@click.option("-q", "--quiet", is_flag=True, help="No progress, only the result.")
@handle_errors
def prepare(inventory: str | None, bundle_dir: str | None, digest: str | None, insecure: bool, podman: bool, lxc: bool,
            classroom: bool, accounts: tuple[str, ...], group: str | None, lab_file: str | None,
            lab_name: str | None, verbose: int, quiet: bool) -> None:
    """Prepare lab servers: engine running, Python for Ansible's docker modules, images (and the
    servers' missing Debian packages) from a bundle whose digest matches; with --podman, Podman
    too; with --lxc, LXC. With --classroom: this machine, for students without root."""
    if classroom:
        if inventory or bundle_dir or podman or lxc:
            raise UsageError("--classroom prepares this machine: it takes no -i, --bundle, --podman or --lxc",
                             "run `labkit prepare -i INVENTORY ...` for lab servers, and --classroom apart")
        lab = select(lab_file, lab_name, default_ok=True)
        say(classroom_text(classroom_machine.prepare_classroom(lab, accounts, group, log=say)))
        return
    if not inventory:
        raise UsageError("labkit prepare needs -i INVENTORY (lab servers), or --classroom (this machine)",
                         "e.g. `labkit prepare -i inventories/classroom/hosts.yml`")
    if accounts or group or lab_file or lab_name:
        raise UsageError("--account, --group, -f and --lab go with --classroom", "add --classroom, or drop them")
    with progress(verbose, quiet, "labkit prepare") as on_event:
        res = api.prepare(inventory, bundle_dir, log=say, on_event=on_event, show_output=bool(verbose),
                          podman=podman, lxc=lxc, digest=digest, insecure=insecure)
    say(recap(res))


def classroom_text(res: classroom_machine.ClassroomResult) -> str:
    lines = [f"classroom machine prepared for {len(res.accounts)} account(s): {', '.join(res.accounts)}"]
    lines += [f"  ids: {r}" for r in res.ranges_added] or ["  ids: every account already had its own range"]
    lines.append(f"  shared images ({shared_images.SHARED_DIR}): {', '.join(res.images) or 'none'}"
                 + (f" ({len(res.images_written)} written)" if res.images_written else " (all there)"))
    if res.box:
        lines.append(f"  shared box: {res.box}" + (" (written)" if res.box_written else " (there)"))
    lines += [f"  {n}" for n in res.notes]
    lines.append("each account now runs `labkit up -f LAB.yml` (engine: podman) as itself: no root, no sudo"
                 + ("; its VMs boot in its own libvirt session instance" if res.box else ""))
    return "\n".join(lines)


# --------------------------------------------------------------------------- bundle

@click.group("bundle")
def bundle_group() -> None:
    """Offline bundles: images and box as files with checksums and a digest, for other lab servers."""


@bundle_group.command("create")
@lab_options
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--box/--no-box", "with_box", default=True, help="Include the lab's Vagrant box.")
@click.option("-i", "--inventory", type=click.Path(exists=True),
              help="Carry Debian packages for the release and architecture of each of these lab servers "
                   "(asked over SSH, or their labkit_release/labkit_arch variables).")
@click.option("--release", "releases", multiple=True, metavar="CODENAME",
              help="Debian release of the lab servers (repeatable; default: this machine's).")
@click.option("--arch", "arches", multiple=True, metavar="ARCH",
              help="Debian architecture of the lab servers (repeatable; default: this machine's).")
@click.option("--debs/--no-debs", "with_debs", default=True,
              help="Include the lab servers' Debian packages, with their dependencies, as an apt repository.")
@click.option("--wheels/--no-wheels", "with_wheels", default=True,
              help="Include labkit's wheel and its pinned dependencies (pip install --no-index).")
@click.option("--python", "python", metavar="X.Y",
              help="CPython version of the wheels (default: the first release's, bookworm: 3.11).")
@click.option("--mirror", metavar="URL", help="Debian mirror for the packages (default: this machine's).")
@handle_errors
def bundle_create(lab_file: str | None, lab_name: str | None, directory: str, with_box: bool, inventory: str | None, releases: tuple[str, ...], arches: tuple[str, ...], with_debs: bool, with_wheels: bool, python: str | None, mirror: str | None) -> None:
    """Save the lab's local images (and box), the lab servers' Debian packages and labkit's
    wheelhouse into DIRECTORY with a manifest and SHA256SUMS: all an offline classroom needs.
    Prints the bundle's digest, which `prepare` and `bundle load` require."""
    lab = select(lab_file, lab_name, default_ok=True)
    refs = [c.distro for c in lab.containers if c.spec.source == "local"]
    targets: list = []
    if with_debs:
        if inventory:
            targets += bundle_mod.targets_from_inventory(inventory, log=say).values()
        if releases or arches or not inventory:
            targets += bundle_mod.targets_from_options(list(releases), list(arches))
        targets = list(dict.fromkeys(targets))
    elif releases or arches:
        raise UsageError("--release/--arch name the Debian packages to carry, and --no-debs carries none",
                         "drop one of them")
    bundle_mod.create(directory, refs, lab.vm.box if (with_box and lab.vm.enabled) else None, log=say,
                      apt_targets=targets, wheels=with_wheels, python=python, mirror=mirror)


@bundle_group.command("load")
@click.argument("directory", type=click.Path(file_okay=False, exists=True))
@click.option("--digest", metavar="sha256:HEX",
              help="The digest `labkit bundle create` printed: the bundle is refused, before anything of it is "
                   "used, unless its SHA256SUMS has this digest.")
@click.option("--insecure-skip-digest", "insecure", is_flag=True,
              help="Load the bundle without its digest: it is checked to be whole, not to be the one that was "
                   "made (anyone who could write to it could have made it).")
@handle_errors
def bundle_load(directory: str, digest: str | None, insecure: bool) -> None:
    """Check a bundle against its digest, then its checksums, and load its images and box on
    this server."""
    bundle_mod.load(directory, log=say, digest=digest, insecure=insecure)


# --------------------------------------------------------------------------- box

@click.group("box")
def box_group() -> None:
    """The Vagrant box of the lab VM, built offline from Debian packages."""


@box_group.command("build")
@click.argument("name", default="labkit/debian12")
@click.option("--force", is_flag=True, help="Rebuild even when the box is up to date.")
@handle_errors
def box_build(name: str, force: bool) -> None:
    """Build the box (Debian bookworm, cloud kernel, systemd, sshd, python3) and add it to Vagrant."""
    info = boxes.build_box(name, force=force, log=say)
    state = "up to date, skipped" if info.cached else f"built in {info.seconds:.0f}s"
    say(f"{info.name}: {state} ({info.size / 2**20:.0f} MiB, {info.path})")


@box_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@handle_errors
def box_list(as_json: bool) -> None:
    """Boxes in labkit's private VAGRANT_HOME."""
    rows = boxes.list_boxes()
    for r in rows:
        r["size"] = boxes.box_size(r["name"])
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    out.print(boxes_table(rows))


@box_group.command("rm")
@click.argument("name", default="labkit/debian12")
@handle_errors
def box_rm(name: str) -> None:
    """Remove the box from Vagrant and its volume from libvirt's pool."""
    boxes.remove_box(name, log=say)



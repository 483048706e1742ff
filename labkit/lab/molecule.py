"""``labkit init --molecule [SCENARIO]``: an ansible-native Molecule scenario for an existing role.

Molecule's drivers are on their way out: a scenario now brings its own create and destroy
playbooks and its own inventory. The scenario written here has

- ``lab.yml``: the hosts, a labkit lab (Debian containers and a VM on its own kernel);
- ``create.yml`` / ``destroy.yml``: ``labkit up`` / ``labkit down`` of that lab, and a link
  ``inventory/labkit.yml`` to the inventory labkit keeps current (``labkit inventory --path``);
- ``molecule.yml``: no driver, no platforms; ``inventory/`` given to every step and to the
  tests, ``MOLECULE_INVENTORY_FILE`` naming the lab's inventory (tests that read it run
  unchanged); the role's own converge, prepare and verify playbooks and testinfra tests, reused
  from its existing scenario (``molecule/default``) where it has them.

Nothing is written unless all of it can be: the files are made in a folder beside the
scenario's and moved into place at the end.
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from labkit.errors import UsageError
from labkit.lab.spec import load_lab
from labkit.paths import PKG_DIR

TEMPLATES = PKG_DIR / "templates" / "molecule"
SCENARIO_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# the playbooks of a scenario Molecule runs besides create and destroy, in the order it runs them
PLAYBOOKS = ("prepare", "converge", "side_effect", "verify", "cleanup")
WRITTEN = ("molecule.yml", "lab.yml", "create.yml", "destroy.yml", "inventory/inventory.yml", "inventory/.gitignore")
# what a pre-native scenario (driver, platforms) has that an ansible-native one takes as it is
CARRIED = ("dependency", "prerun", "role_name_check")


class _Dumper(yaml.SafeDumper):
    """YAML as yamllint's default (and ansible-lint's) wants it: lists indented under their key."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


def _dump(data: Any) -> str:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, width=100, default_flow_style=False)


@dataclass
class Scenario:
    """What ``labkit init --molecule`` writes (``files``: path in the scenario -> text) and
    what it reuses of the role's own scenario (said to the user)."""

    role: Path
    name: str
    directory: Path
    lab: str
    files: dict[str, str] = field(default_factory=dict)
    reused: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what could not be carried over, and why


def _dict(value: Any) -> dict[str, Any]:
    """A mapping of a YAML file as it is, or an empty one (a key missing, null, or not a mapping)."""
    return value if isinstance(value, dict) else {}


def is_role(folder: Path) -> bool:
    return any((folder / d / f"main.{ext}").is_file() for d in ("tasks", "meta", "handlers", "defaults")
               for ext in ("yml", "yaml"))


def _yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, yaml.YAMLError) as e:
        where = getattr(getattr(e, "problem_mark", None), "line", None)
        raise UsageError(f"{path}{f':{where + 1}' if where is not None else ''}: cannot read it: {e}",
                         "fix the file, or move it away and run `labkit init --molecule` again") from None


def _galaxy_info(role: Path) -> dict[str, Any]:
    for f in ("meta/main.yml", "meta/main.yaml"):
        meta = _yaml(role / f)
        if meta is not None:
            return _dict(_dict(meta).get("galaxy_info"))
    return {}


def galaxy_name(role: Path) -> tuple[str, str]:
    """(namespace, name) of a role as Molecule's prerun (ansible-compat) computes them: meta's
    galaxy_info namespace (else its author, unless that is a person's name) and role_name (else
    the folder's name, ansible-compat's way: "ansible-" taken off before "ansible-role-" could be)."""
    info = _galaxy_info(role)
    ns = str(info.get("namespace") or info.get("author") or "")
    if re.match(r"^\w+ \w+", ns):
        ns = ""
    name = str(info.get("role_name") or "") or re.sub(r"(ansible-|ansible-role-)", "", role.resolve().name).split(
        ".", maxsplit=2)[-1]
    return ns, name


def short_name(role: Path) -> str:
    """The role's name for people (and its lab's): meta's role_name, else its folder's name
    without ``ansible-role-`` (``ansible-role-nginx`` -> ``nginx``)."""
    return str(_galaxy_info(role).get("role_name") or "") or re.sub(
        r"^ansible-(role-)?", "", role.resolve().name).split(".", maxsplit=2)[-1]


def lab_name(role_name: str, scenario: str) -> str:
    """A lab name (lowercase letters, digits, '-', a letter first, at most 20) from the role's
    and the scenario's."""
    base = role_name if scenario == "default" else f"{role_name}-{scenario}"
    s = re.sub(r"[^a-z0-9]+", "-", base.lower()).strip("-")
    s = re.sub(r"^[^a-z]+", "", s)[:20].strip("-")
    return s or "molecule"


def _default_of(value: str) -> str:
    """``${MOLECULE_PLAYBOOK:-converge.yml}`` -> ``converge.yml`` (Molecule's own interpolation,
    for a value read here without Molecule)."""
    return re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*:?-([^}]*)\}", r"\1", value)


def _source_playbooks(src: Path, cfg: dict) -> dict[str, Path]:
    """The playbooks of the role's existing scenario ``src``: those its molecule.yml names
    (``provisioner.playbooks`` before ansible-native, ``ansible.playbooks`` after), else the
    files by their usual names."""
    named = {**_dict(_dict(cfg.get("provisioner")).get("playbooks")), **_dict(_dict(cfg.get("ansible")).get("playbooks"))}
    out = {}
    for step in PLAYBOOKS:
        candidates = [_default_of(str(named[step]))] if isinstance(named.get(step), str) else []
        candidates += [f"{step}.yml", f"{step}.yaml"]
        for c in candidates:
            p = (src / c) if not Path(c).is_absolute() else Path(c)
            if p.is_file():
                out[step] = p
                break
    return out


def _tests_dir(src: Path, cfg: dict) -> Path | None:
    """The testinfra tests of the role's existing scenario, if it has any."""
    d = src / _default_of(str(_dict(cfg.get("verifier")).get("directory") or "tests"))
    if d.is_dir() and (any(d.glob("test_*.py")) or any(d.glob("*_test.py"))):
        return d
    return None


def _rel(path: Path, start: Path) -> str:
    """``path`` relative to the scenario folder (Molecule resolves the playbooks and the tests'
    folder from there)."""
    return os.path.relpath(path.resolve(), start.resolve())


def plan(role: str | Path, scenario: str = "default", *, force: bool = False) -> Scenario:
    """What ``labkit init --molecule SCENARIO`` would write for the role in folder ``role``;
    refused (UsageError, nothing written) for a folder that is no role, a bad scenario name, or
    an existing scenario without ``force``."""
    role = Path(role)
    if not role.is_dir() or not is_role(role):
        raise UsageError(f"{role.resolve()}: not an Ansible role (no tasks/main.yml, meta/main.yml, handlers/ or "
                         "defaults/main.yml)", "run it in the role's folder, or give it with --role DIR")
    if not SCENARIO_RE.match(scenario):
        raise UsageError(f"scenario name {scenario!r}: letters, digits, '_', '.' and '-' only, a letter or digit "
                         "first", "e.g. `labkit init --molecule labkit`")
    target = role / "molecule" / scenario
    if (target / "molecule.yml").exists() and not force:
        keep = "its converge, prepare and verify playbooks and tests/ are kept"
        raise UsageError(
            f"{target}/molecule.yml exists",
            ("write a scenario beside it that reuses its converge and tests: `labkit init --molecule labkit`; "
             if scenario == "default" else "") + f"or --force to make this one labkit's ({keep})")
    if target.exists() and not target.is_dir():
        raise UsageError(f"{target} exists and is not a folder", "move it away, or name another scenario")
    default = role / "molecule" / "default"
    src = target if (target / "molecule.yml").exists() else (
        default if (default / "molecule.yml").is_file() or default.is_dir() else None)
    cfg = _yaml(src / "molecule.yml") if src is not None else None
    cfg = cfg if isinstance(cfg, dict) else {}
    ns, name = galaxy_name(role)
    sc = Scenario(role, scenario, target, lab_name(short_name(role), scenario))

    found = _source_playbooks(src, cfg) if src is not None else {}
    tests = _tests_dir(src, cfg) if src is not None else None
    old_verifier = _dict(cfg.get("verifier"))
    old_name = old_verifier.get("name")
    # testinfra when the scenario used it (or said nothing and has tests but no verify playbook)
    testinfra = tests is not None and (old_name == "testinfra" or "verify" not in found)
    playbooks: dict[str, str] = {"create": "create.yml", "destroy": "destroy.yml"}
    for step, path in found.items():
        if step == "verify" and testinfra:
            continue  # not Molecule's verify step when testinfra verifies
        playbooks[step] = _rel(path, target)
        sc.reused.append(f"{_rel(path, role)} ({step})")
    if "converge" not in playbooks:
        sc.files["converge.yml"] = (TEMPLATES / "converge.yml").read_text()
        playbooks["converge"] = "converge.yml"
    verifier: dict[str, Any]
    if testinfra and tests is not None:
        verifier = {"name": "testinfra", "directory": _rel(tests, target)}
        sc.reused.append(f"{_rel(tests, role)}/ (testinfra tests, unchanged)")
    else:
        verifier = {"name": "ansible"}
        if "verify" not in playbooks:
            sc.files["verify.yml"] = (TEMPLATES / "verify.yml").read_text()
            playbooks["verify"] = "verify.yml"
    options = dict(old_verifier.get("options") or {}) if verifier["name"] == (old_name or "ansible") else {}
    if verifier["name"] == "testinfra":
        # testinfra's ansible backend reads the scenario's inventory folder: the lab's hosts
        options["ansible-inventory"] = "${MOLECULE_SCENARIO_DIRECTORY}/inventory/"
    if options:
        verifier["options"] = options

    data: dict[str, Any] = {k: cfg[k] for k in CARRIED if k in cfg}
    if "role_name_check" not in data and not re.match(r"[a-z0-9][a-z0-9_-]+\.[a-z][a-z0-9_]+$",
                                                      f"{ns}.{name}" if ns else name):
        data["role_name_check"] = 1  # Molecule's prerun would refuse the role's name: only warn
        sc.notes.append(f"role_name_check: 1: meta/main.yml gives no Galaxy name ({ns + '.' if ns else ''}{name} "
                        "is not namespace.role_name), which Molecule's prerun refuses by default")
    data["ansible"] = _ansible_section(cfg, playbooks)
    data["verifier"] = verifier
    sequence = ["dependency"] if ("dependency" in cfg or _has_requirements(role)) else []
    sequence += ["destroy", "syntax", "create"]
    sequence += [s for s in ("prepare", "converge") if s in playbooks]
    sequence += ["idempotence"] + (["side_effect"] if "side_effect" in playbooks else [])
    sequence += ["verify"] + (["cleanup"] if "cleanup" in playbooks else []) + ["destroy"]
    data["scenario"] = {"name": scenario, "test_sequence": sequence}
    sc.files["molecule.yml"] = _header(sc, src) + _dump(data)
    sc.files["lab.yml"] = _lab_file(sc, short_name(role))
    sc.files["create.yml"] = (TEMPLATES / "create.yml").read_text()
    sc.files["destroy.yml"] = (TEMPLATES / "destroy.yml").read_text()
    sc.files["inventory/inventory.yml"] = (TEMPLATES / "inventory.yml").read_text()
    sc.files["inventory/.gitignore"] = "# the link `molecule create` makes to the lab's inventory\nlabkit.yml\n"
    inventory = _dict(_dict(cfg.get("provisioner")).get("inventory"))
    for group, values in _dict(inventory.get("group_vars")).items():
        sc.files[f"inventory/group_vars/{group}.yml"] = "---\n" + _dump(values)
        sc.reused.append(f"provisioner.inventory.group_vars.{group} (now inventory/group_vars/{group}.yml)")
    left = [k for k in ("driver", "platforms") if k in cfg]
    if left:
        sc.notes.append(f"not carried over from {_rel(src or target, role)}/molecule.yml: {', '.join(left)} "
                        "(lab.yml says the hosts now)")
    if inventory.get("host_vars"):
        sc.notes.append("provisioner.inventory.host_vars not carried over: the lab's hosts have other names "
                        "(put such variables in inventory/group_vars/, by group: containers, vms, debian12, vm)")
    return sc


def _has_requirements(role: Path) -> bool:
    return any((role / f).is_file() for f in ("requirements.yml", "meta/requirements.yml",
                                              "collections.yml", "collections/requirements.yml"))


def _ansible_section(cfg: dict, playbooks: dict[str, str]) -> dict[str, Any]:
    """molecule.yml's ``ansible:``: the inventory folder for every step, the role's own
    environment and settings carried over, MOLECULE_INVENTORY_FILE naming the lab's inventory."""
    old, prov = _dict(cfg.get("ansible")), _dict(cfg.get("provisioner"))
    args = [a for a in _dict(_dict(old.get("executor")).get("args")).get("ansible_playbook") or []
            if not str(a).startswith(("--inventory", "-i"))]
    env = {**_dict(prov.get("env")), **_dict(old.get("env")),
           "MOLECULE_INVENTORY_FILE": "${MOLECULE_SCENARIO_DIRECTORY}/inventory/labkit.yml"}
    out: dict[str, Any] = {"executor": {"backend": "ansible-playbook", "args": {"ansible_playbook": [
        "--inventory=${MOLECULE_SCENARIO_DIRECTORY}/inventory/", *args]}}}
    ansible_cfg = {**_dict(prov.get("config_options")), **_dict(old.get("cfg"))}
    if ansible_cfg:
        out["cfg"] = ansible_cfg
    out["env"] = env
    out["playbooks"] = playbooks
    return out


def _header(sc: Scenario, src: Path | None) -> str:
    reused = "".join(f"\n#   {r}" for r in sc.reused) or " nothing (the role had no scenario)"
    return (f"---\n# Molecule scenario '{sc.name}', written by `labkit init --molecule {sc.name}`: ansible-native\n"
            "# (no driver, no platforms). create.yml brings the hosts of lab.yml up with labkit (containers\n"
            "# and a VM on its own kernel) and links the lab's inventory into inventory/, which every step\n"
            "# and the tests read; destroy.yml takes the lab down. Molecule runs the role's converge,\n"
            f"# idempotence and verify as it always does:   molecule test -s {sc.name}\n"
            f"# Reused from the role's own scenario:{reused}\n")


def _lab_file(sc: Scenario, role_name: str) -> str:
    return f"""---
# The hosts of Molecule scenario '{sc.name}' of role {role_name}, a labkit lab: `molecule create`
# runs `labkit up -f` this file, `molecule destroy` runs `labkit down -f` it. Molecule converges
# the role on them; labkit's own roles only make the hosts. Every key: `labkit schema`.
name: {sc.lab}
students: 1
# Offline-built distros: debian:11, debian:12, debian:13 (busybox has no Python: no role runs
# there); registry ones (`labkit images list`) in connected places.
containers: [debian:12, debian:13]
# The VM boots its own kernel (vm: {{enabled: false}} for containers only).
vm: {{enabled: true, memory: 512}}
provision:
  packages: []
"""


def write(sc: Scenario) -> list[Path]:
    """Write the scenario: every file made in a folder beside it first, then moved into place
    (a new scenario as one rename), so a failure leaves nothing half-made. The lab file is
    checked (``load_lab``) before anything is moved."""
    sc.directory.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{sc.name}.", dir=sc.directory.parent))
    try:
        for rel, text in sc.files.items():
            p = stage / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(text)
        load_lab(stage / "lab.yml")  # what is written must itself be valid
        if not sc.directory.exists():
            stage.chmod(0o755)
            stage.rename(sc.directory)
        else:  # --force on an existing scenario: labkit's files replaced, the role's own kept
            for rel in sc.files:
                dest = sc.directory / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                (stage / rel).replace(dest)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return [sc.directory / rel for rel in sc.files]

"""The lab file: a typed, frozen model validated once, at load.

Every error names the file, the key path (``containers[1].distro``), the line
when known, and what is allowed. Unknown keys are errors, so a typo never turns
silently into a default.
"""
from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from labkit import names
from labkit.engines.capabilities import DEFAULT, NAMES, caps
from labkit.errors import SpecError
from labkit.lab import catalog
from labkit.lab.roster import load_roster, roster_entries  # noqa: F401 - part of this module's API

NAME_RE = r"^[a-z][a-z0-9-]{0,19}$"           # lab name: a DNS label part, short enough for libvirt names
STUDENT_RE = r"^[a-z0-9][a-z0-9-]{0,19}$"     # student id
MEMORY_RE = r"^[1-9][0-9]*[kmg]?$"
USER_RE = r"^[a-z_][a-z0-9_-]{0,30}$"
PACKAGE_RE = r"^[a-zA-Z0-9][a-zA-Z0-9.+_-]*$"
REGISTRY_RE = r"^[a-zA-Z0-9.-]+(:[0-9]+)?(/[a-z0-9._/-]+)?$"
ROLE_RE = r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$"
BOX_RE = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}(/[A-Za-z0-9][A-Za-z0-9._-]{0,63})?$"  # Vagrant's NAME or ORG/NAME


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


ENGINES = NAMES  # labkit.engines.capabilities: the engines labkit drives
Engine = Literal["docker", "podman", "lxc"]  # the same, spelled out for the schema
assert set(get_args(Engine)) == set(NAMES), "spec.Engine names the engines of labkit.engines.capabilities"


def _engine_ok(v: Any) -> Any:
    if isinstance(v, str) and v not in ENGINES:
        close = difflib.get_close_matches(v, ENGINES, n=1)
        raise ValueError(f"unknown engine {v!r}; " + (f"did you mean '{close[0]}'? " if close else "")
                         + f"engines: {', '.join(ENGINES)}")
    return v


Init = Literal["none", "tini", "systemd"]
INITS = get_args(Init)
DEFAULT_INIT = "tini"  # reaps orphans, passes signals on, boots nothing (docs/engines/init.md says why)


class Container(_Model):
    """One container per student for this distro (on this engine)."""

    distro: str = Field(description="Distro reference from the catalogue, e.g. debian:12, busybox, ubuntu:24.04")
    engine: Engine = Field("docker", description=(
        "Container engine: docker, podman or lxc (default: the lab's `engine:`, else docker)"))
    user: Annotated[str, Field(pattern=USER_RE)] | None = Field(None, description=(
        "Podman only: run the container rootless, as this existing non-root user of the lab server "
        "(it needs /etc/subuid and /etc/subgid entries: `labkit doctor` checks)"))
    init: Init | None = Field(None, description=(
        "PID 1 of the container: none (`sleep`: nothing reaps orphans), tini (the engine's --init: "
        "reaps orphans, passes signals on, starts no service), systemd (an image with systemd, booted "
        "as PID 1: services and handlers as on a server; Debian-family distros). Default: the lab's "
        "`init:`. LXC containers boot their own init: leave it out"))

    @field_validator("engine", mode="before")
    @classmethod
    def _engine(cls, v: Any) -> Any:
        return _engine_ok(v)

    @model_validator(mode="after")
    def _user_only_for_podman(self) -> Container:
        if self.user is not None and not caps(self.engine).rootless_users:
            raise ValueError(f"user: rootless containers are Podman's (engine: podman); engine {self.engine} "
                             "runs its containers as root: drop user:")
        if self.user == "root":
            raise ValueError("user: root is rootful Podman: leave user: out for that")
        return self

    @model_validator(mode="after")
    def _init_fits(self) -> Container:
        if self.init is not None and caps(self.engine).system_container:
            raise ValueError(f"init: {self.engine} containers boot their own init; drop init: from this entry")
        if self.init == "systemd" and self.spec.pkg_mgr != "apt":
            raise ValueError(f"init: systemd needs a Debian-family distro (its systemd packages); {self.distro} "
                             "has none: use init: tini for it")
        return self

    @property
    def pid1(self) -> str:
        """The init this container runs as PID 1: none, tini or systemd ('' for system containers)."""
        return "" if caps(self.engine).system_container else (self.init or "none")

    @property
    def short(self) -> str:
        """The host's short name (``labkit shell`` takes it): ``debian12``, ``debian12-podman``..."""
        return names.host_slug(self.spec.slug, self.engine, self.user or "")

    @field_validator("distro")
    @classmethod
    def _known(cls, v: str) -> str:
        try:
            return catalog.get(v).ref
        except SpecError as e:
            raise ValueError(f"{e.message}; {e.hint}") from None

    @property
    def spec(self) -> catalog.Distro:
        return catalog.get(self.distro)


class VM(_Model):
    """The student's Vagrant VM (libvirt)."""

    enabled: bool = Field(True, description="Create one VM per student")
    box: Annotated[str, Field(pattern=BOX_RE)] = Field(
        "labkit/debian12", description="Vagrant box name (labkit builds labkit/debian12 offline)")
    memory: int = Field(512, ge=256, le=65536, description="Memory in MiB: 768, or with a unit: 768m, 1g")
    cpus: int = Field(1, ge=1, le=16, description="Virtual CPUs")
    accel: Literal["auto", "kvm", "qemu"] = Field(
        "auto", description="auto: KVM when it really works, else QEMU emulation (TCG)")

    @field_validator("memory", mode="before")
    @classmethod
    def _mib(cls, v: Any) -> Any:
        """``768m``, ``1g``, ``768`` (MiB): the same units as ``limits.memory``."""
        if isinstance(v, str):
            m = re.fullmatch(r"\s*([0-9]+)\s*([kmg]i?b?)?\s*", v.lower())
            if not m:
                raise ValueError(f"{v!r} is not a size: give MiB (768) or a unit (768m, 1g)")
            n, unit = int(m.group(1)), (m.group(2) or "m")[0]
            return {"k": n // 1024, "m": n, "g": n * 1024}[unit]
        return v


class Limits(_Model):
    """Resource limits for every student container."""

    memory: Annotated[str, Field(pattern=MEMORY_RE)] = Field("256m", description="Memory limit (e.g. 256m, 1g)")
    cpus: float = Field(1.0, gt=0, le=64, description="CPU quota in cores")
    pids: int = Field(256, ge=16, le=65536, description="Maximum number of processes")


class RoleEntry(_Model):
    """One role of ``provision.roles``: applied by a play of its own."""

    role: Annotated[str, Field(pattern=ROLE_RE)] = Field(description="Role name (or namespace.collection.role)")
    hosts: str | None = Field(None, description="Host pattern (default: provision.hosts)")
    vars: dict[str, Any] = Field(default_factory=dict, description="Role variables")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        return {"role": data} if isinstance(data, str) else data


class Provision(_Model):
    """What the student_env role puts on every host."""

    user: Annotated[str, Field(pattern=USER_RE)] = Field(
        "student", description="Login name of the student account")
    packages: list[Annotated[str, Field(pattern=PACKAGE_RE)]] = Field(
        default_factory=lambda: ["less"],
        description="Packages installed with each distro's own package manager (not on BusyBox)")
    motd: bool = Field(True, description="Write a message of the day naming the distro and kernel")
    # the lesson's own content and the user's own roles (paths relative to the lab file)
    prepare: list[str] = Field(default_factory=list, description=(
        "Playbooks run before the converge (once per `labkit up`/`labkit test`; not checked for idempotence)"))
    playbooks: list[str] = Field(default_factory=list, description=(
        "Your playbooks, run on the lab's hosts after labkit's own roles (never on a lab server)"))
    roles: list[RoleEntry] = Field(default_factory=list, description=(
        "Your roles, one play each: a name, or {role, hosts, vars}; after the playbooks"))
    roles_path: list[str] = Field(default_factory=list, description="Folders that hold your roles")
    collections_path: list[str] = Field(default_factory=list, description=(
        "Folders of pre-installed collections (ansible_collections/...): nothing is fetched at run time"))
    extra_vars: dict[str, Any] | str = Field(default_factory=dict, description=(
        "Extra variables for your plays: a mapping, or @FILE (YAML or JSON)"))
    group_vars: dict[str, dict[str, Any]] = Field(default_factory=dict, description=(
        "Variables per inventory group of the lab (see `labkit inventory`), e.g. {python: {x: 1}}"))
    hosts: str = Field("python", description=(
        "The default host pattern of your plays (group 'python': every host that can run modules, "
        "i.e. all but BusyBox)"))
    skip_tags: list[str] = Field(default_factory=lambda: ["molecule-notest", "notest"], description=(
        "Tags skipped in every run (Molecule's defaults); molecule-idempotence-notest is also "
        "skipped on the idempotence check"))
    mitogen: bool = Field(True, description=(
        "Run your content with Mitogen's strategy (one Python per host for a run: about 3x faster "
        "on Docker containers and VMs); false runs it as plain Ansible (so does LABKIT_MITOGEN=0)"))


SSH_KEY_RE = r"^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh\.com) [A-Za-z0-9+/=]+( [^\n]*)?$"


class Access(_Model):
    """The student door (`labkit serve`): how students get into their own hosts."""

    ssh_port: int = Field(2222, ge=1, le=65535, description="Port of the SSH gate")
    https_port: int = Field(8443, ge=1, le=65535, description="Port of the web page (HTTPS)")
    idle_timeout: int = Field(1800, ge=10, le=86400, description=(
        "Seconds without input after which a student's session is closed: 1800, or 30m, 2h"))
    ssh_keys: dict[Annotated[str, Field(pattern=STUDENT_RE)], Annotated[str, Field(pattern=SSH_KEY_RE)]] = Field(
        default_factory=dict, description=(
            "Public keys a student may log in with besides their password: {s01: 'ssh-ed25519 AAAA...'} "
            "(a roster's ssh_key column fills it)"))

    @field_validator("idle_timeout", mode="before")
    @classmethod
    def _seconds(cls, v: Any) -> Any:
        if isinstance(v, str):
            m = re.fullmatch(r"\s*([0-9]+)\s*([smh]?)\s*", v.lower())
            if not m:
                raise ValueError(f"{v!r} is not a time: give seconds (1800) or a unit (30m, 2h)")
            return int(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]
        return v


class Lab(_Model):
    """A lab: for each student, one VM and one container per distro."""

    name: Annotated[str, Field(pattern=NAME_RE)] = Field(description="Lab name, used in every resource name")
    students: list[Annotated[str, Field(pattern=STUDENT_RE)]] = Field(
        min_length=1, max_length=500, description="Student ids (or a count: 3 -> s01, s02, s03)")
    engine: Engine = Field("docker", description=(
        "The engine of every container entry that names none: docker, podman or lxc"))
    init: Init = Field("tini", description=(
        "PID 1 of every Docker and Podman container entry that names none: none, tini (default) or "
        "systemd (see containers[].init)"))
    containers: list[Container] = Field(default_factory=list, max_length=20)
    vm: VM = Field(default_factory=VM)
    limits: Limits = Field(default_factory=Limits)
    provision: Provision = Field(default_factory=Provision)
    registry: str | None = Field(
        None, pattern=REGISTRY_RE,
        description="Registry (mirror) for registry-backed distros, e.g. localhost:5000")
    tests: list[str] = Field(default_factory=list, description=(
        "Your pytest/testinfra test files or folders, run by `labkit verify` and `labkit test` "
        "beside K1..K12 (paths relative to the lab file)"))
    access: Access = Field(default_factory=Access)
    # --trust for this command: never from the lab file (a file cannot vouch for itself)
    _trusted: bool = PrivateAttr(False)

    @property
    def trusted(self) -> bool:
        """The lab file's variables and tests' folder are trusted as code (``--trust``)."""
        return self._trusted

    def with_trust(self, trust: bool) -> Lab:
        """This lab, trusted (``--trust``) or not, for one command."""
        lab = self.model_copy()
        lab._trusted = trust
        return lab

    @model_validator(mode="before")
    @classmethod
    def _shorthands(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        n = data.get("students")
        if isinstance(n, int) and not isinstance(n, bool):
            if not 1 <= n <= 500:
                raise ValueError("students: a count must be between 1 and 500")
            width = max(2, len(str(n)))
            data["students"] = [f"s{i:0{width}d}" for i in range(1, n + 1)]
        cs = data.get("containers")
        eng = data.get("engine", DEFAULT)
        _engine_ok(eng)
        if isinstance(cs, list):
            cs = [{"distro": c} if isinstance(c, str) else c for c in cs]
            if isinstance(eng, str) and eng != DEFAULT:  # the lab-wide default engine
                cs = [{**c, "engine": c.get("engine", eng)} if isinstance(c, dict) else c for c in cs]
            init = data.get("init", DEFAULT_INIT)  # the lab-wide init, for the engines that take one
            if isinstance(init, str):
                cs = [{**c, "init": c.get("init", init)} if isinstance(c, dict) and c.get("engine", DEFAULT) in ENGINES
                      and not caps(c.get("engine", DEFAULT)).system_container else c for c in cs]
            data["containers"] = cs
        return data

    @field_validator("students")
    @classmethod
    def _unique_students(cls, v: list[str]) -> list[str]:
        seen: set[str] = set()
        for s in v:
            if s in seen:
                raise ValueError(f"student id '{s}' appears twice")
            seen.add(s)
        return v

    @field_validator("containers")
    @classmethod
    def _unique_distros(cls, v: list[Container]) -> list[Container]:
        seen: dict[str, int] = {}
        for i, c in enumerate(v):
            if c.short in seen:
                what = f"distro '{c.distro}'" + ("" if caps(c.engine).primary else f" on engine {c.engine}") + (
                    f" for user {c.user}" if c.user else "")
                raise ValueError(f"{what} is listed twice (containers[{seen[c.short]}] and containers[{i}])")
            seen[c.short] = i
        return v

    @model_validator(mode="after")
    def _keys_of_students(self) -> Lab:
        unknown = sorted(set(self.access.ssh_keys) - set(self.students))
        if unknown:
            raise ValueError(f"access.ssh_keys: {', '.join(unknown)} not among the students")
        return self

    @model_validator(mode="after")
    def _something_to_make(self) -> Lab:
        if not self.containers and not self.vm.enabled:
            raise ValueError("the lab has no containers and no VM: add containers or set vm.enabled: true")
        return self


DEFAULT_LAB: dict[str, Any] = {
    "name": "demo",
    "students": ["s01"],
    "containers": ["debian:11", "debian:12", "debian:13", "busybox"],
    "vm": {"enabled": True},
}


# ---------------------------------------------------------------------------- loading

def _line_map(text: str) -> dict[tuple, int]:
    """Map each key path in a YAML document to its 1-based line."""
    lines: dict[tuple, int] = {}
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return lines

    def walk(node: yaml.Node | None, path: tuple[str | int, ...]) -> None:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                p = path + (k.value,)
                lines[p] = k.start_mark.line + 1
                walk(v, p)
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                p = path + (i,)
                lines[p] = v.start_mark.line + 1
                walk(v, p)

    walk(root, ())
    return lines


def _fmt_path(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _allowed_keys(model: type[BaseModel], loc: tuple) -> list[str]:
    """The keys allowed at ``loc`` (the parent of an unknown key)."""
    m: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        field = m.model_fields.get(part)
        if field is None:
            return []
        ann = field.annotation
        args = getattr(ann, "__args__", ()) or ()
        inner = next((a for a in (ann, *args) if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if inner is None:
            return []
        m = inner
    return list(m.model_fields)


def _clean_loc(loc: tuple) -> tuple:
    # pydantic adds validator names ("function-after[...]") to some locations
    return tuple(p for p in loc if isinstance(p, int) or not re.match(r"^[a-z-]+\[", str(p)))


def parse_lab(data: Any, source: str = "<lab>", text: str | None = None) -> Lab:
    """Validate ``data`` (already parsed YAML) into a Lab; errors raise SpecError."""
    if not isinstance(data, dict):
        raise SpecError(f"{source}: the lab file must be a mapping of keys (name, students, containers, ...)",
                        "see `labkit init` for a commented example")
    lines = _line_map(text) if text else {}
    try:
        return Lab.model_validate(data)
    except ValidationError as e:
        msgs = []
        for err in e.errors():
            loc = _clean_loc(tuple(err["loc"]))
            where = _fmt_path(loc)
            line = lines.get(loc) or lines.get(loc[:-1]) if loc else None
            at = f"{source}:{line}" if line else source
            if err["type"] == "extra_forbidden":
                allowed = _allowed_keys(Lab, loc[:-1])
                close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
                fix = f"did you mean '{close[0]}'? " if close else ""
                msgs.append(f"{at}: {where}: unknown key; {fix}allowed keys: {', '.join(allowed)}")
            else:
                msg = err["msg"].removeprefix("Value error, ")
                if err["type"] == "string_pattern_mismatch":
                    pat = (err.get("ctx") or {}).get("pattern", "")
                    msg = f"{err['input']!r} is not allowed: {PATTERN_WORDS.get(pat, f'must match {pat}')}"
                elif err["type"] == "missing" and loc:
                    # a required key is missing: a typo'd key next to it is the likely cause
                    typo = difflib.get_close_matches(str(loc[-1]), [str(k) for k in _unknown_keys(data, loc[:-1])], n=1)
                    if typo:
                        msg = f"missing; did you write '{typo[0]}' for '{loc[-1]}'?"
                msgs.append(f"{at}: {where}: {msg}")
        # unknown keys first: a typo is the cause, a missing key its consequence
        msgs.sort(key=lambda m: ": unknown key;" not in m)
        raise SpecError("\n".join(msgs)) from None


PATTERN_WORDS = {
    NAME_RE: "a lab name is lowercase letters, digits and '-', starting with a letter, up to 20 characters",
    STUDENT_RE: "a student id is lowercase letters, digits and '-', starting with a letter or digit, "
                "up to 20 characters",
    MEMORY_RE: "a size is a whole number with an optional unit k, m or g (e.g. 256m, 1g)",
    USER_RE: "a user name is lowercase letters, digits, '_' and '-', starting with a letter or '_', "
             "up to 31 characters",
    PACKAGE_RE: "a package name is letters, digits and . + _ -, starting with a letter or digit",
    REGISTRY_RE: "a registry is HOST[:PORT][/PATH], e.g. localhost:5000",
    ROLE_RE: "a role is a name (letters, digits, _ . -) or namespace.collection.role",
}


def _unknown_keys(data: Any, loc: tuple) -> list:
    node = data
    for part in loc:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return []
    return list(node) if isinstance(node, dict) else []


def load_lab(path: str | Path | None = None) -> Lab:
    """Load and validate a lab file; ``None`` gives the built-in default lab."""
    if path is None:
        return parse_lab(DEFAULT_LAB, "<default lab>")
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise SpecError(f"{p}: lab file not found", "give an existing file, or run `labkit init` to write one") from None
    except OSError as e:
        raise SpecError(f"{p}: cannot read the lab file: {e.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{p}:{mark.line + 1}" if mark else str(p)
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise SpecError(f"{where}: not valid YAML: {problem}") from None
    _resolve_paths(data, p, text)
    if isinstance(data, dict) and "roster" in data:
        if "students" in data:
            raise SpecError(f"{p}: give either students: or roster:, not both")
        roster = data.pop("roster")
        if not isinstance(roster, str) or not roster.strip():
            raise SpecError(f"{p}: roster: expected a file name (CSV or YAML), got {roster!r}")
        rp = _local_path(p.parent, roster, str(p), "roster")
        try:
            entries = roster_entries(rp)
        except SpecError as e:
            raise SpecError(f"{p}: roster: {e.message}", e.hint) from None
        data["students"] = [sid for sid, _ in entries]
        roster_keys = {sid: k for sid, k in entries if k}
        if roster_keys:
            given = data.get("access")
            access: dict[str, Any] = dict(given) if isinstance(given, dict) else {}
            data["access"] = {**access, "ssh_keys": {**roster_keys, **(access.get("ssh_keys") or {})}}
        try:
            lab = parse_lab(data, str(p), text)
        except SpecError as e:
            raise SpecError(e.message.replace(f"{p}:", f"{p} (roster {rp}):", 1), e.hint) from None
    else:
        lab = parse_lab(data, str(p), text)
    check_roles(lab, str(p), text)
    return lab


PATH_KEYS = ("prepare", "playbooks", "roles_path", "collections_path")


def _local_path(base: Path, value: str, at: str, key: str) -> Path:
    """``value`` of lab file key ``key`` as an absolute path (relative to ``base``); a value no
    file could have (a NUL, a name too long) is an error naming ``at`` and the key."""
    if "\0" in value:
        raise SpecError(f"{at}: {key}: {value!r}: a path cannot hold a NUL character")
    try:
        rp = (base / value).resolve()
        rp.exists()  # raises for a name too long, where exists() alone would not say why
    except OSError as e:
        raise SpecError(f"{at}: {key}: {value[:80]!r}: not a usable path: {e.strerror}") from None
    return rp


def _resolve_paths(data: Any, p: Path, text: str) -> None:
    """Make the lab file's paths absolute (relative to its folder) and check they exist:
    a missing one is an error naming the key path, its line and the resolved path."""
    if not isinstance(data, dict):
        return
    lines = _line_map(text)
    base = p.parent.resolve()

    def fix(value: Any, loc: tuple, want_dir: bool | None = None) -> Any:
        if not isinstance(value, str) or not value.strip():
            return value
        line = lines.get(loc)
        at = f"{p}:{line}" if line else str(p)
        rp = _local_path(base, value, at, _fmt_path(loc))
        if not rp.exists():
            raise SpecError(f"{at}: {_fmt_path(loc)}: {rp}: not found",
                            f"paths in the lab file are relative to its folder ({base})")
        if want_dir is True and not rp.is_dir():
            raise SpecError(f"{at}: {_fmt_path(loc)}: {rp}: not a folder")
        return str(rp)

    prov = data.get("provision")
    if isinstance(prov, dict):
        for key in PATH_KEYS:
            if isinstance(prov.get(key), list):
                prov[key] = [fix(v, ("provision", key, i), key.endswith("_path")) for i, v in enumerate(prov[key])]
        beside = base / "roles"  # like Ansible's roles/ beside a playbook
        if beside.is_dir() and (prov.get("roles") or prov.get("playbooks")) and str(beside) not in prov.get(
                "roles_path", []):
            prov["roles_path"] = [*(prov.get("roles_path") or []), str(beside)]
        ev = prov.get("extra_vars")
        if isinstance(ev, str) and ev.startswith("@"):
            prov["extra_vars"] = "@" + fix(ev[1:], ("provision", "extra_vars"), False)
    if isinstance(data.get("tests"), list):
        data["tests"] = [fix(v, ("tests", i)) for i, v in enumerate(data["tests"])]


def _is_dir(p: Path) -> bool:
    try:
        return p.is_dir()
    except OSError:  # a name too long for any file
        return False


def check_roles(lab: Lab, source: str, text: str | None = None) -> None:
    """Each role of provision.roles exists (a folder in the roles path, or a collection's role
    in collections_path or the installed ansible collections); else exit 2 naming it."""
    import ansible_collections  # the full `ansible` package's collections

    lines = _line_map(text) if text else {}
    colls = [Path(d) for d in lab.provision.collections_path] + [Path(next(iter(ansible_collections.__path__)))]
    for i, r in enumerate(lab.provision.roles):
        parts = r.role.split(".")
        if len(parts) == 3:
            ns, coll, name = parts
            cands = [(c / "ansible_collections" / ns / coll / "roles" / name) for c in colls[:-1]]
            cands.append(colls[-1] / ns / coll / "roles" / name)
        else:
            cands = [Path(d) / r.role for d in lab.provision.roles_path]
        if not any(_is_dir(c) for c in cands):
            line = lines.get(("provision", "roles", i))
            at = f"{source}:{line}" if line else source
            raise SpecError(f"{at}: provision.roles[{i}]: role '{r.role}' not found; looked in: "
                            + ", ".join(str(c) for c in cands),
                            "set provision.roles_path (or collections_path) to the folder that holds it")


def schema() -> dict:
    """The lab file's JSON schema (for editor completion)."""
    return Lab.model_json_schema()

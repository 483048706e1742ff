"""Every role is documented as its users expect (issue 14): ``meta/argument_specs.yml`` that the
real ``ansible-doc -t role`` renders, in step with ``defaults/main.yml``, and a README naming
every input. No engine needed: ansible-doc only reads the files.

ansible-doc exits 0 and prints nothing for a role it cannot find or document (also with
``-M roles``, which is the module path, not the roles path), so these tests read its JSON and
look for each role and each option in it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ROLES_DIR = ROOT / "roles"
ROLES = sorted(p.name for p in ROLES_DIR.iterdir() if p.is_dir())
# Keys the role argument spec format knows for one option (ansible's ArgumentSpecValidator).
OPTION_KEYS = {"type", "elements", "default", "choices", "description", "required", "options", "no_log",
               "aliases", "version_added", "mutually_exclusive", "required_if", "required_together",
               "required_one_of", "required_by", "apply_defaults"}


class _Loader(yaml.SafeLoader):
    """YAML as Ansible reads it, as far as these files go: ``!unsafe`` marks a string Ansible must
    not template (argument specs document defaults such as ``{{ labkit_image }}`` with it, since
    the validation task templates the whole spec)."""


_Loader.add_constructor("!unsafe", lambda loader, node: loader.construct_scalar(node))


def _yaml(path: Path):
    return yaml.load(path.read_text(), Loader=_Loader) if path.is_file() else None


def _spec(role: str) -> dict:
    data = _yaml(ROLES_DIR / role / "meta" / "argument_specs.yml")
    assert isinstance(data, dict) and "main" in (data.get("argument_specs") or {}), (
        f"roles/{role}/meta/argument_specs.yml is missing or has no argument_specs.main: "
        f"document the role's inputs there (see roles/lab_container/meta/argument_specs.yml)"
    )
    return data["argument_specs"]["main"]


def _defaults(role: str) -> dict:
    return _yaml(ROLES_DIR / role / "defaults" / "main.yml") or {}


def test_roles_are_found():
    assert {"lab_container", "lab_network", "lab_server", "lab_vm", "student_env"} <= set(ROLES)


@pytest.mark.parametrize("role", ROLES)
def test_role_has_argument_specs(role):
    spec = _spec(role)
    assert spec.get("short_description"), f"{role}: argument_specs.main has no short_description"
    assert spec.get("description"), f"{role}: argument_specs.main has no description"
    options = spec.get("options") or {}
    for name, opt in options.items():
        assert name.startswith(f"{role}_"), f"{role}: input {name} is not prefixed with the role's name"
        assert set(opt) <= OPTION_KEYS, f"{role}: {name} has unknown keys {sorted(set(opt) - OPTION_KEYS)}"
        assert opt.get("type"), f"{role}: {name} has no type"
        assert opt.get("description"), f"{role}: {name} has no description"
        if opt["type"] == "list":
            assert opt.get("elements"), f"{role}: list {name} does not say its elements' type"


@pytest.mark.parametrize("role", ROLES)
def test_templated_defaults_are_unsafe(role):
    """The validation task templates its whole argument spec: a documented default such as
    ``{{ labkit_image }}`` must be ``!unsafe`` or validation fails wherever that variable is unset."""
    path = ROLES_DIR / role / "meta" / "argument_specs.yml"
    if not path.is_file():
        pytest.fail(f"roles/{role}/meta/argument_specs.yml is missing")
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip().startswith("default:") and "{{" in line:
            assert "!unsafe" in line, f"roles/{role}/meta/argument_specs.yml:{n}: templated default without !unsafe"


@pytest.mark.parametrize("role", ROLES)
def test_argument_specs_match_defaults(role):
    """Every default is documented with the same value, and every documented input either has a
    default or is marked required: the spec cannot drift from what the role really takes."""
    options = _spec(role).get("options") or {}
    defaults = _defaults(role)
    undocumented = sorted(set(defaults) - set(options))
    assert not undocumented, f"{role}: defaults/main.yml has inputs argument_specs.yml does not document: {undocumented}"
    for name, opt in options.items():
        if name in defaults:
            assert not opt.get("required"), f"{role}: {name} has a default in defaults/main.yml, so it is never missing"
            assert "default" in opt and opt["default"] == defaults[name], (
                f"{role}: {name}: argument_specs.yml documents default {opt.get('default')!r}, "
                f"defaults/main.yml has {defaults[name]!r}"
            )
        else:
            assert opt.get("required"), f"{role}: {name} has no default in defaults/main.yml: mark it required"


@pytest.mark.parametrize("role", ROLES)
def test_role_has_readme_naming_every_input(role):
    readme = ROLES_DIR / role / "README.md"
    assert readme.is_file(), f"roles/{role}/README.md is missing (see roles/lab_vm/README.md)"
    text = readme.read_text()
    assert text.startswith(f"# {role}\n"), f"roles/{role}/README.md does not start with '# {role}'"
    missing = [name for name in _spec(role).get("options") or {} if f"`{name}`" not in text]
    assert not missing, f"roles/{role}/README.md does not document {missing}"


@pytest.fixture(scope="module")
def ansible_doc() -> dict:
    """The real ``ansible-doc -t role -r roles -j`` of every role, in one run."""
    exe = Path(sys.executable).parent / "ansible-doc"
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_ROLES_PATH=str(ROLES_DIR))
    p = subprocess.run([str(exe), "-t", "role", "-r", str(ROLES_DIR), "-j", *ROLES], env=env, cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, f"ansible-doc failed ({p.returncode}): {p.stderr[-2000:]}"
    return json.loads(p.stdout or "{}")


@pytest.mark.parametrize("role", ROLES)
def test_ansible_doc_renders_the_role(role, ansible_doc):
    assert role in ansible_doc, f"ansible-doc -t role -r roles {role} documents nothing (no or broken argument specs)"
    main = ansible_doc[role]["entry_points"]["main"]
    assert main.get("short_description")
    documented = set(main.get("options") or {})
    assert documented == set(_spec(role).get("options") or {})
    assert documented, f"{role}: ansible-doc shows no options"


@pytest.mark.parametrize("how", [["-M", "roles"], ["-r", "roles"], []], ids=["-M roles", "-r roles", "bare"])
def test_ansible_doc_text_output_lists_options(how):
    """What a user types in the checkout: ``ansible-doc -t role -M roles lab_container`` (or
    ``-r roles``, or nothing). ``-M`` is the modules path, which ansible-doc does not search for
    roles: the repository's ``ansible.cfg`` (``roles_path = roles``) is what finds them."""
    exe = Path(sys.executable).parent / "ansible-doc"
    env = {k: v for k, v in os.environ.items() if k not in ("ANSIBLE_ROLES_PATH", "ANSIBLE_CONFIG")}
    env["ANSIBLE_NOCOLOR"] = "1"
    p = subprocess.run([str(exe), "-t", "role", *how, "lab_container"], env=env, cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "ROLE: *lab_container*" in p.stdout or "ROLE: lab_container" in p.stdout, p.stdout[:500] + p.stderr
    for name in ("lab_container_image", "lab_container_memory", "lab_container_pull"):
        assert name in p.stdout


# One host per case, each in the group of the role it feeds; every play keeps a valid host so the
# run goes on to the next role. Variables come as host variables, as labkit's add_host gives them.
_CONTAINER = {"lab_container_image": "labkit/debian:12", "lab_container_hostname": "debian12",
              "lab_container_network": "labkit-t-a", "lab_container_server": "localhost",
              "lab_container_lab": "t", "lab_container_student": "a", "lab_container_distro": "debian:12"}
_STUDENT_ENV = {"student_env_lab": "t", "student_env_student": "a", "student_env_role": "container",
                "student_env_python": True, "student_env_pkg_mgr": "apt"}
_VM = {"lab_vm_lab": "t", "lab_vm_student": "a", "labkit_lab_dir": "/nonexistent/t"}
CASES = {
    # role: {host: (its variables, the argument the validation must name; None: valid)}
    "lab_container": {
        "c_ok": ({**_CONTAINER, "lab_container_pids": "{{ 100 + 28 }}", "lab_container_cpus": 2}, None),
        # as labkit's up.yml runs it: the labkit_* host variables, no lab_container_* given
        "c_ok_labkit_vars": ({"labkit_image": "labkit/busybox:1.35", "labkit_hostname": "busybox",
                              "labkit_network": "labkit-t-a", "labkit_server": "localhost", "labkit_lab": "t",
                              "labkit_student": "a", "labkit_distro": "busybox"}, None),
        "c_bad_pids": ({**_CONTAINER, "lab_container_pids": "lots"}, "lab_container_pids"),
        "c_bad_pull": ({**_CONTAINER, "lab_container_pull": "sometimes"}, "lab_container_pull"),
        "c_bad_cpus": ({**_CONTAINER, "lab_container_cpus": "two"}, "lab_container_cpus"),
        "c_unset": ({}, "labkit_image"),
    },
    "student_env": {
        "s_ok": (_STUDENT_ENV, None),
        "s_ok_busybox": ({**_STUDENT_ENV, "student_env_python": "false", "student_env_pkg_mgr": "none",
                          "student_env_packages": []}, None),
        # as labkit's up.yml gives a VM host (add_host), and as Molecule's inventory does (no pkg_mgr)
        "s_ok_labkit_vm": ({"labkit_lab": "t", "labkit_student": "a", "labkit_role": "vm", "labkit_python": True,
                            "labkit_pkg_mgr": "apt", "labkit_bootstrap": "",
                            "labkit_provision": {"user": "student", "packages": ["less"], "motd": True}}, None),
        "s_ok_molecule": ({"labkit_lab": "molecule", "labkit_student": "m1", "labkit_role": "container",
                           "labkit_python": False, "labkit_bootstrap": ""}, None),
        "s_unset": ({"labkit_lab": "t", "labkit_student": "a", "labkit_python": True}, "labkit_role"),
        "s_bad_role": ({**_STUDENT_ENV, "student_env_role": "robot"}, "student_env_role"),
        "s_bad_python": ({**_STUDENT_ENV, "student_env_python": "maybe"}, "student_env_python"),
        "s_bad_pkg_mgr": ({**_STUDENT_ENV, "student_env_pkg_mgr": "brew"}, "student_env_pkg_mgr"),
        "s_bad_packages": ({**_STUDENT_ENV, "student_env_packages": {"less": 1}}, "student_env_packages"),
        "s_bad_uid": ({**_STUDENT_ENV, "student_env_uid": "root"}, "student_env_uid"),
    },
    "lab_vm": {
        "v_ok": (_VM, None),
        "v_bad_memory": ({**_VM, "lab_vm_memory": "1g"}, "lab_vm_memory"),
        "v_bad_accel": ({**_VM, "lab_vm_accel": "hvf"}, "lab_vm_accel"),
        "v_bad_state": ({**_VM, "lab_vm_state": "stopped"}, "lab_vm_state"),
    },
    "lab_network": {
        "n_ok": ({"lab_network_lab": "t", "lab_network_names": [{"name": "labkit-t-a", "student": "a"}]}, None),
        "n_bad_state": ({"lab_network_state": "gone"}, "lab_network_state"),
        "n_bad_names": ({"lab_network_names": ["labkit-t-a"]}, "lab_network_names"),
    },
    "lab_server": {
        "srv_ok": ({}, None),
        "srv_bad_timeout": ({"lab_server_engine_timeout": "soon"}, "lab_server_engine_timeout"),
        "srv_bad_packages": ({"lab_server_packages": {"docker.io": True}}, "lab_server_packages"),
    },
}


def _playbook_json(d: Path, inventory: dict, plays: list, *args: str, **env: str) -> dict:
    """One real ansible-playbook run of ``plays`` on ``inventory`` (files written into ``d``), with
    the roles of this checkout; its JSON callback's output."""
    (d / "hosts.yml").write_text(yaml.safe_dump(inventory))
    (d / "play.yml").write_text(yaml.safe_dump(plays, sort_keys=False))
    full_env = dict(os.environ, ANSIBLE_ROLES_PATH=str(ROLES_DIR), ANSIBLE_STDOUT_CALLBACK="ansible.builtin.json",
                    ANSIBLE_NOCOLOR="1", ANSIBLE_LOCAL_TEMP=str(d / "tmp"), ANSIBLE_HOME=str(d / "home"), **env)
    exe = Path(sys.executable).parent / "ansible-playbook"
    p = subprocess.run([str(exe), "-i", str(d / "hosts.yml"), str(d / "play.yml"), *args],
                       env=full_env, cwd=d, capture_output=True, text=True, timeout=180)
    return json.loads(p.stdout)


@pytest.fixture(scope="module")
def validation_run(tmp_path_factory) -> dict[str, dict]:
    """One real ansible-playbook run: each role applied to its cases' hosts (connection local),
    only the argument validation task (tagged ``always``; the role's own tasks are skipped by
    ``--tags``). Returns each host's validation result."""
    d = tmp_path_factory.mktemp("validation")
    inventory = {"all": {"vars": {"ansible_connection": "local",
                                  "ansible_python_interpreter": sys.executable},
                         "children": {role: {"hosts": {h: v for h, (v, _) in cases.items()}}
                                      for role, cases in CASES.items()}}}
    plays = [{"name": f"Validate {role}", "hosts": role, "gather_facts": False, "roles": [role]} for role in CASES]
    out = _playbook_json(d, inventory, plays, "--tags", "labkit-validate-only")
    results: dict[str, dict] = {}
    for play in out["plays"]:
        for task in play["tasks"]:
            if "Validating arguments against arg spec 'main'" in task["task"]["name"]:
                results.update(task["hosts"])
    return results


@pytest.mark.parametrize("role, host", [(r, h) for r, cases in CASES.items() for h in cases])
def test_argument_validation_at_role_entry(validation_run, role, host):
    """Valid input passes the role's argument validation; a wrong type, an unknown choice or a
    missing labkit variable fails there, before the role's first task, naming the argument."""
    _, bad = CASES[role][host]
    assert host in validation_run, f"{host}: the validation task of {role} did not run"
    r = validation_run[host]
    if bad is None:
        assert not r.get("failed"), f"{host}: valid input refused: {r.get('msg')}"
    else:
        assert r.get("failed"), f"{host}: {role} accepted a bad {bad}"
        assert bad in r.get("msg", ""), f"{host}: the error does not name {bad}: {r.get('msg')}"


# labkit's up.yml runs student_env without its argument validation (every input comes from the
# validated lab file and labkit's catalogue): the converge script checks what it cannot run
# with before it changes anything. Each case runs the real script on this machine (connection
# local) and must stop at that check: a login name that would be shell code, packages that are
# not a list, an unknown role. The shell that runs it is never root (run as root, it drops to
# nobody): should the check ever let input through, the script cannot touch this machine's
# accounts or /etc/motd.
_WITNESS = "/tmp/labkit-unit-converge-witness"
BAD_INPUT = {
    "bad_user": ({**_STUDENT_ENV, "student_env_user": f"x; touch {_WITNESS}"}, "student_env_user"),
    "bad_user_type": ({**_STUDENT_ENV, "student_env_user": 1000}, "student_env_user"),
    "bad_packages": ({**_STUDENT_ENV, "student_env_packages": f"less; touch {_WITNESS}"}, "student_env_packages"),
    "bad_role": ({**_STUDENT_ENV, "student_env_role": "robot"}, "student_env_role"),
}


def test_converge_script_refuses_bad_input_before_any_change(tmp_path):
    Path(_WITNESS).unlink(missing_ok=True)
    inventory = {"all": {"vars": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable},
                         "hosts": {h: v for h, (v, _) in BAD_INPUT.items()}}}
    play = [{"name": "student_env as up.yml runs it", "hosts": "all", "gather_facts": False,
             "tasks": [{"ansible.builtin.import_role": {"name": "student_env", "rolespec_validate": False}}]}]
    shell = tmp_path / "unprivileged-sh"
    shell.write_text('#!/bin/sh\n[ "$(id -u)" = 0 ] || exec /bin/sh "$@"\n'
                     'exec setpriv --reuid=65534 --regid=65534 --clear-groups /bin/sh "$@"\n')
    shell.chmod(0o755)
    tmp_path.chmod(0o755)  # nobody runs the shell from here
    # the local connection's shell: raw's script runs in it
    out = _playbook_json(tmp_path, inventory, play, ANSIBLE_EXECUTABLE=str(shell))
    results = {h: r for play in out["plays"] for task in play["tasks"] for h, r in task["hosts"].items()}
    assert not Path(_WITNESS).exists(), "the converge script ran input as shell code"
    for host, (_, bad) in BAD_INPUT.items():
        r = results.get(host) or {}
        assert r.get("failed"), f"{host}: the converge script accepted a bad {bad}: {r}"
        out = r.get("stdout", "")
        assert f"labkit-failed: {bad}:" in out, f"{host}: the failure does not name {bad}: {out!r}"
        assert "labkit-changed" not in out, f"{host}: changed something before refusing: {out!r}"

"""A lab file's variables, handed to Ansible as data.

A lab file is often someone else's (a colleague's lesson, a download). Its roles and
playbooks are code, and running them is the instructor's decision; its variables
(``provision.extra_vars``, ``provision.group_vars``, ``provision.roles[].vars``) must stay
data. Two things would make them code:

- **Jinja in a value.** Ansible templates every string it is handed, so
  ``"{{ lookup('pipe', 'id') }}"`` would run on the lab server. Every string from the lab
  file is written as ``!unsafe`` (Ansible never templates it; see Ansible's "Unsafe or raw
  strings").
- **Variables that steer Ansible itself.** ``ansible_connection: local`` sends the lesson's
  roles to the lab server instead of the hosts; ``ansible_ssh_extra_args``,
  ``ansible_docker_extra_args``, ``ansible_host`` and the like redirect or extend the
  connection. Names of that kind (``ansible_*``, Ansible's magic variables such as
  ``hostvars`` or ``playbook_dir``) are refused, except the few in :data:`ALLOWED` that act
  only inside the host. ``--trust`` (or ``LABKIT_TRUST=1``) lifts both: the lab file is then
  code, like a playbook.
"""
from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from typing import Any

import yaml

from labkit.errors import SpecError

# ansible_* settings a lab file may set without --trust: each acts inside the host only
ALLOWED = frozenset({
    "ansible_become", "ansible_become_user", "ansible_python_interpreter", "ansible_timeout",
})
# Ansible's magic variables (docs: "Special Variables"): overriding one misleads roles about
# where they run or where their files are
MAGIC = frozenset({
    "environment", "group_names", "groups", "hostvars", "inventory_dir", "inventory_file",
    "inventory_hostname", "inventory_hostname_short", "omit", "play_hosts", "playbook_dir",
    "role_name", "role_names", "role_path", "vars",
})
TRUST_ENV = "LABKIT_TRUST"
HINT = ("remove it from the lab file, or, if you trust whoever wrote the lab file as you trust its "
        "playbooks, run with --trust (or LABKIT_TRUST=1); see the docs' Security page")


class Unsafe(str):
    """A string Ansible must not template (written as ``!unsafe``)."""


class Dumper(yaml.SafeDumper):
    """``yaml.SafeDumper`` that writes :class:`Unsafe` strings with Ansible's ``!unsafe`` tag."""


Dumper.add_representer(Unsafe, lambda d, v: d.represent_scalar("!unsafe", str(v)))


def trusted(flag: bool = False) -> bool:
    """Trust asked for: the ``--trust`` flag, or ``LABKIT_TRUST=1`` (CI pipelines)."""
    return flag or os.environ.get(TRUST_ENV, "").strip().lower() in ("1", "yes", "true")


def unsafe(value: Any) -> Any:
    """``value`` with every string (at any depth) marked :class:`Unsafe`; keys stay as they are."""
    if isinstance(value, str):
        return Unsafe(value)
    if isinstance(value, Mapping):
        return {k: unsafe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [unsafe(v) for v in value]
    return value


def steering(name: str) -> bool:
    """A variable name that steers Ansible (not plain data for the roles)."""
    return (name.startswith("ansible_") and name not in ALLOWED) or name in MAGIC


def _bad(where: str, mapping: Mapping[str, Any]) -> Iterator[str]:
    for k in mapping:
        if steering(str(k)):
            yield f"{where}.{k}"


def data(where: str, mapping: Mapping[str, Any], trust: bool) -> dict[str, Any]:
    """A lab file's variables at ``where`` (``provision.extra_vars`` ...) as Ansible should get
    them: checked and marked unsafe, or as they are when trusted. SpecError names each
    variable that steers Ansible."""
    if trust:
        return dict(mapping)
    bad = list(_bad(where, mapping))
    if bad:
        raise SpecError(f"{', '.join(bad)}: a lab file's variables are data, and "
                        f"{'these steer' if len(bad) > 1 else 'this steers'} Ansible itself "
                        "(where and how it connects, or what it runs on the lab server)", HINT)
    return unsafe(dict(mapping))


def group_vars(groups: Mapping[str, Mapping[str, Any]], trust: bool) -> dict[str, dict[str, Any]]:
    """``provision.group_vars``, each group's variables through :func:`data`."""
    return {g: data(f"provision.group_vars.{g}", v, trust) for g, v in groups.items()}


def dump(value: Any) -> str:
    """YAML for Ansible, with :class:`Unsafe` strings tagged."""
    return yaml.dump(value, Dumper=Dumper, sort_keys=False, default_flow_style=False)

"""labkit's Python API: one function per verb, for Python callers and the CLI alike. Nothing
here prints: progress goes through the ``log``/``on_event`` callbacks, failures raise
``labkit.errors.LabkitError``.

One module per verb or concern: ``select`` (which lab, its saved state, the lock),
``discover`` (what the servers have), ``planning`` (``--plan``), ``up``, ``down``, ``query``
(status, facts, verify, shell, report, inventory), ``converge`` (the lab file's own Ansible),
``prepare`` (lab servers), ``access`` (the students' door), ``grade``, ``reset`` and
``checkpoint`` (the instructor's tools during a class).
"""
from labkit.api import checkpoint
from labkit.api.access import Handout, access
from labkit.api.converge import ConvergeResult, converge, has_content, idempotence
from labkit.api.discover import (
                                 engine_scopes,
                                 engines,
                                 hosts,
                                 lab_servers,
                                 network_names,
                                 network_rows,
                                 ssh_config,
                                 vm_hosts,
                                 vm_resources,
)
from labkit.api.down import DownResult, down
from labkit.api.grade import grade
from labkit.api.planning import PlanReport, container_plan, context, network_name, network_plan, plan, vm_plan
from labkit.api.prepare import prepare
from labkit.api.query import (
                                 ReportResult,
                                 facts,
                                 inventory,
                                 report,
                                 shared_inventory,
                                 shell_command,
                                 status,
                                 verify,
)
from labkit.api.reset import ResetResult, reset
from labkit.api.select import (
                                 LAB_FILES,
                                 Selected,
                                 check_students,
                                 forget_lab,
                                 lab_lock,
                                 labs_up,
                                 resolve_lab,
                                 save_lab,
                                 select_lab,
)
from labkit.api.up import UpResult, measure_containers, package_warnings, up

__all__ = [
    "LAB_FILES", "ConvergeResult", "Handout", "access", "DownResult", "PlanReport", "ReportResult", "Selected", "UpResult",
    "check_students", "container_plan", "context", "converge", "down", "engine_scopes", "engines", "facts",
    "forget_lab", "grade", "has_content", "hosts", "idempotence", "inventory", "lab_lock", "lab_servers", "labs_up",
    "measure_containers", "network_name", "network_names", "network_plan", "network_rows", "package_warnings",
    "plan", "prepare", "report", "reset", "ResetResult", "checkpoint", "resolve_lab", "save_lab", "select_lab", "shared_inventory", "shell_command", "ssh_config", "status",
    "up", "verify", "vm_hosts", "vm_plan", "vm_resources",
]

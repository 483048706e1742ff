"""One error root for labkit: library code raises, only the CLI prints and exits.

The exit codes are one table (``EXIT_CODES``), printed in the documentation's
reference (docs/reference/commands.md) and by ``labkit --help``; every code is tested through the real CLI, so a pipeline can tell a
failed fact from a typo or a busy lab.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


# A task that failed on a host, as PlaybookFailed names it (labkit.ansible.runner reads them from
# the run's events).
@dataclass
class Failure:
    host: str
    task: str
    msg: str
    unreachable: bool = False

    def __str__(self) -> str:
        kind = "unreachable" if self.unreachable else "failed"
        return f"[{self.host}] {self.task}: {kind}: {self.msg}"


EXIT_CODES: dict[int, str] = {
    0: "success",
    1: "a check failed: a fact (`verify`, `report`) or a blocking `doctor` check",
    2: "bad input: lab file, inventory, flag, or an unknown lab, student, host or fact",
    3: "an engine is not answering (dockerd, libvirtd, Vagrant)",
    4: "an image or the box is missing or could not be built (or a bundle is corrupt)",
    5: "a playbook failed (its artifacts are kept and named)",
    6: "not idempotent: a second converge changed something (hosts and tasks named)",
    7: "the lab is busy: another labkit command holds its lock",
    8: "not up: the lab, or the host named, is not running (`labkit up` first)",
    70: "internal error (a bug: the traceback is in the debug log)",
    130: "interrupted (Ctrl-C or SIGTERM); the same command again converges",
}


class LabkitError(Exception):
    """A failure a user can act on.

    ``message`` says what failed and where; ``hint`` says what to do about it;
    ``exit_code`` is what the CLI exits with (one of ``EXIT_CODES``). Raise a subclass:
    the base class's code is that of bad input.
    """

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None, exit_code: int | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        if exit_code is not None:
            self.exit_code = exit_code

    def __str__(self) -> str:  # pragma: no cover - trivial
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"


class CheckFailed(LabkitError):
    """A fact or a doctor check failed (the command ran; the answer is no)."""

    exit_code = 1


class SpecError(LabkitError):
    """Bad input: the lab file (or roster, inventory), a flag, or a name that is not in
    the lab. Raised before anything is created."""

    exit_code = 2


class UsageError(SpecError):
    """A flag or name that does not fit the lab (unknown student, host, fact, lab)."""


class EngineError(LabkitError):
    """A container engine, libvirt or Vagrant is missing or not answering."""

    exit_code = 3


class ImageError(LabkitError):
    """A base image is missing or could not be built."""

    exit_code = 4


class BoxError(LabkitError):
    """The Vagrant box is missing or could not be built."""

    exit_code = 4


class BundleError(LabkitError):
    """An offline bundle is incomplete or corrupt."""

    exit_code = 4


class PlaybookFailed(LabkitError):
    """An ansible-runner run ended with a failed status or a non-zero rc."""

    exit_code = 5

    def __init__(self, message: str, hint: str | None = None, *, failures: Iterable[Failure] | None = None,
                 artifacts: Path | None = None, host_facts: Mapping[str, dict[str, Any]] | None = None,
                 stats: Mapping[str, dict[str, int]] | None = None) -> None:
        super().__init__(message, hint)
        self.failures = list(failures or [])
        self.artifacts = artifacts
        self.host_facts = dict(host_facts or {})  # labkit_* facts hosts reported before the failure
        self.stats = dict(stats or {})  # Ansible's recap of the run (ansible-runner's stats), when it had one


class IdempotenceFailed(LabkitError):
    """The second converge of the user's content changed something."""

    exit_code = 6


class LabBusy(LabkitError):
    """Another labkit command holds the lab's lock."""

    exit_code = 7


class NotUp(LabkitError):
    """The lab, or a host of it, is not running (or not answering)."""

    exit_code = 8


class InternalError(LabkitError):
    """labkit could not do its own part (a missing file of its own, a crashed check run)."""

    exit_code = 70

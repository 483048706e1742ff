"""One error root for labkit: library code raises, only the CLI prints and exits."""
from __future__ import annotations


class LabkitError(Exception):
    """A failure a user can act on.

    ``message`` says what failed and where; ``hint`` says what to do about it;
    ``exit_code`` is what the CLI exits with.
    """

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None, exit_code: int | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        if exit_code is not None:
            self.exit_code = exit_code

    def __str__(self) -> str:  # pragma: no cover - trivial
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"


class SpecError(LabkitError):
    """The lab file (or roster) is invalid. Raised before anything is created."""

    exit_code = 2


class EngineError(LabkitError):
    """A container engine, libvirt or Vagrant is missing or not answering."""

    exit_code = 3


class ImageError(LabkitError):
    """A base image is missing or could not be built."""

    exit_code = 4


class BoxError(LabkitError):
    """The Vagrant box is missing or could not be built."""

    exit_code = 4


class PlaybookFailed(LabkitError):
    """An ansible-runner run ended with a failed status or a non-zero rc."""

    exit_code = 5

    def __init__(self, message: str, hint: str | None = None, *, failures=None, artifacts=None, host_facts=None):
        super().__init__(message, hint)
        self.failures = list(failures or [])
        self.artifacts = artifacts
        self.host_facts = dict(host_facts or {})  # labkit_* facts hosts reported before the failure

"""``labkit``: the command group; the commands live in modules by family (``lifecycle``,
``observe``, ``machine``) and render through ``labkit.cli.render``."""
from __future__ import annotations

import logging
import signal
from types import FrameType

import click

from labkit.cli import classroom, door, lifecycle, machine, observe
from labkit.cli.render import uid_map_words
from labkit.errors import EXIT_CODES

__all__ = ["main", "uid_map_words"]


def _exit_codes_epilog() -> str:
    return "\b\nExit codes:\n" + "\n".join(f"  {code:>3}  {what}" for code, what in EXIT_CODES.items())


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, epilog=_exit_codes_epilog())
@click.version_option(package_name="labkit")
def main() -> None:
    """labkit: matched lab hosts (a Vagrant VM and containers of several distros per student),
    provisioned by Ansible, and the kernel-sharing facts checked side by side."""
    logging.basicConfig(level=logging.WARNING)

    def _terminate(signum: int, _frame: FrameType | None) -> None:
        # SIGTERM behaves like Ctrl-C: clean-ups run, nothing half-made is left
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, _terminate)


for _cmd in (lifecycle.up, lifecycle.down, lifecycle.run_, lifecycle.test_, lifecycle.inventory_,
             observe.status, observe.facts, observe.verify, observe.report, observe.shell, observe.grade,
             classroom.reset, classroom.checkpoint_group,
             machine.doctor, machine.init, machine.schema, machine.images_group, machine.prepare,
             machine.bundle_group, machine.box_group, door.access, door.serve):
    main.add_command(_cmd)


if __name__ == "__main__":  # pragma: no cover
    main()

"""Every command has help and is in the README (sqlite-utils' test_docs habit)."""
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from labkit.cli.main import main

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def commands(group: click.Group, prefix=()):
    for name, cmd in group.commands.items():
        path = (*prefix, name)
        yield path, cmd
        if isinstance(cmd, click.Group):
            yield from commands(cmd, path)


ALL = list(commands(main))


@pytest.mark.parametrize("path, cmd", ALL, ids=[" ".join(p) for p, _ in ALL])
def test_command_has_help_and_is_documented(path, cmd):
    assert (cmd.help or "").strip(), f"labkit {' '.join(path)} has no help"
    r = CliRunner().invoke(main, [*path, "--help"])
    assert r.exit_code == 0 and "Usage:" in r.output
    if isinstance(cmd, click.Group):
        return
    assert f"labkit {' '.join(path)}" in README, f"`labkit {' '.join(path)}` is missing from the README"


def test_top_level_help_lists_every_command():
    r = CliRunner().invoke(main, ["--help"])
    for name in main.commands:
        assert name in r.output


def test_init_writes_a_valid_lab_file(tmp_path):
    target = tmp_path / "sub" / "lab.yml"
    r = CliRunner().invoke(main, ["init", str(target)])
    assert r.exit_code == 0, r.output
    again = CliRunner().invoke(main, ["init", str(target)])
    assert again.exit_code == 2 and "exists" in again.output  # bad input (EXIT_CODES)


def test_every_exit_code_is_in_the_readme_and_help():
    """One table of exit codes: the README's and `labkit --help`'s are errors.EXIT_CODES."""
    from labkit.errors import EXIT_CODES

    r = CliRunner().invoke(main, ["--help"])
    for code, what in EXIT_CODES.items():
        assert f"| {code} | {what} |" in README, f"exit code {code} is not in the README's table"
        assert f"{code:>3}  {what}" in r.output

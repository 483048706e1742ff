"""Every command has help and is in the documentation site (sqlite-utils' test_docs habit).

The site is docs/ (MkDocs, mkdocs.yml at the root): its reference page lists every command and
the exit-code table; every page is in the nav, and the nav names no page that is missing.
README.md stays short and points into it.
"""

import re
from pathlib import Path

import click
import pytest
import yaml
from click.testing import CliRunner

from labkit.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
DOCS_DIR = ROOT / "docs"
MKDOCS_YML = ROOT / "mkdocs.yml"
REFERENCE = DOCS_DIR / "reference" / "commands.md"  # the commands' table and the exit codes
PAGES = sorted(p.relative_to(DOCS_DIR).as_posix() for p in DOCS_DIR.rglob("*.md"))
DOCS = "\n".join((DOCS_DIR / p).read_text() for p in PAGES)
README = ROOT / "README.md"
README_MAX_LINES = 150  # issue 25: the rest lives in docs/


def commands(group: click.Group, prefix=()):
    for name, cmd in group.commands.items():
        path = (*prefix, name)
        yield path, cmd
        if isinstance(cmd, click.Group):
            yield from commands(cmd, path)


ALL = list(commands(main))


def reference_rows() -> list[str]:
    """The command column of the reference page's tables: `labkit up [-f lab.yml] ...`."""
    return re.findall(r"^\| `(labkit [^`]*)` \|", REFERENCE.read_text(), flags=re.M)


@pytest.mark.parametrize("path, cmd", ALL, ids=[" ".join(p) for p, _ in ALL])
def test_command_has_help_and_is_documented(path, cmd):
    assert (cmd.help or "").strip(), f"labkit {' '.join(path)} has no help"
    r = CliRunner().invoke(main, [*path, "--help"])
    assert r.exit_code == 0 and "Usage:" in r.output
    if isinstance(cmd, click.Group):
        return
    name = f"labkit {' '.join(path)}"
    assert name in DOCS, f"`{name}` is missing from the documentation (docs/)"
    rows = reference_rows()
    assert any(row == name or row.startswith(name + " ") for row in rows), (
        f"`{name}` has no row in {REFERENCE.relative_to(ROOT)}'s table of commands"
    )


def test_reference_lists_no_command_that_does_not_exist():
    names = {" ".join(p) for p, cmd in ALL if not isinstance(cmd, click.Group)}
    for row in reference_rows():
        words = row.split()[1:]
        assert any(" ".join(words[:n]) in names for n in (1, 2)), (
            f"{REFERENCE.relative_to(ROOT)} documents `{row}`, which is no labkit command"
        )


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


def test_every_exit_code_is_in_the_docs_and_help():
    """One table of exit codes: the reference page's and `labkit --help`'s are errors.EXIT_CODES."""
    from labkit.errors import EXIT_CODES

    reference = REFERENCE.read_text()
    r = CliRunner().invoke(main, ["--help"])
    for code, what in EXIT_CODES.items():
        assert f"| {code} | {what} |" in reference, (
            f"exit code {code} is not in {REFERENCE.relative_to(ROOT)}'s table"
        )
        assert f"{code:>3}  {what}" in r.output
    rows = re.findall(r"^\| (\d+) \| .* \|$", reference, flags=re.M)
    assert sorted(map(int, rows)) == sorted(EXIT_CODES), (
        "the docs' exit-code table has a code labkit does not use"
    )


# ---------------------------------------------------------------------------- the site's nav


def nav_pages(nav) -> list[str]:
    """Every page mkdocs.yml's nav names (`Title: page.md`, `page.md`, sections nested)."""
    out: list[str] = []
    for entry in nav:
        if isinstance(entry, str):
            out.append(entry)
        elif isinstance(entry, dict):
            for value in entry.values():
                out += nav_pages(value) if isinstance(value, list) else [value]
    return [p for p in out if not re.match(r"^[a-z]+://", p)]  # external links are not pages


NAV = nav_pages(yaml.safe_load(MKDOCS_YML.read_text())["nav"])


def test_every_page_is_in_the_nav():
    missing = sorted(set(PAGES) - set(NAV))
    assert not missing, f"pages under docs/ that mkdocs.yml's nav leaves out: {missing}"


def test_every_nav_entry_is_a_page():
    absent = [p for p in NAV if not (DOCS_DIR / p).is_file()]
    assert not absent, f"mkdocs.yml's nav names pages that docs/ lacks: {absent}"
    twice = sorted({p for p in NAV if NAV.count(p) > 1})
    assert not twice, f"mkdocs.yml's nav names pages twice: {twice}"


def test_readme_is_short_and_its_links_into_the_docs_hold():
    text = README.read_text()
    assert len(text.splitlines()) <= README_MAX_LINES, (
        f"README.md is over {README_MAX_LINES} lines: move it to docs/"
    )
    links = re.findall(r"\]\((docs/[^)#]+)(?:#[^)]*)?\)", text)
    assert links, "README.md links to no page of docs/"
    broken = [link for link in links if not (ROOT / link).is_file()]
    assert not broken, f"README.md links to pages docs/ lacks: {broken}"

"""The package's architecture, checked from its imports (read with ast, nothing imported):
each layer imports only the layers below it, there is no import cycle, and no import of
labkit's own modules hides inside a function (the way cycles used to be dodged). Imports for
annotations only (under ``if TYPE_CHECKING:``) count too: they are dependencies all the same,
and ``from labkit.cli import main`` depends on the package ``labkit.cli`` (its __init__ runs)
as well as on the module ``main``.

The layers, bottom to top (docs/design.md, "Architecture"):

    0  leaves: errors, paths, names, log, procs, engines.capabilities, doctor.check
    1  lab        the lab file's model: spec, catalog
    2  access     students' credentials, the door's identity, the handout
    2  servers    this machine or a lab server over SSH
    3  plan       pure planning, and the no-op stamp (uptodate)
    4  engines    Docker, Podman, LXC behind one interface
    5  vm         boxes, virt, vms, vmnet        ansible   runner, inventory
    6  images     build, bundle (its box from vm)
    7  observe    facts, checks, verify, measure, report
    8  doctor     machine, lab, sizing
    9  api        one module per verb
  9.5  door       the students' door: SSH gate, web page (`labkit serve`)
   10  cli, pytest_plugin
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[2] / "labkit"
LEAVES = {"labkit", "labkit.errors", "labkit.paths", "labkit.names", "labkit.log", "labkit.procs",
          "labkit.engines.capabilities", "labkit.doctor.check"}
RANK = {"lab": 1, "access": 2, "servers": 2, "plan": 3, "engines": 4, "vm": 5, "ansible": 5, "images": 6, "observe": 7,
        "doctor": 8, "api": 9, "door": 9.5, "cli": 10, "pytest_plugin": 10}
# imports of labkit inside a function, allowed with the reason: the pytest plugin is loaded by
# every pytest run in labkit's environment (entry point pytest11) and acts only when a lab is
# named, so it does not load labkit's API up front
# and `labkit serve` loads the door (asyncssh, aiohttp: 0.3 s) only when it runs, not on every command
LAZY_OK = {"labkit.pytest_plugin", "labkit.cli.door"}


def _name(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_name(p): p for p in PKG.rglob("*.py")}


def _imports(mod: str, source: str | None = None) -> tuple[set[str], list[tuple[str, int]]]:
    """labkit modules ``mod`` imports at module level, and those imported inside functions
    (``source``: this text instead of the module's file)."""
    path = MODULES.get(mod, PKG / "_made_up.py")
    tree = ast.parse(source if source is not None else path.read_text())
    top: set[str] = set()
    inner: list[tuple[str, int]] = []
    package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]

    def targets(node: ast.Import | ast.ImportFrom) -> list[str]:
        if isinstance(node, ast.Import):
            return [a.name for a in node.names]
        base = node.module or ""
        if node.level:
            parts = package.split(".")
            base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
        # `from PKG import NAME`: PKG itself (its __init__ runs), and NAME when it is a module
        return [base] + [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in MODULES]

    def walk(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import | ast.ImportFrom):
                for t in targets(child):
                    if t == "labkit" or t.startswith("labkit."):
                        (inner.append((t, child.lineno)) if in_function else top.add(t))
            walk(child, in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda))

    walk(tree, False)
    return {t for t in top if t in MODULES and t != mod}, inner


GRAPH = {m: _imports(m)[0] for m in MODULES}


def rank(mod: str) -> int:
    if mod in LEAVES:
        return 0
    top = mod.split(".")[1]
    assert top in RANK, f"{mod}: a module outside every layer (add its package to RANK and the docs)"
    return RANK[top]


@pytest.mark.parametrize("mod", sorted(MODULES))
def test_each_layer_imports_only_below_it(mod):
    if mod in LEAVES and mod != "labkit":
        assert not GRAPH[mod] - LEAVES, f"{mod} is a leaf but imports {sorted(GRAPH[mod] - LEAVES)}"
        return
    pkg = mod.split(".")[:2]
    for dep in GRAPH[mod]:
        if dep.split(".")[:2] == pkg:
            continue  # within one package: only the cycle rule applies
        assert rank(dep) < rank(mod), f"{mod} (layer {rank(mod)}) imports {dep} (layer {rank(dep)}): not below it"


def test_no_import_cycle():
    seen: dict[str, int] = {}  # 1 on the path, 2 done
    stack: list[str] = []

    def visit(m: str) -> None:
        seen[m] = 1
        stack.append(m)
        for d in sorted(GRAPH[m]):
            if seen.get(d) == 1:
                cycle = stack[stack.index(d):] + [d]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if d not in seen:
                visit(d)
        stack.pop()
        seen[m] = 2

    for m in sorted(GRAPH):
        if m not in seen:
            visit(m)


def test_no_labkit_import_inside_a_function():
    hidden = [f"{m}:{line} imports {t}" for m in sorted(MODULES) if m not in LAZY_OK
              for t, line in _imports(m)[1]]
    assert not hidden, "imports inside functions (move them to the top; a cycle is the design's to fix):\n" + \
        "\n".join(hidden)


def test_the_checker_sees_what_it_checks():
    """The rules bite: an upward import, a hidden one and one for annotations only are told apart."""
    src = ("from typing import TYPE_CHECKING\nfrom labkit.api import up\nfrom . import docker\n"
           "if TYPE_CHECKING:\n    from labkit.cli import main\n"
           "def f():\n    from labkit.observe import facts\n")
    top, inner = _imports("labkit.engines.made_up", src)
    # packages imported from count (their __init__ runs), and so do annotations-only imports
    assert top == {"labkit.api", "labkit.api.up", "labkit.engines", "labkit.engines.docker", "labkit.cli",
                   "labkit.cli.main"}
    assert ("labkit.observe.facts", 7) in inner
    assert rank("labkit.api.up") > rank("labkit.engines.docker")  # so the first import above breaks the rule
    assert any(t == "labkit.api" for t, _ in _imports("labkit.pytest_plugin")[1])  # the one allowed


def test_engines_are_asked_not_named_outside_the_engines():
    """What differs by engine is asked of the engine (labkit.engines) or of its capabilities;
    outside labkit/engines/ no line compares with an engine's name, but for the lab model's own
    handling of the lab-wide default (at most 4 lines, as issue 25 set)."""
    import re

    names = r"(?:\"(?:docker|podman|lxc)\"|\bDEFAULT\b)"
    compare = re.compile(rf"(?:==|!=|\bin\b|\bnot in\b)\s*\(?\s*{names}|{names}\s*(?:==|!=)")
    found = [f"{p.relative_to(PKG.parent)}:{i}: {line.strip()}" for p in sorted(PKG.rglob("*.py"))
             if "engines" not in p.relative_to(PKG).parts[:1]
             for i, line in enumerate(p.read_text().splitlines(), 1) if compare.search(line.split("#")[0])]
    assert len(found) <= 4 and all(f.startswith("labkit/lab/") for f in found), "\n".join(found)


def test_no_module_over_600_lines():
    long = {str(p.relative_to(PKG.parent)): n for p in PKG.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 600}
    assert not long, f"split these by job: {long}"

"""The Molecule scenarios end to end: `molecule test -s <scenario>` from the repository root.

Each run is the full sequence (dependency, destroy, syntax, create, converge, idempotence,
verify, destroy) on the real engines: dockerd for ``default``, libvirt + Vagrant for ``vm``.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def molecule_test(scenario: str, timeout: float) -> tuple[int, str]:
    """Run ``molecule test -s scenario`` with this venv's tools first on PATH; (rc, plain output)."""
    bindir = Path(sys.executable).parent
    env = dict(os.environ, PATH=f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}",
               NO_COLOR="1", ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0", COLUMNS="200")
    try:
        p = subprocess.run([str(bindir / "molecule"), "test", "-s", scenario], cwd=ROOT, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        pytest.fail(f"molecule test -s {scenario} timed out after {timeout:.0f}s\n{_tail(_ANSI.sub('', out))}")
    return p.returncode, _ANSI.sub("", p.stdout)


def _tail(text: str, lines: int = 80) -> str:
    return "\n".join(text.splitlines()[-lines:])


def _step(output: str, scenario: str, step: str) -> str:
    """The part of the output between the step's ``Executing`` and ``Executed`` lines.

    Molecule writes ``<scenario> ➜ <step>: ...`` on a terminal and ``[<scenario> > <step>] ...``
    without one: the punctuation between the words is matched loosely.
    """
    m = re.search(rf"{scenario}\W+{step}\W+Executing\b(.*?){scenario}\W+{step}\W+Executed", output, re.S)
    return m.group(1) if m else ""


def check_run(scenario: str, rc: int, output: str, hosts: int) -> None:
    assert rc == 0, f"molecule test -s {scenario} exited {rc}; last lines:\n{_tail(output)}"
    for step in ("create", "converge", "idempotence", "verify", "destroy"):
        assert re.search(rf"{scenario}\W+{step}\W+Executed: Successful", output), \
            f"molecule test -s {scenario}: step {step} did not succeed; last lines:\n{_tail(output)}"
    idem = _step(output, scenario, "idempotence")
    recap = dict(re.findall(r"^\W*(\S+)\s+:\s+ok=\d+\s+changed=(\d+)", idem, re.M))
    assert len(recap) == hosts and set(recap.values()) == {"0"}, \
        f"molecule test -s {scenario}: second converge was not changed=0 on every host: {recap}\n{_tail(idem)}"
    assert re.search(r"=+ \d+ passed", _step(output, scenario, "verify")), \
        f"molecule test -s {scenario}: no passing testinfra run in verify\n{_tail(output)}"


def test_default_scenario_containers():
    """student_env on debian:11/12/13 and BusyBox containers; K1, K2, K4..K7 hold."""
    rc, out = molecule_test("default", timeout=900)
    check_run("default", rc, out, hosts=4)


@pytest.mark.vm
def test_vm_scenario():
    """student_env on one labkit VM made by lab_vm (delegated driver); K3, K5, K6 hold."""
    rc, out = molecule_test("vm", timeout=2400)
    check_run("vm", rc, out, hosts=1)

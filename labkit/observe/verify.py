"""`labkit verify`: the checks of K1..K12 run with pytest + testinfra against the live lab."""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from labkit.ansible.runner import connection_plugins
from labkit.engines.capabilities import label
from labkit.errors import InternalError, NotUp, UsageError
from labkit.observe import measure
from labkit.observe.checks import FACTS
from labkit.observe.facts import HostFacts
from labkit.observe.results import CheckResult

CHECKS_DIR = Path(__file__).resolve().parent / "checks"


@dataclass
class View:
    """What the checks see: the server's and each host's facts, measurements, ssh config."""

    server: HostFacts                   # this machine (K10, K12)
    hosts: dict[str, HostFacts]
    measurements: dict[str, dict]
    ssh_config: Path | None = None
    containers: list[str] = field(default_factory=list)
    vms: list[str] = field(default_factory=list)
    servers: dict[str, HostFacts] = field(default_factory=dict)   # every lab server, by inventory name

    def server_of(self, h: HostFacts) -> HostFacts:
        """The lab server a host runs on: the one its kernel is compared with."""
        return self.servers.get(h.server, self.server)

    def neighbours(self, h: HostFacts) -> list[HostFacts]:
        """Containers on the same lab server (namespace ids are only comparable there)."""
        return [self.hosts[c] for c in self.containers if self.hosts[c].server == h.server]


def _plugin(view: View) -> Any:
    """The pytest plugin that gives the checks their ``view`` and parameters and collects each
    outcome. pytest is imported here, when checks run: not with every labkit command."""
    import pytest

    class _Plugin:
        """Gives the checks their ``view`` and parameters, and collects each outcome."""

        def __init__(self, view: View):
            self._view = view
            self.results: list[CheckResult] = []

        @pytest.fixture(scope="session")
        def view(self) -> View:
            return self._view

        def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
            v = self._view
            for name, values in (("container", v.containers), ("vm", v.vms), ("lab_host", v.containers + v.vms)):
                if name in metafunc.fixturenames:
                    metafunc.parametrize(name, values, ids=values)

        def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
            if report.when != "call" and not (report.when == "setup" and report.outcome != "passed"):
                return
            m = re.search(r"test_(K\d+)(?:\[(.*)\])?", report.nodeid)
            if not m:
                return
            fact, host = m.group(1), m.group(2) or "lab-server"
            if "NOTSET" in host:
                host = "-"
            if report.passed:
                detail = str(dict(report.user_properties).get("detail", ""))
            elif report.skipped:
                detail = str(report.longrepr[-1]) if isinstance(report.longrepr, tuple) else "skipped"
                if "empty parameter set" in detail:
                    detail = "not applicable: the lab has no " + ("VM" if "(vm)" in detail else "such host")
            else:
                exc = getattr(report.longrepr, "reprcrash", None)
                detail = exc.message if exc else str(report.longrepr).splitlines()[-1]
                detail = re.sub(r"^[\w.]*FactFailed: ", "", detail).split("\nassert")[0]
            self.results.append(CheckResult(fact, host, str(report.outcome), detail))

    return _Plugin(view)


def build_view(facts: list[HostFacts], lab: str, ssh_config: Path | None = None) -> View:
    servers = {f.server: f for f in facts if f.role == "server"}
    server = next((f for f in servers.values() if f.host == "lab-server"), next(iter(servers.values())))
    hosts = {f.host: f for f in facts if f.role != "server"}
    broken = [f"{f.host}: {f.error}" for f in facts if f.error]
    if broken:
        raise NotUp("cannot read facts from " + "; ".join(broken), "check `labkit status`; `labkit up` converges")
    return View(server, hosts, measure.load(lab), ssh_config,
                containers=[h for h, f in hosts.items() if f.role == "container"],
                vms=[h for h, f in hosts.items() if f.role == "vm"], servers=servers)


def check_fact_ids(only: list[str] | None) -> None:
    """UsageError (exit 2) naming a fact id that is not K1..K12."""
    for f in only or []:
        if f.upper() not in FACTS:
            raise UsageError(f"--fact {f}: unknown fact", f"facts: {', '.join(FACTS)}")


def run_checks(view: View, only: list[str] | None = None, junit: str | Path | None = None) -> list[CheckResult]:
    """Run the checks (all, or the fact ids in ``only``) and return one result per fact and host."""
    check_fact_ids(only)
    module = str(CHECKS_DIR / "test_facts.py")
    targets = [f"{module}::test_{f.upper()}" for f in only] if only else [module]
    args = [*targets, "-c", str(CHECKS_DIR / "pytest.ini"), "--rootdir", str(CHECKS_DIR),
            "-p", "no:cacheprovider", "-p", "no:terminal", "-p", "no:randomly"]
    if junit:
        args += [f"--junitxml={junit}", "-o", "junit_suite_name=labkit-verify"]
    import pytest

    plugin = _plugin(view)
    rc = pytest.main(args, plugins=[plugin])
    if rc not in (0, 1, 5) or (rc == 5 and not only):
        raise InternalError(f"the checks could not run (pytest exit {rc})")
    order = {k: i for i, k in enumerate(FACTS)}
    for r in plugin.results:
        h = view.hosts.get(r.host)
        r.engine = engine_label(h) if h is not None else ""
    return sorted(plugin.results, key=lambda r: (order[r.fact], r.host))


def engine_label(h: HostFacts) -> str:
    """What a host runs on: ``docker``, ``podman``, ``podman (rootless, alice)``, ``lxc``;
    a VM: ``libvirt``; a lab server: ``-``."""
    if h.role == "vm":
        return "libvirt"
    if h.role != "container":
        return "-"
    return label(h.engine, h.engine_user)


def as_dicts(results: list[CheckResult]) -> list[dict]:
    return [asdict(r) for r in results]


# ------------------------------------------------------------------------------ the user's tests

USER_FACT = "tests"  # the "fact" column of the user's own tests in verify's table


def run_user_tests(paths: list[str], inventory: Path, pattern: str, work: Path,
                   trust: bool = False) -> tuple[list[CheckResult], Path]:
    """Run the user's pytest/testinfra tests against the live hosts of ``inventory``.

    testinfra's ``--hosts=ansible://PATTERN --ansible-inventory`` parametrises tests that take
    ``host``; Molecule-style tests that read ``MOLECULE_INVENTORY_FILE`` find the same file.
    Runs in its own pytest process; returns one result per test case and the JUnit file it
    wrote. Only the test files run: without ``trust`` (``--trust``) no ``conftest.py`` and no
    pytest settings of their folder (a lab file naming vetted tests cannot bring code beside
    them that runs first, as root); with it, pytest finds both as it would on its own.
    """
    import os
    import subprocess
    import sys
    import xml.etree.ElementTree as ET

    for p in paths:
        if not Path(p).exists():
            raise UsageError(f"--tests {p}: not found", "give test files or folders (pytest/testinfra)")
    work.mkdir(parents=True, exist_ok=True)
    junit = work / "user-tests.xml"
    junit.unlink(missing_ok=True)

    # testinfra reaches an LXC host through Ansible itself (no backend of its own for labkit_lxc)
    env = dict(os.environ, MOLECULE_INVENTORY_FILE=str(inventory), ANSIBLE_INVENTORY=str(inventory),
               ANSIBLE_CONNECTION_PLUGINS=connection_plugins(), ANSIBLE_HOST_KEY_CHECKING="False", PATH=str(Path(sys.executable).parent) + os.pathsep
               + os.environ.get("PATH", ""))
    cmd = [sys.executable, "-m", "pytest", *paths, f"--hosts=ansible://{pattern}", f"--ansible-inventory={inventory}",
           f"--junitxml={junit}", "-o", "junit_suite_name=labkit-user-tests", "-p", "no:cacheprovider", "-q",
           "-p", "labkit.observe.points",  # @pytest.mark.points(N) for `labkit grade`
           "--rootdir", str(Path(paths[0]).resolve().parent if Path(paths[0]).is_file() else Path(paths[0]).resolve())]
    if not trust:
        cmd += ["--noconftest", "-c", str(CHECKS_DIR / "user-tests.ini")]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600)
    if not junit.is_file() or proc.returncode not in (0, 1):
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise UsageError(f"your tests could not run (pytest exit {proc.returncode}):\n{tail}",
                         "run them with pytest alone to see why; `labkit inventory --path` is their inventory")
    out = []
    for case in ET.parse(junit).getroot().iter("testcase"):
        name = case.get("name", "")
        m = re.search(r"\[(?:ansible://)?([^\]]+)\]$", name)
        host = m.group(1) if m else "-"
        bad = case.find("failure") if case.find("failure") is not None else case.find("error")
        skipped = case.find("skipped")
        outcome = "failed" if bad is not None else "skipped" if skipped is not None else "passed"
        detail = f"{case.get('classname', '')}::{name}"
        if bad is not None:
            detail += ": " + (bad.get("message") or "").splitlines()[0][:300] if bad.get("message") else ""
        out.append(CheckResult(USER_FACT, host, outcome, detail))
    return out, junit


def merge_junit(files: list[Path], dest: Path) -> None:
    """One JUnit file with the facts' suite and the user's tests' suite."""
    import xml.etree.ElementTree as ET

    root = ET.Element("testsuites")
    for f in files:
        if not f.is_file():
            continue
        r = ET.parse(f).getroot()
        for suite in ([r] if r.tag == "testsuite" else list(r.iter("testsuite"))):
            root.append(suite)
    ET.ElementTree(root).write(dest, encoding="utf-8", xml_declaration=True)

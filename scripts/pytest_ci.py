#!/usr/bin/env python3
"""The whole test suite as CI runs it (`scripts/test.sh` with no arguments), in two phases, so
that it fits CI's time on 2 cores.

1. In one pytest: the unit and reliability tests (the latter restart dockerd and libvirtd) and
   the integration modules that disturb what every lab shares on purpose (test_47 reorders the
   firewall's chains and deletes labkit's jumps), and any module not placed below.
2. Two pytest processes at once, each with its own labs (lab names are per module): stream A
   holds everything on the session's default lab (its VM is a lab server in test_55/56) and
   test_30, which stops libvirtd (libvirt puts its jumps back on top of FORWARD when it
   starts); stream B the other modules, those whose second `up` must report changed=0 on this
   machine's firewall last, long after test_30. What one stream does to the other: Docker
   networks made (Docker's jump on top of FORWARD: left as it is by role lab_firewall, so no
   change is seen), libvirt networks made (libvirt leaves FORWARD's order alone then), daemons
   of test_58's lab server (in a container: tests/daemons.py stops only this machine's).

Each stream's output is printed as it comes, its lines prefixed [A] or [B]; one JUnit file
merges the three (test-artifacts/junit.xml). The exit code is the worst of the three.
"""
from __future__ import annotations

import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ART = ROOT / "test-artifacts"
INTEGRATION = ROOT / "tests" / "integration"
SERIAL = ["test_10_bad_input", "test_15_doctor", "test_47_isolation"]
# stream A: the session's default lab lives in this one process (tests that use the fixture
# default_lab or default_facts, test_70 last: it takes that lab down)
STREAM_A = ["test_20_containers", "test_22_cli", "test_30_vm", "test_40_registry", "test_50_verify",
            "test_55_servers", "test_56_classroom_servers", "test_57_remote_vm", "test_60_report",
            "test_72_down_vms", "test_80_molecule", "test_70_down"]
IMAGES = ["debian:11", "debian:12", "debian:13", "busybox"]
# stream B: its modules whose second `up` must report changed=0 on this machine's firewall
# last (from test_66 on), long after stream A's test_30 restarted libvirtd
STREAM_B = ["test_58_offline_bundle", "test_65_webclass", "test_45_classroom", "test_76_lxc",
            "test_66_public_roles", "test_75_engines", "test_77_remote_podman", "test_78_remote_lxc"]


def modules() -> tuple[list[str], list[str], list[str]]:
    found = sorted(p.stem for p in INTEGRATION.glob("test_*.py"))
    for name in STREAM_A + STREAM_B + SERIAL:
        if name not in found:
            raise SystemExit(f"scripts/pytest_ci.py names {name}, which tests/integration does not have")
    for name in STREAM_B:  # a second default lab in stream B would fight A's over the same lab
        text = (INTEGRATION / f"{name}.py").read_text()
        if "default_lab" in text or "default_facts" in text:
            raise SystemExit(f"scripts/pytest_ci.py: {name} uses the session's default lab: put it in STREAM_A")
    placed = set(STREAM_A + STREAM_B)
    serial = [m for m in found if m not in placed]  # a new module runs alone until placed
    path = lambda ms: [str(INTEGRATION / f"{m}.py") for m in ms]  # noqa: E731
    return (["tests/unit", "tests/reliability", *path(serial)], path(STREAM_A), path(STREAM_B))


def pytest(args: list[str], junit: Path, prefix: str = "") -> subprocess.Popen:
    cmd = [sys.executable, "-m", "pytest", f"--junitxml={junit}", *args]
    p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)

    def pump() -> None:
        assert p.stdout is not None
        for line in p.stdout:
            sys.stdout.write(prefix + line)
            sys.stdout.flush()

    t = threading.Thread(target=pump, daemon=True)
    t.start()
    p.pump = t  # type: ignore[attr-defined]
    return p


def finish(p: subprocess.Popen) -> int:
    rc = p.wait()
    p.pump.join()  # type: ignore[attr-defined]
    return rc


def merge(parts: list[Path], out: Path) -> None:
    root = ET.Element("testsuites")
    for part in parts:
        if part.is_file():
            r = ET.parse(part).getroot()
            root.extend(r.iter("testsuite") if r.tag == "testsuites" else [r])
    ET.ElementTree(root).write(out, encoding="utf-8", xml_declaration=True)


def main() -> int:
    ART.mkdir(exist_ok=True)
    serial, a, b = modules()
    parts = [ART / "junit-serial.xml", ART / "junit-a.xml", ART / "junit-b.xml"]
    t0 = time.monotonic()
    print(f"pytest_ci: phase 1, alone: {' '.join(Path(x).name for x in serial)}", flush=True)
    rc1 = finish(pytest(serial, parts[0]))
    t1 = time.monotonic()
    print(f"pytest_ci: phase 1 took {t1 - t0:.0f}s (exit {rc1}); phase 2, two streams at once:\n"
          f"  [A] {' '.join(Path(x).stem for x in a)}\n  [B] {' '.join(Path(x).stem for x in b)}", flush=True)
    # the images and the box both streams use, made once here (skipped when up to date): two
    # streams building the same image at once would each tag their own
    labkit = str(Path(sys.executable).parent / "labkit")
    for cmd in ([labkit, "images", "build", *IMAGES], [labkit, "box", "build"]):
        r = subprocess.run(cmd, cwd=ROOT)
        if r.returncode != 0:
            print(f"pytest_ci: {' '.join(cmd[1:])} failed (exit {r.returncode}): the streams would fail on it",
                  flush=True)
            return r.returncode
    pa, pb = pytest(a, parts[1], "[A] "), pytest(b, parts[2], "[B] ")
    rca, rcb = finish(pa), finish(pb)
    merge(parts, ART / "junit.xml")
    print(f"pytest_ci: phase 2 took {time.monotonic() - t1:.0f}s; exits: phase 1 {rc1}, A {rca}, B {rcb}; "
          f"total {time.monotonic() - t0:.0f}s; JUnit: {ART / 'junit.xml'}", flush=True)
    return max(rc1, rca, rcb)


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""The whole test suite as CI runs it (`scripts/test.sh` with no arguments), in three stages,
each as two pytest processes at once, so that it fits CI's time on 2 cores.

What decides the placing (docs/tests.md, "How CI runs the suite"):

- **Stage 1**, two streams: the unit tests (pure logic: no engine, no Ansible module) beside
  tests/reliability, which restarts dockerd and libvirtd (scripts/test.sh runs the linters beside
  them too: they touch no engine and run no Ansible module), and the box's build (neither).
- **Stage 2**, two streams:
  - S1: test_15 (nothing made), test_47 (reorders the firewall's chains and
    deletes labkit's jumps on purpose), then the session's default lab with test_20 and
    test_30 (which stops libvirtd mid-run: libvirt then puts its jumps back on top of FORWARD).
    The default lab stays up for stage 3 (LABKIT_TEST_DEFAULT_LAB=keep). Then test_reset and
    test_shared_machine (it reads libvirt's refusal of an ordinary account, and boots three VMs
    at once, two accounts' in their session instances and root's: not while test_30 has
    libvirtd stopped).
  - S2: test_58 (its lab server is a container with its own engines, libvirtd and firewall,
    so neither test_47 nor test_30 reaches it) and test_45 (containers only; it runs after
    test_47 is done), test_grade, test_dashboard, test_init, test_content_cache, the attack
    test_lab_file_vars (containers only, no firewall rule checked), test_prepare_content, then
    the short ones that need no lab of the session: test_10 (nothing made), test_terminal and
    test_private_paths (S1, with the default lab's VM to boot, is the longer stream).
- **Stage 3**, two streams, with nothing left that stops libvirtd or reorders the firewall:
  every module whose second `up` must report changed=0, or that checks isolation, runs here.
  - A: the modules on the default lab, reused as stage 2 left it (LABKIT_TEST_DEFAULT_LAB=
    reuse), test_70 last (it takes that lab down), with test_57, test_72, test_66 and the
    attacks test_fw_ipv6, test_fw_paths, test_lxc_rootfs, test_server_trust and test_fw_pty
    to balance the two streams (by the seconds of the last run, test-artifacts/ci-times.json,
    with the lead's planned additions counted).
  - B: the other modules.
  The attacks of tests/security run in stage 3 too (they make labs and firewall rules that
  test_47's reordering would disturb): test_vm_login reads the default lab's VM (stream A),
  test_isolation_engines boots a VM of its own (A, to balance the two streams). Three short
  ones that check no firewall rule run in stage 2, in S2, long after test_47: test_lab_file_vars,
  test_terminal and test_private_paths.

Each stream's output is printed as it comes, its lines prefixed with its name; one JUnit file
merges them all (test-artifacts/junit.xml), and test-artifacts/ci-times.json keeps each
module's seconds and each stage's (docs/tests.md publishes them). The exit code is the worst.
A module in tests/integration or tests/security (the attacks of docs/security.md) that is
placed nowhere fails the run (place it deliberately); module names are unique across both.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ART = ROOT / "test-artifacts"
INTEGRATION = ROOT / "tests" / "integration"
FOLDERS = (INTEGRATION, ROOT / "tests" / "security")  # where a stream's modules are, by stem
IMAGES = ["debian:11", "debian:12", "debian:13", "busybox"]
# (stage name, {stream name: [pytest targets]}, extra environment); modules by stem
STAGES: list[tuple[str, dict[str, list[str]], dict[str, str]]] = [
    ("1", {"unit": ["tests/unit"], "reliability": ["tests/reliability"]}, {}),
    ("2", {"S1": ["test_15_doctor", "test_47_isolation", "test_20_containers", "test_30_vm", "test_reset",
                  "test_shared_machine"],
           "S2": ["test_58_offline_bundle", "test_45_classroom", "test_grade", "test_dashboard", "test_init",
                  "test_content_cache", "test_lab_file_vars", "test_prepare_content", "test_10_bad_input",
                  "test_terminal", "test_private_paths"]},
     {"LABKIT_TEST_DEFAULT_LAB": "keep"}),
    ("3", {"A": ["test_22_cli", "test_vm_login", "test_40_registry", "test_50_verify", "test_55_servers",
                 "test_56_classroom_servers", "test_60_report", "test_57_remote_vm", "test_72_down_vms",
                 "test_isolation_engines", "test_fw_ipv6", "test_fw_paths", "test_lxc_rootfs", "test_door_ssh",
                 "test_door_web", "test_66_public_roles", "test_server_trust", "test_fw_pty", "test_70_down"],
           "B": ["test_76_lxc", "test_65_webclass", "test_75_engines", "test_77_remote_podman",
                 "test_molecule_native", "test_78_remote_lxc", "test_fw_reboot", "test_bundle_trust",
                 "test_80_molecule"]},
     {"LABKIT_TEST_DEFAULT_LAB": "reuse"}),
]
DEFAULT_LAB_USERS = ("default_lab", "default_facts")


def placed() -> list[str]:
    return [t for _, streams, _ in STAGES for targets in streams.values() for t in targets
            if not t.startswith("tests/")]


def modules() -> dict[str, Path]:
    """Every integration and security test module, by stem."""
    out: dict[str, Path] = {}
    for folder in FOLDERS:
        for p in sorted(folder.glob("test_*.py")):
            if p.stem in out:
                raise SystemExit(f"scripts/pytest_ci.py: {p.stem} is in two folders ({out[p.stem]}, {p})")
            out[p.stem] = p
    return out


def check_placing() -> None:
    mods = modules()
    found = sorted(mods)
    names = placed()
    for name in names:
        if name not in found:
            raise SystemExit(f"scripts/pytest_ci.py names {name}, which tests/integration and tests/security lack")
    if len(set(names)) != len(names):
        raise SystemExit("scripts/pytest_ci.py places a module twice")
    missing = [m for m in found if m not in names]
    if missing:
        raise SystemExit(f"scripts/pytest_ci.py: place {', '.join(missing)} in a stage (see its docstring)")
    # the default lab lives in one stream per stage: two would fight over the same lab
    for stage, streams, _ in STAGES:
        users = [s for s, targets in streams.items()
                 if any(not t.startswith("tests/") and any(u in mods[t].read_text()
                                                          for u in DEFAULT_LAB_USERS) for t in targets)]
        if len(users) > 1:
            raise SystemExit(f"scripts/pytest_ci.py: stage {stage}: streams {users} all use the default lab")


def target(t: str) -> str:
    return t if t.startswith("tests/") else str(modules()[t])


def pytest(name: str, targets: list[str], junit: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "pytest", f"--junitxml={junit}", "--durations=15", *map(target, targets)]
    return spawn(name, cmd, env)


def spawn(name: str, cmd: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """``cmd`` started in the background, its lines printed as they come, prefixed ``[name]``."""
    p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                         env={**os.environ, **(env or {})})
    prefix = f"[{name}] "

    def pump() -> None:
        assert p.stdout is not None
        for line in p.stdout:
            sys.stdout.write(prefix + line)
            sys.stdout.flush()

    t = threading.Thread(target=pump, daemon=True)
    t.start()
    p.pump = t  # type: ignore[attr-defined]
    return p


def finish(p: subprocess.Popen[str]) -> int:
    rc = p.wait()
    p.pump.join()  # type: ignore[attr-defined]
    return rc


def module_seconds(parts: list[Path]) -> dict[str, float]:
    """Seconds per test module (its tests' setup, call and teardown) from the JUnit files."""
    out: dict[str, float] = {}
    for part in parts:
        if not part.is_file():
            continue
        for tc in ET.parse(part).getroot().iter("testcase"):
            cls = tc.get("classname", "")
            mod = ".".join(cls.split(".")[:3]) if cls.startswith("tests.") else cls
            out[mod] = round(out.get(mod, 0.0) + float(tc.get("time") or 0), 1)
    return out


def merge(parts: list[Path], out: Path) -> None:
    root = ET.Element("testsuites")
    for part in parts:
        if part.is_file():
            r = ET.parse(part).getroot()
            root.extend(r.iter("testsuite") if r.tag == "testsuites" else [r])
    ET.ElementTree(root).write(out, encoding="utf-8", xml_declaration=True)


def box_build() -> subprocess.Popen[str]:
    """The box the streams share, built while stage 1 runs (skipped when up to date): it needs
    neither Docker nor libvirtd (mmdebstrap, then Vagrant's folder), which stage 1 restarts and
    stops, and stage 1 leaves a core half idle. On a machine without it, its two minutes or so
    are then out of stage 2's time."""
    return spawn("box", [str(Path(sys.executable).parent / "labkit"), "box", "build"])


def prebuild(box: subprocess.Popen[str]) -> int:
    """The images the streams share, made once before stage 2 starts (skipped when up to date):
    two streams building the same image at once would each tag their own. Built after stage 1
    (its reliability tests restart dockerd). The box's build, started with stage 1, is waited
    for too."""
    labkit = str(Path(sys.executable).parent / "labkit")
    images = [labkit, "images", "build", *IMAGES]
    made = subprocess.Popen(images, cwd=ROOT)
    worst = 0
    for cmd, rc in (([labkit, "box", "build"], finish(box)), (images, made.wait())):
        if rc != 0:
            print(f"pytest_ci: {' '.join(cmd[1:])} failed (exit {rc}): the streams would fail on it", flush=True)
            worst = worst or rc
    return worst


def table(times_file: Path) -> str:
    """ci-times.json as the Markdown table docs/tests.md publishes (`pytest_ci.py --table`)."""
    t = json.loads(times_file.read_text())
    where = {m: f"{stage} / {name}" for stage, streams, _ in STAGES for name, ms in streams.items() for m in ms}
    lines = ["| module | stage / stream | seconds |", "|---|---|---|"]
    for mod, secs in sorted(t["modules"].items(), key=lambda kv: -kv[1]):
        if secs < 1:
            continue
        parts = mod.split(".")
        key = parts[-1] if parts[1] in ("integration", "security") else f"tests/{parts[1]}"
        lines.append(f"| `{'/'.join(parts)}.py` | {where.get(key, '1 / unit')} | {secs:.0f} |")
    streams = ", ".join(f"{k} {v} s" for k, v in t["streams"].items())
    busy = t.get("cpu_busy", {})
    stages = ", ".join(f"{k}: {v} s" + (f" (CPU {busy[k]:.0%} busy)" if k in busy else "") for k, v in t["stages"].items())
    lines += ["", f"Stages: {stages}; streams: {streams}; "
                  f"pytest in all: {t['total']} s. Modules under a second are left out."]
    return "\n".join(lines)


def cpu_ticks() -> tuple[int, int]:
    """(busy, total) CPU ticks of the machine since boot (/proc/stat): a stage's busy share says
    whether another stream could use idle cores (ci-times.json's "cpu_busy")."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields[:8]) - idle, sum(fields[:8])


def main() -> int:
    if sys.argv[1:2] in (["-h"], ["--help"]):
        print(f"usage: {sys.argv[0]} [--table [CI-TIMES.json]]\n{__doc__}")
        return 0
    if sys.argv[1:] and sys.argv[1:2] != ["--table"]:
        print(f"{sys.argv[0]}: unknown arguments {sys.argv[1:]} (it runs the whole suite with none; --help)",
              file=sys.stderr)
        return 2
    if sys.argv[1:2] == ["--table"]:
        print(table(Path(sys.argv[2]) if len(sys.argv) > 2 else ART / "ci-times.json"))
        return 0
    check_placing()
    ART.mkdir(exist_ok=True)
    t0 = time.monotonic()
    parts: list[Path] = []
    worst = 0
    times: dict[str, object] = {"stages": {}, "streams": {}, "cpu_busy": {}}
    box = box_build()
    for stage, streams, env in STAGES:
        ts = time.monotonic()
        busy0, total0 = cpu_ticks()
        print(f"pytest_ci: stage {stage}: " + "; ".join(f"[{n}] {' '.join(Path(t).stem for t in ts_)}"
                                                     for n, ts_ in streams.items()), flush=True)
        if stage == "2":
            rc = prebuild(box)
            if rc:
                return rc
        procs = {}
        starts = {}
        for name, targets in streams.items():
            junit = ART / f"junit-{stage}-{name}.xml"
            parts.append(junit)
            starts[name] = time.monotonic()
            procs[name] = pytest(name, targets, junit, env)
        for name, p in procs.items():
            rc = finish(p)
            worst = max(worst, rc)
            times["streams"][f"{stage}/{name}"] = round(time.monotonic() - starts[name])  # type: ignore[index]
            print(f"pytest_ci: stage {stage} [{name}] exit {rc} after {time.monotonic() - starts[name]:.0f}s",
                  flush=True)
        times["stages"][stage] = round(time.monotonic() - ts)  # type: ignore[index]
        busy1, total1 = cpu_ticks()
        times["cpu_busy"][stage] = round((busy1 - busy0) / max(1, total1 - total0), 2)  # type: ignore[index]
    merge(parts, ART / "junit.xml")
    times["total"] = round(time.monotonic() - t0)
    times["modules"] = module_seconds(parts)
    (ART / "ci-times.json").write_text(json.dumps(times, indent=2))
    print(f"pytest_ci: stages {times['stages']} (CPU busy {times['cpu_busy']}); total {times['total']}s; exit {worst}; "
          f"JUnit: {ART / 'junit.xml'}; times: {ART / 'ci-times.json'}", flush=True)
    return worst


if __name__ == "__main__":
    sys.exit(main())

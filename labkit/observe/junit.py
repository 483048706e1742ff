"""``labkit test --junit FILE``: one test case per step (up, prepare, converge, idempotence,
verify), each with its time and, when it failed, the failure's message (step, host and task),
then verify's own suites (the facts, the user's tests). Written whatever happened: a pipeline
always has its artifact, also when the lab file was bad or a step before verify failed."""
from __future__ import annotations

import contextlib
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from labkit.errors import LabkitError, PlaybookFailed

STEPS = ("up", "prepare", "converge", "idempotence", "verify")
SUITE = "labkit-test"


@dataclass
class Step:
    """One step of ``labkit test``: passed, failed (the step's own verdict), error (an
    interruption, or labkit's own bug), or skipped (not run, or nothing to do), and why."""

    name: str
    outcome: str = "skipped"
    seconds: float = 0.0
    message: str = ""  # one line: what failed, where (host and task)
    detail: str = ""   # everything: each failure, the hint, where the artifacts are


def failure_text(e: BaseException) -> tuple[str, str]:
    """(message, detail) of an error: a failed playbook names its first failed host and task in
    the message and every one in the detail; any other error its first line, then the rest."""
    if isinstance(e, LabkitError):
        lines = [ln.strip() for ln in e.message.splitlines() if ln.strip()]
        head = lines[0] if lines else type(e).__name__
        fails = getattr(e, "failures", []) if isinstance(e, PlaybookFailed) else []
        if fails:
            more = f" (and {len(fails) - 1} more)" if len(fails) > 1 else ""
            message = f"{fails[0]}{more}"
        elif len(lines) > 1:  # a one-line summary and what it is about (idempotence: host and task)
            message = f"{head} {lines[1]}"
        else:
            message = head
        detail = e.message + (f"\nhint: {e.hint}" if e.hint else "")
        return message, detail
    if isinstance(e, KeyboardInterrupt):
        return "interrupted (Ctrl-C or SIGTERM)", "interrupted: the step did not finish"
    return f"internal error: {type(e).__name__}: {e}", f"{type(e).__name__}: {e}"


class StepLog:
    """The steps of one ``labkit test`` run, in order; every step starts as skipped ("not run")."""

    def __init__(self) -> None:
        self.steps = {n: Step(n, "skipped", message="not run: an earlier step failed") for n in STEPS}
        self.current = STEPS[0]

    def __getitem__(self, name: str) -> Step:
        return self.steps[name]

    def passed(self, name: str, seconds: float) -> None:
        self.steps[name] = Step(name, "passed", max(0.0, seconds))

    def skipped(self, name: str, why: str) -> None:
        self.steps[name] = Step(name, "skipped", message=why)

    def failed(self, name: str, e: BaseException, seconds: float = 0.0) -> None:
        message, detail = failure_text(e)
        outcome = "failed" if isinstance(e, LabkitError) else "error"
        self.steps[name] = Step(name, outcome, max(0.0, seconds), f"{name}: {message}", detail)

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        """Time the block as step ``name``: passed when it ends, failed (and re-raised) when it
        raises."""
        self.current = name
        t0 = time.monotonic()
        try:
            yield
        except BaseException as e:
            self.failed(name, e, time.monotonic() - t0)
            raise
        self.passed(name, time.monotonic() - t0)


def write(dest: str | Path, lab: str, steps: Iterable[Step], more: Iterable[Path] = ()) -> Path:
    """One JUnit file: the suite ``labkit-test`` (one case per step), then the suites of the
    JUnit files ``more`` (verify's facts and the user's tests), each as it was."""
    cases = list(steps)
    root = ET.Element("testsuites")
    suite = ET.SubElement(root, "testsuite", {
        "name": SUITE, "tests": str(len(cases)),
        "failures": str(sum(c.outcome == "failed" for c in cases)),
        "errors": str(sum(c.outcome == "error" for c in cases)),
        "skipped": str(sum(c.outcome == "skipped" for c in cases)),
        "time": f"{sum(c.seconds for c in cases):.3f}",
    })
    ET.SubElement(ET.SubElement(suite, "properties"), "property", {"name": "lab", "value": lab})
    for c in cases:
        case = ET.SubElement(suite, "testcase", {"classname": f"{SUITE}.{lab}", "name": c.name,
                                                 "time": f"{c.seconds:.3f}"})
        if c.outcome in ("failed", "error"):
            el = ET.SubElement(case, "failure" if c.outcome == "failed" else "error",
                               {"message": c.message, "type": c.outcome})
            el.text = c.detail
        elif c.outcome == "skipped":
            ET.SubElement(case, "skipped", {"message": c.message})
    for f in more:
        try:
            other = ET.parse(f).getroot()
        except (OSError, ET.ParseError):
            continue
        root.extend(other.iter("testsuite") if other.tag == "testsuites" else [other])
    out = Path(dest)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    ET.ElementTree(root).write(tmp, encoding="utf-8", xml_declaration=True)
    tmp.replace(out)  # whole or not at all: a reader never sees half a file
    return out

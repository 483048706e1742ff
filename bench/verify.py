"""(j) Your tests on a lab with a VM: plain pytest + testinfra over `labkit inventory --path`
against `labkit verify --tests` and `labkit grade`, in one run.

The lab is examples/webclass (a Debian 12 and a Debian 13 container, BusyBox and the VM, the
webserver role converged; its tests: 8 per host with Python and one for the lab, 25 cases). It
is brought up once (not measured). Then, alternated, ``REPS`` times each:

- raw: ``pytest tests --hosts=ansible://python --ansible-inventory=$(labkit inventory --path)``,
  what a user of testinfra runs by hand: testinfra's ssh backend logs in for every command;
- ``labkit verify --fact K1 --tests tests``: the same tests (and one fact, K1, on every host),
  through one shared SSH connection per VM (labkit.vm.sshmux);
- ``labkit grade``: the same tests as grading runs them (the lab file's ``tests:``).

Each run's logins to the VM are counted from its sshd's journal.

    .venv/bin/python bench/verify.py      # results in bench/results/verify-<time>.json
"""
from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from run import ENV, LABKIT, RESULTS, machine, sh  # noqa: E402

WEBCLASS = ROOT / "examples" / "webclass"
LAB = "webclass"
REPS = 3
PYTEST = str(Path(sys.executable).parent / "pytest")


def logins() -> int:
    p = sh([LABKIT, "shell", "--lab", LAB, "--root", "vm", "--", "sh", "-c",
            "journalctl -t sshd --no-pager -o cat | grep -c 'Accepted publickey'"])
    return int(p.stdout.split()[-1])


def one(cmd: list[str], **kw: object) -> dict:
    before = logins()
    t0 = time.monotonic()
    p = sh(cmd, check=False, **kw)
    secs = time.monotonic() - t0
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} exited {p.returncode}:\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
    return {"seconds": round(secs, 2), "vm_logins": logins() - before - 1}  # the second count's own


def main() -> None:
    res: dict = {"machine": machine(), "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"verify-{time.strftime('%Y%m%d-%H%M%S')}.json"
    lab = str(WEBCLASS / "lab.yml")
    sh([LABKIT, "down", "--lab", LAB, "-q"], check=False)
    sh([LABKIT, "up", "-f", lab, "--no-facts"])
    try:
        inv = sh([LABKIT, "inventory", "--lab", LAB, "--path"]).stdout.strip()
        env = dict(ENV, ANSIBLE_HOST_KEY_CHECKING="False")
        runs: dict[str, list[dict]] = {"raw_testinfra": [], "labkit_verify_tests": [], "labkit_grade": []}
        for _ in range(REPS):
            runs["raw_testinfra"].append(one(
                [PYTEST, "tests", "--hosts=ansible://python", f"--ansible-inventory={inv}", "-q",
                 "-p", "no:cacheprovider"], cwd=WEBCLASS, env=env))
            runs["labkit_verify_tests"].append(one(
                [LABKIT, "verify", "--lab", LAB, "--fact", "K1", "--tests", str(WEBCLASS / "tests")]))
            runs["labkit_grade"].append(one([LABKIT, "grade", "--lab", LAB]))
        med = {k: statistics.median(r["seconds"] for r in v) for k, v in runs.items()}
        res["j_tests"] = {
            "runs": runs, "median_seconds": med,
            "ratio_verify_vs_raw": round(med["labkit_verify_tests"] / med["raw_testinfra"], 2),
            "ratio_grade_vs_raw": round(med["labkit_grade"] / med["raw_testinfra"], 2)}
    finally:
        sh([LABKIT, "down", "--lab", LAB, "-q"], check=False)
    res["ended"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    out.write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res["j_tests"], indent=2))
    print(f"results: {out}")


if __name__ == "__main__":
    main()

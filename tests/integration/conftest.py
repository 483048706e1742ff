"""Shared, session-scoped labs on the real engines: each lab is brought up once per run."""
import json
import re
import subprocess
import time

import pytest

from tests.conftest import labkit_cmd


def run(*args, check=True, timeout=1800, env=None):
    """Run the real `labkit` console script; return the CompletedProcess."""
    p = subprocess.run(labkit_cmd() + list(args), capture_output=True, text=True, timeout=timeout, env=env)
    if check and p.returncode != 0:
        raise AssertionError(f"labkit {' '.join(args)} exited {p.returncode}\n{p.stdout}\n{p.stderr}")
    return p


def docker(*args) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=True).stdout


def recap(stdout: str) -> dict:
    m = re.search(r"^recap: (.*?)\s+\(", stdout, re.M)
    assert m, stdout
    return {k: int(v) for k, v in (kv.split("=") for kv in m.group(1).split())}


@pytest.fixture(scope="session")
def default_lab():
    """The README's main job: the built-in default lab, brought up once for the whole run."""
    run("images", "build", "debian:11", "debian:12", "debian:13", "busybox")
    run("down", check=False)
    t0 = time.monotonic()
    first = run("up")
    info = {"first": first, "first_seconds": time.monotonic() - t0}
    yield info
    run("down", check=False)


@pytest.fixture(scope="session")
def default_facts(default_lab):
    return json.loads(run("facts", "--json").stdout)

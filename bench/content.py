"""(i) Lesson content at classroom scale (issue 31's table), beside plain ansible-playbook.

At each size N (students x one Debian 12 container, examples/webclass's prepare + webserver role,
no VM), in one run:

- labkit: ``up`` from nothing with the content (the content cache on: one host converged and
  committed, the others started from the lab image and given the content as its idempotence
  pass); ``up`` again with nothing changed (the no-op); ``up --full`` (every step runs again,
  nothing to change); ``up --no-content-cache`` from nothing (where no cache applies: every host
  converged from the base image), with its content step (prepare + converge) timed apart;
- plain Ansible: the same containers brought up bare by labkit (no content), then
  ``ansible-playbook prepare.yml site.yml`` over ``labkit inventory --path`` with pipelining on
  and labkit's forks (20), first converge and a second run with nothing to change.

The ratio that compares like with like is labkit's content step without the cache over plain
ansible-playbook's first converge (both converge every host from the base image).

    .venv/bin/python bench/content.py [N,N,...][,vm]  # default 1,10,40,vm; results in bench/results/content-<time>.json

``vm``: one student with a container and the VM (labkit's first `up` with the content against
plain ansible-playbook over the same lab brought up bare). At each size, plain ansible-playbook
also runs a third time with Mitogen's strategy (as labkit runs content), nothing to change.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

from run import ENV, LABKIT, RESULTS, machine, sh  # noqa: E402

from labkit.ansible.mitogen import env as mitogen_env  # noqa: E402

WEBCLASS = ROOT / "examples" / "webclass"
ANSIBLE_PLAYBOOK = str(Path(sys.executable).parent / "ansible-playbook")
FORKS = 20  # labkit.ansible.runner.run_playbook's
NAME = "bench-content"


def lab_files(d: Path, n: int, vm: bool = False) -> tuple[Path, Path]:
    """The lab with its content, and the same lab bare (labkit's own provisioning only)."""
    for part in ("prepare.yml", "site.yml"):
        shutil.copy(WEBCLASS / part, d / part)
    shutil.copytree(WEBCLASS / "roles", d / "roles", dirs_exist_ok=True)
    base = {"name": NAME, "students": n, "containers": ["debian:12"],
            "vm": {"enabled": True, "memory": 512} if vm else {"enabled": False}}
    content = {**base, "provision": {
        "packages": [], "prepare": ["prepare.yml"], "playbooks": ["site.yml"],
        "group_vars": {"python": {"webserver_lesson": "Lesson 3: one kernel, many distros"}}}}
    bare = {**base, "provision": {"packages": []}}
    (d / "content.yml").write_text(json.dumps(content))
    (d / "bare.yml").write_text(json.dumps(bare))
    return d / "content.yml", d / "bare.yml"


def labkit_up(*args: str) -> dict:
    """One `labkit up`: its wall time and, from its recap, the seconds of each step."""
    t0 = time.monotonic()
    p = sh([LABKIT, "up", "--no-facts", *args])
    out = {"seconds": round(time.monotonic() - t0, 1)}
    for key, pat in (("labkit_playbook", r"^recap: .*\(([\d.]+)s\)"), ("prepare", r"^prepare recap: .*\(([\d.]+)s\)"),
                     ("content", r"^your content recap: .*\(([\d.]+)s\)"),
                     ("lab_images", r"^content cache: \d+ lab image\(s\) in (\d+)s")):
        m = re.search(pat, p.stdout + p.stderr, re.M)
        if m:
            out[f"{key}_seconds"] = float(m.group(1))
    if "up to date" in p.stdout:
        out["no_op"] = True
    changed = re.search(r"^your content recap: .*changed=(\d+)", p.stdout, re.M)
    if changed:
        out["content_changed"] = int(changed.group(1))
    return out


def plain(inventory: str, d: Path, mitogen: bool = False) -> dict:
    """Plain ansible-playbook of prepare + site over labkit's inventory (pipelining on, FORKS);
    ``mitogen``: with Mitogen's strategy and its docker connection, as labkit runs content."""
    env = dict(ENV, ANSIBLE_PIPELINING="True", ANSIBLE_ROLES_PATH=str(d / "roles"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_HOST_KEY_CHECKING="False")
    extra: list[str] = []
    if mitogen:
        env.update(mitogen_env())
        extra = ["-e", "ansible_connection=docker"]  # containers only (one_size's labs)
    t0 = time.monotonic()
    p = subprocess.run([ANSIBLE_PLAYBOOK, "-i", inventory, "-f", str(FORKS), "-l", "python", *extra,
                        str(d / "prepare.yml"), str(d / "site.yml")], capture_output=True, text=True, env=env, cwd=d)
    secs = time.monotonic() - t0
    if p.returncode != 0:
        raise SystemExit(f"plain ansible-playbook failed:\n{p.stdout[-3000:]}\n{p.stderr[-2000:]}")
    changed = sum(int(x) for x in re.findall(r"changed=(\d+)", p.stdout))
    return {"seconds": round(secs, 1), "changed": changed}


def bare_then_plain(d: Path, bare: Path, r: dict) -> str:
    """The same lab brought up bare by labkit, then plain ansible-playbook's first converge and
    second run over its inventory (into ``r``); the inventory's path."""
    r["labkit_bare_up"] = labkit_up("-f", str(bare))
    inv = sh([LABKIT, "inventory", "--lab", NAME, "--path"]).stdout.strip()
    r["plain_first_converge"] = plain(inv, d)
    r["plain_second_run"] = plain(inv, d)
    return inv


def content_step(up: dict) -> float:
    """labkit's content step in one `up`: prepare and the converge."""
    return round(up.get("prepare_seconds", 0.0) + up.get("content_seconds", 0.0), 1)


def one_size(d: Path, n: int) -> dict:
    content, bare = lab_files(d, n)
    r: dict = {"students": n}
    sh([LABKIT, "down", "--lab", NAME, "-q"], check=False)
    try:
        r["labkit_first_up"] = labkit_up("-f", str(content))
        r["labkit_rerun_nothing_changed"] = labkit_up("-f", str(content))
        r["labkit_up_full"] = labkit_up("-f", str(content), "--full")
        sh([LABKIT, "down", "--lab", NAME, "-q"])
        r["labkit_first_up_no_cache"] = labkit_up("-f", str(content), "--no-content-cache")
        sh([LABKIT, "down", "--lab", NAME, "-q"])
        inv = bare_then_plain(d, bare, r)
        r["plain_mitogen_third_run"] = plain(inv, d, mitogen=True)
    finally:
        sh([LABKIT, "down", "--lab", NAME, "-q"], check=False)
    step = content_step(r["labkit_first_up_no_cache"])
    r["labkit_content_step_no_cache_seconds"] = step
    r["ratio_content_step_vs_plain_first"] = round(step / r["plain_first_converge"]["seconds"], 2)
    r["ratio_first_up_vs_plain_first"] = round(r["labkit_first_up"]["seconds"] / r["plain_first_converge"]["seconds"], 2)
    r["ratio_rerun_vs_plain_second"] = round(r["labkit_rerun_nothing_changed"]["seconds"]
                                             / r["plain_second_run"]["seconds"], 3)
    return r


def with_vm(d: Path) -> dict:
    """One student with a Debian 12 container and the VM: labkit's first `up` with the content
    (no cache applies to a VM), against plain ansible-playbook over the same lab brought up bare."""
    content, bare = lab_files(d, 1, vm=True)
    r: dict = {"students": 1, "vm": True}
    sh([LABKIT, "down", "--lab", NAME, "-q"], check=False)
    try:
        r["labkit_first_up"] = labkit_up("-f", str(content))
        r["labkit_rerun_nothing_changed"] = labkit_up("-f", str(content))
        sh([LABKIT, "down", "--lab", NAME, "-q"])
        bare_then_plain(d, bare, r)
    finally:
        sh([LABKIT, "down", "--lab", NAME, "-q"], check=False)
    step = content_step(r["labkit_first_up"])
    r["labkit_content_step_seconds"] = step
    r["ratio_content_step_vs_plain_first"] = round(step / r["plain_first_converge"]["seconds"], 2)
    return r


def main() -> None:
    args = (sys.argv[1] if len(sys.argv) > 1 else "1,10,40,vm").split(",")
    sizes = [int(x) for x in args if x != "vm"]
    res: dict = {"machine": machine(), "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                 "i_content": []}
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"content-{time.strftime('%Y%m%d-%H%M%S')}.json"
    for n in sizes:
        with tempfile.TemporaryDirectory(prefix="labkit-bench-content-") as tmp:
            res["i_content"].append(one_size(Path(tmp), n))
        out.write_text(json.dumps(res, indent=2) + "\n")  # kept after each size
        print(json.dumps(res["i_content"][-1], indent=2), flush=True)
    if "vm" in args:
        with tempfile.TemporaryDirectory(prefix="labkit-bench-content-") as tmp:
            res["i_content"].append(with_vm(Path(tmp)))
        out.write_text(json.dumps(res, indent=2) + "\n")
        print(json.dumps(res["i_content"][-1], indent=2), flush=True)
    print(f"results: {out}")


if __name__ == "__main__":
    main()

"""(h) The instructor's tools during a class, each beside the raw operation it stands for.

- grade: `labkit grade` of N (40) students x one Debian 12 container with examples/webclass's
  content and tests, beside one plain `pytest --hosts=ansible://python` of the same tests over
  labkit's inventory (every host in one process; labkit runs one pytest per student, 4 at a time);
- reset: `labkit reset` of a student's container, beside `docker rm -f` + `docker run` of the
  same image (and + `ansible-playbook` of the lab's content on that host); of the VM, beside
  `vagrant destroy -f` + `vagrant up` of a plain Vagrantfile of the same box;
- checkpoint: `labkit checkpoint save` / `restore` of a student's container and VM, beside
  `docker commit` + `virsh snapshot-create-as`, and `docker rm -f` + `docker run` of the
  committed image + `virsh snapshot-revert` (+ the content's converge, which a restore runs).

    .venv/bin/python bench/classroom.py [N [reset,grade]]   # alone (prints JSON); run.py --only h
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

from run import ENV, LABKIT, raw_vagrantfile, sh, stats, timed  # noqa: E402

WEBCLASS = ROOT / "examples" / "webclass"
SITE = """\
- name: The lesson's content
  hosts: python
  tasks:
    - name: The lesson's file
      ansible.builtin.copy: {content: "lesson\\n", dest: /srv/lesson.txt, mode: "0644"}
"""
ANSIBLE_PLAYBOOK = str(Path(sys.executable).parent / "ansible-playbook")


def inventory(lab: Path) -> str:
    return sh([LABKIT, "inventory", "-f", str(lab), "--path"]).stdout.strip()


def bench_grade(d: Path, n: int, out: dict) -> None:
    lab = d / "bench-grade.yml"
    shutil.copytree(WEBCLASS / "roles", d / "roles", dirs_exist_ok=True)
    shutil.copytree(WEBCLASS / "tests", d / "tests", dirs_exist_ok=True)
    shutil.copy(WEBCLASS / "site.yml", d / "site.yml")
    shutil.copy(WEBCLASS / "prepare.yml", d / "prepare.yml")
    lab.write_text(json.dumps({
        "name": "bench-grade", "students": n, "containers": ["debian:12"], "vm": {"enabled": False},
        "provision": {"packages": [], "prepare": ["prepare.yml"], "playbooks": ["site.yml"],
                      "group_vars": {"python": {"webserver_lesson": "Lesson 3: one kernel, many distros"}}},
        "tests": ["tests"]}))
    sh([LABKIT, "down", "-f", str(lab)], check=False)
    try:
        out["labkit_up_with_content_seconds"] = round(timed([LABKIT, "up", "-f", str(lab), "--no-facts"]), 1)
        t0 = time.monotonic()
        g = subprocess.run([LABKIT, "grade", "-f", str(lab), "--json"], capture_output=True, text=True, env=ENV)
        labkit_s = time.monotonic() - t0
        grades = json.loads(g.stdout) if g.stdout.strip().startswith(("[", "{")) else {}
        t0 = time.monotonic()
        raw = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(d / "tests"),
                              "--hosts=ansible://python", f"--ansible-inventory={inventory(lab)}"],
                             capture_output=True, text=True, env=ENV, cwd=d)
        raw_s = time.monotonic() - t0
        rows = grades.get("students", grades) if isinstance(grades, dict) else grades
        out["grade"] = {"students": n, "labkit_grade_seconds": round(labkit_s, 1), "labkit_exit": g.returncode,
                        "students_graded": len(rows) if isinstance(rows, list) else None,
                        "raw_pytest_seconds": round(raw_s, 1), "raw_exit": raw.returncode,
                        "raw_summary": (raw.stdout.strip().splitlines() or [""])[-1],
                        "ratio": round(labkit_s / raw_s, 2)}
    finally:
        sh([LABKIT, "down", "-f", str(lab)], check=False)


def raw_content(container: str, d: Path) -> list[str]:
    """Plain ansible-playbook of the lab's content on one container, by Docker's connection."""
    return [ANSIBLE_PLAYBOOK, "-i", f"{container},", "-c", "community.docker.docker",
            "-e", "ansible_python_interpreter=/usr/bin/python3",
            str(d / "site-raw.yml")]


def virsh(*args: str) -> float:
    return timed(["virsh", "-q", "-c", "qemu:///system", *args])


def bench_reset_checkpoint(d: Path, reps: int, out: dict) -> None:
    lab = d / "bench-cls.yml"
    (d / "site-cls.yml").write_text(SITE)
    (d / "site-raw.yml").write_text(SITE.replace("hosts: python", "hosts: all"))
    lab.write_text(json.dumps({"name": "bench-cls", "students": ["s01"], "containers": ["debian:12"],
                               "vm": {"enabled": True, "memory": 512},
                               "provision": {"playbooks": ["site-cls.yml"]}}))
    ct, vm = "labkit-bench-cls-s01-debian12", "labkit-bench-cls-s01-vm"
    sh([LABKIT, "down", "-f", str(lab)], check=False)
    try:
        sh([LABKIT, "up", "-f", str(lab), "--no-facts"])
        image = sh(["docker", "inspect", "-f", "{{.Config.Image}}", ct]).stdout.strip()

        # a container: labkit reset vs docker rm + run (+ the content)
        lab_s, raw_s, raw_content_s = [], [], []
        for _ in range(reps):
            lab_s.append(timed([LABKIT, "reset", "-f", str(lab), "--student", "s01", "debian12", "--yes"]))
            raw_s.append(timed(["docker", "rm", "-f", "bench-raw-ct"], check=False)
                         + timed(["docker", "run", "-d", "--name", "bench-raw-ct", "--network", "none", image,
                                  "sleep", "infinity"]))
            raw_content_s.append(timed(["docker", "rm", "-f", "bench-raw-ct"]) + timed(
                ["docker", "run", "-d", "--name", "bench-raw-ct", "--network", "none", image, "sleep", "infinity"])
                + timed(raw_content("bench-raw-ct", d)))
        sh(["docker", "rm", "-f", "bench-raw-ct"], check=False)
        out["reset_container"] = {
            "labkit_reset": stats(lab_s), "raw_docker_rm_run": stats(raw_s),
            "raw_docker_rm_run_plus_content": stats(raw_content_s),
            "ratio_to_rm_run": round(stats(lab_s)["median"] / stats(raw_s)["median"], 2),
            "ratio_to_rm_run_plus_content": round(stats(lab_s)["median"] / stats(raw_content_s)["median"], 2)}

        # checkpoints: save and restore of the container and the VM together
        sh([LABKIT, "shell", "-f", str(lab), "debian12", "--", "sh", "-c", "echo mine > ~/work.txt"])
        save_s = timed([LABKIT, "checkpoint", "save", "-f", str(lab), "--student", "s01", "b1"])
        raw_commit = timed(["docker", "commit", ct, "bench-raw-commit:b1"])
        raw_snap = virsh("snapshot-create-as", vm, "bench-raw-b1", "--atomic")
        restore_s = timed([LABKIT, "checkpoint", "restore", "-f", str(lab), "--student", "s01", "b1", "--yes"])
        raw_run = timed(["docker", "rm", "-f", "bench-raw-ct2"], check=False) + timed(
            ["docker", "run", "-d", "--name", "bench-raw-ct2", "--network", "none", "bench-raw-commit:b1",
             "sleep", "infinity"])
        raw_revert = virsh("snapshot-revert", vm, "bench-raw-b1", "--running")
        raw_converge = timed(raw_content("bench-raw-ct2", d))
        virsh("snapshot-delete", vm, "bench-raw-b1")
        sh(["docker", "rm", "-f", "bench-raw-ct2"], check=False)
        sh(["docker", "rmi", "bench-raw-commit:b1"], check=False)
        out["checkpoint"] = {
            "labkit_save_seconds": round(save_s, 2), "raw_docker_commit_seconds": round(raw_commit, 2),
            "raw_virsh_snapshot_seconds": round(raw_snap, 2),
            "save_ratio": round(save_s / (raw_commit + raw_snap), 2),
            "labkit_restore_seconds": round(restore_s, 2), "raw_docker_rm_run_seconds": round(raw_run, 2),
            "raw_virsh_revert_seconds": round(raw_revert, 2), "raw_content_converge_seconds": round(raw_converge, 2),
            "restore_ratio_to_raw_plus_converge": round(restore_s / (raw_run + raw_revert + raw_converge), 2),
            "note": "a restore runs the lab's content again (daemons start); the raw side adds one "
                    "ansible-playbook run of the same content on the raw container"}

        # the VM: labkit reset vs vagrant destroy + up of a plain Vagrantfile of the same box
        work = d / "raw-vagrant"
        venv = raw_vagrantfile(work)
        sh(["vagrant", "up"], cwd=work, env=venv)
        raw_vm = timed(["vagrant", "destroy", "-f"], cwd=work, env=venv) + timed(["vagrant", "up"], cwd=work, env=venv)
        sh(["vagrant", "destroy", "-f"], cwd=work, env=venv)
        lab_vm = timed([LABKIT, "reset", "-f", str(lab), "--student", "s01", "vm", "--yes"])
        out["reset_vm"] = {"labkit_reset_seconds": round(lab_vm, 1), "raw_vagrant_destroy_up_seconds": round(raw_vm, 1),
                           "ratio": round(lab_vm / raw_vm, 2),
                           "note": "labkit also provisions the VM (student_env) and runs the lab's content on it"}
    finally:
        sh([LABKIT, "down", "-f", str(lab)], check=False)


def bench_classroom(d: Path, res: dict, n: int = 40, reps: int = 3, parts: tuple[str, ...] = ("reset", "grade")) -> None:
    """(h): reset and checkpoints of one student (container and VM), then grading n students."""
    out: dict = {}
    res["h_classroom"] = out
    if "reset" in parts:
        bench_reset_checkpoint(d, reps, out)
    if "grade" in parts:
        bench_grade(d, n, out)


if __name__ == "__main__":
    import tempfile

    r: dict = {}
    with tempfile.TemporaryDirectory(prefix="labkit-bench-") as tmp:
        bench_classroom(Path(tmp), r, int(sys.argv[1]) if len(sys.argv) > 1 else 40,
                        parts=tuple(sys.argv[2].split(",")) if len(sys.argv) > 2 else ("reset", "grade"))
    print(json.dumps(r, indent=2))
